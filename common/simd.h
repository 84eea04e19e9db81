/*
 * simd.h: SR_CLONES builds a hot loop for several x86-64 levels (AVX-512,
 * AVX2, baseline) and picks one at load time, so one portable binary runs
 * its element-wise loops at the width of the machine it lands on.
 * Floating-point contraction stays off (ISO C mode), so every clone gives
 * bit-identical results.
 */
#ifndef SPOTRUN_SIMD_H
#define SPOTRUN_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(SPOTRUN_NO_CLONES)
#define SR_CLONES __attribute__((target_clones("arch=x86-64-v4", \
                                               "arch=x86-64-v3", "default")))
#else
#define SR_CLONES
#endif

#endif
