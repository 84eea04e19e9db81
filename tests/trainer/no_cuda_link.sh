# no_cuda_link.sh: the spotrun binary has no link-time dependency on CUDA,
# cuBLAS or NCCL (they belong to the plugin, opened at run time), so it
# starts on hosts without them.
set -euo pipefail
: "${SPOTRUN:?SPOTRUN must point at the spotrun binary}"
needed=$(readelf -d "$SPOTRUN" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p')
echo "spotrun needs: $(echo $needed)"
if grep -E '^lib(cuda|cudart|cublas|cublasLt|nccl|nvrtc)\.' <<<"$needed"; then
    echo "FAIL: spotrun links a CUDA library" >&2
    exit 1
fi
if ldd "$SPOTRUN" | grep -E 'lib(cuda|cudart|cublas|cublasLt|nccl)\.so'; then
    echo "FAIL: a CUDA library is loaded with spotrun" >&2
    exit 1
fi
echo "PASS: no CUDA, cuBLAS or NCCL library among spotrun's dependencies"
