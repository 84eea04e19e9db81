/*
 * test_util.c: strict number and size parsing (the whole string or
 * nothing), bounded copies, byte formatting and the process age.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "common/util.h"

static void test_util__parse_numbers(void **state)
{
    (void)state;
    int64_t i;
    uint64_t u;
    double d;
    assert_int_equal(parse_i64(&i, "-42"), 0);
    assert_int_equal(i, -42);
    assert_int_equal(parse_i64(&i, "42x"), -1);
    assert_int_equal(parse_i64(&i, " 42"), -1);
    assert_int_equal(parse_i64(&i, ""), -1);
    assert_int_equal(parse_i64(&i, "99999999999999999999"), -1);
    assert_int_equal(parse_u64(&u, "18446744073709551615"), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(parse_u64(&u, "-1"), -1);
    assert_int_equal(parse_f64(&d, "2.5e-3"), 0);
    assert_true(d == 2.5e-3);
    assert_int_equal(parse_f64(&d, "nan"), -1);
    assert_int_equal(parse_f64(&d, "1e999"), -1);
    assert_int_equal(parse_f64(&d, "1.0 "), -1);
}

static void test_util__parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(parse_size(&v, "1000"), 0);
    assert_true(v == 1000);
    assert_int_equal(parse_size(&v, "64MiB"), 0);
    assert_true(v == 64ull << 20);
    assert_int_equal(parse_size(&v, "8m"), 0);
    assert_true(v == 8ull << 20);
    assert_int_equal(parse_size(&v, "1.5GiB"), 0);
    assert_true(v == 3ull << 29);
    assert_int_equal(parse_size(&v, "1.5"), -1);       /* not whole bytes */
    assert_int_equal(parse_size(&v, "10 MiB"), -1);
    assert_int_equal(parse_size(&v, "10PiB"), -1);
    assert_int_equal(parse_size(&v, "-1K"), -1);
    assert_int_equal(parse_size(&v, "K"), -1);
}

static void test_util__strings(void **state)
{
    (void)state;
    char b[8];
    assert_int_equal(str_copy(b, sizeof b, "1234567"), 0);
    assert_string_equal(b, "1234567");
    assert_int_equal(str_copy(b, sizeof b, "12345678"), -1);
    assert_string_equal(b, "");
    assert_true(str_ends_with("state.h5", ".h5"));
    assert_false(str_ends_with("h5", "state.h5"));
    char f[32];
    assert_string_equal(fmt_bytes(f, sizeof f, 512), "512 B");
    assert_string_equal(fmt_bytes(f, sizeof f, 3u << 20), "3.0 MiB");
    char t[] = " \t host slots=2 \n";
    assert_string_equal(str_trim(t), "host slots=2");
    char e[] = "   ";
    assert_string_equal(str_trim(e), "");
}

static void test_util__process_age(void **state)
{
    (void)state;
    double a = process_age_s();
    assert_true(a >= 0 && a < 600);
    usleep(50 * 1000);
    double b = process_age_s();
    assert_true(b >= a + 0.03 && b < a + 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_util__parse_numbers),
        cmocka_unit_test(test_util__parse_size),
        cmocka_unit_test(test_util__strings),
        cmocka_unit_test(test_util__process_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
