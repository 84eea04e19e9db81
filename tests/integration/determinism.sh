# determinism.sh: the same seed and world size give bit-identical final
# parameters run after run (across an epoch boundary); another seed does
# not.
source "$(dirname "$0")/lib.sh"

run() {
    mpi 2 train --data "$FM/train" --max-steps 300 --progress off "$@" \
        2>>"$WORK/err.txt"
}
run >"$WORK/a.txt" || fail "run a: $(tail -n 3 "$WORK/err.txt")"
run >"$WORK/b.txt" || fail "run b"
run --seed 7 >"$WORK/c.txt" || fail "run c"
a=$(digest "$WORK/a.txt")
b=$(digest "$WORK/b.txt")
c=$(digest "$WORK/c.txt")
[[ -n $a && $a == "$b" ]] || fail "same seed, different parameters: $a $b"
[[ $a != "$c" ]] || fail "a different seed gave the same parameters"
pass "2 ranks, 300 steps, twice: params_sha256=$a both times"
