# fixture_data.sh: import Fashion-MNIST for the integration tests. The
# import goes to a scratch directory that then replaces $FM in one rename,
# so tests of another ctest run reading $FM never see it half-written.
source "$(dirname "$0")/lib.sh"
new=$FM.new.$$
rm -rf "$new"
"$SPOTRUN" data import fashion-mnist --out "$new"
[[ -f $new/train/index.json && -f $new/test/index.json ]] ||
    fail "import did not write both splits"
old=$FM.old.$$
[[ -e $FM ]] && mv "$FM" "$old"
mv "$new" "$FM"
rm -rf "$old"
pass "imported Fashion-MNIST into $FM"
