/*
 * test_spot.c: the interruption watcher without a metadata service: every
 * stop signal is recorded (the first one wins), the handlers outlive
 * spot_stop, the metadata thread stays off when disabled or when nothing
 * answers, and notice times parse as AWS writes them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "launcher/spot.h"

static struct spot_watcher *start(void)
{
    struct spot_watcher *w = NULL;
    struct spot_opts o = { .poll_metadata = 1, .poll_interval_s = 5 };
    assert_int_equal(spot_start(&w, &o), SR_OK);
    return w;
}

static void test_spot__signals(void **state)
{
    (void)state;
    static const struct { int sig; const char *name; } cases[] = {
        { SIGTERM, "SIGTERM" }, { SIGINT, "SIGINT" },
        { SIGUSR1, "SIGUSR1" }, { SIGUSR2, "SIGUSR2" },
    };
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct spot_watcher *w = start();
        struct spot_notice n;
        assert_int_equal(spot_stop_requested(w, &n), 0);
        double before = (double)time(NULL);
        raise(cases[i].sig);
        raise(SIGTERM);                 /* a second one changes nothing */
        assert_int_equal(spot_stop_requested(w, &n), 1);
        assert_int_equal(n.kind, SPOT_SIGNAL);
        assert_int_equal(n.signo, cases[i].sig);
        assert_string_equal(n.what, cases[i].name);
        assert_true(n.noticed >= before - 1 && n.noticed <= before + 2);
        assert_true(n.deadline == 0);
        assert_int_equal(spot_take_rebalance(w, &n), 0);
        spot_stop(w);
    }
    /* after spot_stop the handler still only records: this process lives */
    raise(SIGTERM);
    raise(SIGUSR1);
    unsetenv("AWS_EC2_METADATA_DISABLED");
}

static void test_spot__metadata_off(void **state)
{
    (void)state;
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    struct spot_watcher *w = start();
    assert_int_equal(spot_polling(w), 0);
    spot_stop(w);
    unsetenv("AWS_EC2_METADATA_DISABLED");
    /* a closed loopback port: the quick probe fails, no thread */
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/", 1);
    time_t t0 = time(NULL);
    w = start();
    assert_int_equal(spot_polling(w), 0);
    assert_true(time(NULL) - t0 <= 2);
    spot_stop(w);
    unsetenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
}

static void test_spot__parse_time(void **state)
{
    (void)state;
    assert_true(spot_parse_time("2017-09-18T08:22:00Z") == 1505722920.0);
    assert_true(spot_parse_time("1970-01-01T00:00:00Z") == 0.0);
    assert_true(spot_parse_time("2017-09-18 08:22:00") < 0);
    assert_true(spot_parse_time("2017-09-18T08:22:00Z ") < 0);
    assert_true(spot_parse_time("") < 0);
    assert_true(spot_parse_time("2017-13-18T08:22:00Z") < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spot__signals),
        cmocka_unit_test(test_spot__metadata_off),
        cmocka_unit_test(test_spot__parse_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
