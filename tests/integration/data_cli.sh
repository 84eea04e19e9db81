# data_cli.sh: `spotrun data ls/verify/make` on real Fashion-MNIST shards;
# the numpy recipe of docs/formats.md reads a shard back bit for bit; a
# flipped byte is caught and named with its object and offset.
source "$(dirname "$0")/lib.sh"

"$SPOTRUN" data ls "$FM/train" >"$WORK/ls.txt"
grep -qE '^total +60000 ' "$WORK/ls.txt" || fail "ls total: $(cat "$WORK/ls.txt")"
grep -q 'x uint8\[28,28\] y uint8\[\] (10 classes)' "$WORK/ls.txt" ||
    fail "ls schema line"
pass "data ls lists 60000 records and the schema"

"$SPOTRUN" data verify "$FM/test" >"$WORK/verify.txt"
grep -q '^verified .* 10000 records' "$WORK/verify.txt" || fail "verify ok"
pass "data verify accepts an intact dataset"

# numpy recipe from docs/formats.md against the Debian package's IDX files
"$PY" - "$FM/train" <<'PY'
import gzip, json, sys, zlib
import numpy as np
root = sys.argv[1]
index = json.load(open(f"{root}/index.json"))
raw = open(f"{root}/{index['shards'][0]['name']}", "rb").read()
hdr = np.frombuffer(raw, count=1, dtype=[
    ("magic", "S8"), ("version", "<u4"), ("meta_len", "<u4"),
    ("nrec", "<u8"), ("index_off", "<u8"), ("data_off", "<u8"),
    ("data_len", "<u8"), ("meta_index_crc", "<u4"), ("flags", "<u4"),
    ("reserved", "<u4"), ("header_crc", "<u4")])[0]
assert hdr["magic"] == b"SPOTSHRD"
assert zlib.crc32(raw[:60]) == hdr["header_crc"]
assert zlib.crc32(raw[64:hdr["data_off"]]) == hdr["meta_index_crc"]
meta = json.loads(raw[64:64 + hdr["meta_len"]])
idx = np.frombuffer(raw, count=hdr["nrec"], offset=hdr["index_off"],
                    dtype=[("off", "<u8"), ("len", "<u4"), ("crc", "<u4")])
rec = np.dtype([(f["name"], np.dtype(f["dtype"]).newbyteorder("<"),
                 tuple(f["shape"])) for f in meta["fields"]])
r = np.frombuffer(raw, dtype=rec, count=hdr["nrec"], offset=hdr["data_off"])
i = 12345
b = raw[hdr["data_off"] + idx["off"][i]:][:idx["len"][i]]
assert zlib.crc32(b) == idx["crc"][i]
d = "/usr/share/datasets/fashion-mnist"
imgs = np.frombuffer(gzip.open(f"{d}/train-images-idx3-ubyte.gz").read()[16:],
                     np.uint8).reshape(-1, 28, 28)
labels = np.frombuffer(gzip.open(f"{d}/train-labels-idx1-ubyte.gz").read()[8:],
                       np.uint8)
assert np.array_equal(r["x"], imgs) and np.array_equal(r["y"], labels)
print("numpy read", len(r), "records identical to the IDX source")
PY
pass "numpy reads the shard as documented, identical to the source"

cp -r "$FM/test" "$WORK/bad"
shard="$WORK/bad/shard-000000.srs"
size=$(stat -c %s "$shard")
off=$((size - 1000))
flip_byte "$shard" "$off"
set +e
"$SPOTRUN" data verify "$WORK/bad" >"$WORK/v.out" 2>"$WORK/v.err"
rc=$?
set -e
[[ $rc -eq 2 ]] || fail "verify of a corrupt shard exited $rc, expected 2"
grep -q 'FAILED  shard-000000.srs: .*record [0-9]* at byte [0-9]*: checksum mismatch' \
    "$WORK/v.out" || fail "verify output: $(cat "$WORK/v.out")"
grep -q '1 of 1 shard(s) failed verification' "$WORK/v.err" ||
    fail "verify error line: $(cat "$WORK/v.err")"
pass "a flipped byte fails verify (exit 2) naming shard, record and offset"

"$SPOTRUN" data make --from idx \
    --x /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
    --y /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz \
    --scale 0.00392156862745098 --shard-size 1MiB --out "$WORK/made"
"$SPOTRUN" data verify "$WORK/made" >"$WORK/made.txt"
n=$(grep -c '^ok ' "$WORK/made.txt")
[[ $n -ge 7 ]] || fail "1 MiB shards of 7.5 MiB: got $n shards"
grep -q '10000 records' "$WORK/made.txt" || fail "made record count"
pass "data make cuts $n shards of at most 1 MiB"

# --help after a subcommand prints its usage; an option where the URI
# belongs is a usage error, not a dataset or checkpoint by that name
for cmd in "data ls" "data verify" "data stream" "ckpt ls" "ckpt show" \
           "ckpt verify"; do
    # shellcheck disable=SC2086
    "$SPOTRUN" $cmd --help >"$WORK/h.out" 2>&1 ||
        fail "$cmd --help: exit $?: $(cat "$WORK/h.out")"
    grep -q "^usage:" "$WORK/h.out" || fail "$cmd --help: $(cat "$WORK/h.out")"
    set +e
    # shellcheck disable=SC2086
    "$SPOTRUN" $cmd --step >"$WORK/b.out" 2>"$WORK/b.err"
    rc=$?
    set -e
    [[ $rc -eq 2 ]] || fail "$cmd --step: exit $rc: $(cat "$WORK/b.err")"
    grep -q "^spotrun: error: ${cmd}: '--step' is not a .* URI; the URI comes first" \
        "$WORK/b.err" || fail "$cmd --step: $(cat "$WORK/b.err")"
    [[ ! -s $WORK/b.out ]] || fail "$cmd --step printed: $(cat "$WORK/b.out")"
done
pass "--help after a data or ckpt command prints usage; an option in the URI's place exits 2"
