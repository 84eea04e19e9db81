# fixture_data.sh: import Fashion-MNIST once for the integration tests.
source "$(dirname "$0")/lib.sh"
rm -rf "$FM"
"$SPOTRUN" data import fashion-mnist --out "$FM"
[[ -f $FM/train/index.json && -f $FM/test/index.json ]] ||
    fail "import did not write both splits"
pass "imported Fashion-MNIST into $FM"
