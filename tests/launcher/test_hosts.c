/*
 * test_hosts.c: host lists in every accepted form, the errors for bad
 * ones, and the mpirun command built over them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "launcher/hosts.h"

static void test_hosts__forms(void **state)
{
    (void)state;
    struct host_list hl;
    assert_int_equal(hosts_parse(&hl, "# cluster\nalgo-1:4\n\n10.0.0.2 "
                                 "slots=2 max_slots=8\nnode3  # spare\n",
                                 1, "test"), SR_OK);
    assert_int_equal(hl.n, 3);
    assert_string_equal(hl.h[0].name, "algo-1");
    assert_int_equal(hl.h[0].slots, 4);
    assert_string_equal(hl.h[1].name, "10.0.0.2");
    assert_int_equal(hl.h[1].slots, 2);
    assert_string_equal(hl.h[2].name, "node3");
    assert_int_equal(hl.h[2].slots, 1);
    assert_int_equal(hosts_total_slots(&hl), 7);
    char buf[256];
    hosts_format(&hl, buf, sizeof buf);
    assert_string_equal(buf, "algo-1:4,10.0.0.2:2,node3:1");
}

static void test_hosts__errors(void **state)
{
    (void)state;
    struct host_list hl;
    assert_int_equal(hosts_parse(&hl, "a:0\n", 1, "t"), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "line 1"));
    assert_int_equal(hosts_parse(&hl, "a\nb:x\n", 1, "t"), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "line 2"));
    assert_int_equal(hosts_parse(&hl, "a\na\n", 1, "t"), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "twice"));
    assert_int_equal(hosts_parse(&hl, "a cores=2\n", 1, "t"), SR_ERR_USAGE);
    assert_int_equal(hosts_parse(&hl, "a;rm -rf /\n", 1, "t"), SR_ERR_USAGE);
    assert_int_equal(hosts_parse(&hl, "# none\n\n", 1, "t"), SR_OK);
    assert_int_equal(hl.n, 0);
}

static void test_hosts__contains(void **state)
{
    (void)state;
    struct host_list a, b;
    assert_int_equal(hosts_parse(&a, "x\ny\n", 1, "a"), SR_OK);
    assert_int_equal(hosts_parse(&b, "y:2\nx\nz\n", 1, "b"), SR_OK);
    assert_true(hosts_contains_all(&b, &a));
    assert_false(hosts_contains_all(&a, &b));
}

static void test_hosts__mpirun(void **state)
{
    (void)state;
    struct host_list hl;
    assert_int_equal(hosts_parse(&hl, "h1:2\nh2:2\n", 1, "t"), SR_OK);
    setenv("AWS_SECRET_ACCESS_KEY", "do-not-print", 1);
    struct mpirun_opts o = { .mpirun = "mpirun", .iface = "eth0",
                             .ssh_agent = "ssh -p 2222",
                             .extra = "--mca x y", .spotrun = "/bin/spotrun" };
    char *args[] = { "--epochs", "2" };
    char **argv;
    assert_int_equal(mpirun_argv(&argv, &hl, &o, 2, args), SR_OK);
    char line[4096];
    argv_format(argv, line, sizeof line);
    assert_non_null(strstr(line, "-np 4 --host h1:2,h2:2"));
    assert_non_null(strstr(line, "--mca oob_tcp_if_include eth0"));
    assert_non_null(strstr(line, "-x NCCL_SOCKET_IFNAME=eth0"));
    assert_non_null(strstr(line, "plm_rsh_agent 'ssh -p 2222'"));
    assert_non_null(strstr(line, "-x AWS_SECRET_ACCESS_KEY"));
    assert_null(strstr(line, "do-not-print"));
    assert_non_null(strstr(line, "--mca x y /bin/spotrun train --epochs 2"));
    argv_free(argv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hosts__forms),
        cmocka_unit_test(test_hosts__errors),
        cmocka_unit_test(test_hosts__contains),
        cmocka_unit_test(test_hosts__mpirun),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
