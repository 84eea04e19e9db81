/*
 * test_plugin.c: the backend plugin loader. Missing files, files that are
 * not shared objects, shared objects that are not plugins and a wrong
 * $SPOTRUN_CUDA_PLUGIN are refused with a reason that names them (a file
 * that is not a shared object before the driver is asked).
 * `test_plugin cuda` (registered when the build makes the plugin, named by
 * $SPOTRUN_CUDA_PLUGIN_BUILT): the CUDA plugin opens with every symbol
 * resolved (RTLD_NOW), hands over a complete ops table and answers a
 * device probe (a count, or the reason there is none). Needs no GPU.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/status.h"
#include "trainer/plugin.h"

static void test_plugin__cuda_plugin_loads_and_resolves(void **state)
{
    (void)state;
    const char *path = getenv("SPOTRUN_CUDA_PLUGIN_BUILT");
    if (!path || !*path)
        fail_msg("SPOTRUN_CUDA_PLUGIN_BUILT must name the built plugin");
    const struct backend_plugin *p = NULL;
    if (plugin_load_path(&p, path) != SR_OK)
        fail_msg("%s", sr_errmsg());
    assert_int_equal(p->abi, SPOTRUN_PLUGIN_ABI);
    assert_string_equal(p->name, "cuda");
    assert_string_equal(p->ops->name, "cuda");
    assert_non_null(p->build);
    const struct backend_ops *o = p->ops;
    void *fns[] = { (void *)o->create, (void *)o->destroy,
                    (void *)o->set_params, (void *)o->get_params,
                    (void *)o->set_opt_state, (void *)o->get_opt_state,
                    (void *)o->train_step, (void *)o->grad_allreduce,
                    (void *)o->set_grads, (void *)o->get_grads,
                    (void *)o->optimizer_step, (void *)o->evaluate,
                    (void *)o->host_alloc, (void *)o->host_free,
                    (void *)p->probe };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        assert_non_null(fns[i]);
    int count = -1;
    sr_status s = p->probe(&count);
    if (s == SR_OK) {
        assert_true(count >= 0);
        print_message("%s: %d device(s)\n", p->build, count);
    } else {
        /* no driver here: the reason must say so */
        assert_true(strstr(sr_errmsg_user(), "CUDA") != NULL);
        print_message("%s: %s\n", p->build, sr_errmsg_user());
    }
}

static void test_plugin__missing_file_is_named(void **state)
{
    (void)state;
    const struct backend_plugin *p = NULL;
    assert_int_equal(plugin_load_path(&p, "/nonexistent/libspotrun_cuda.so"),
                     SR_ERR_NOT_FOUND);
    assert_non_null(strstr(sr_errmsg_user(), "/nonexistent/"));
    assert_null(p);
}

static void test_plugin__non_elf_file_is_refused(void **state)
{
    (void)state;
    char path[] = "/tmp/spotrun-plugin-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "this is a text file, not a shared object; "
                        "dlopen must refuse it with a reason\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text
                                                                 - 1));
    close(fd);
    const struct backend_plugin *p = NULL;
    assert_int_equal(plugin_load_path(&p, path), SR_ERR_NOT_FOUND);
    print_message("%s\n", sr_errmsg_user());
    assert_non_null(strstr(sr_errmsg_user(), path));
    assert_non_null(strstr(sr_errmsg_user(), "ELF"));
    unlink(path);
}

static void test_plugin__shared_object_without_entry_is_refused(void **state)
{
    (void)state;
    const struct backend_plugin *p = NULL;
    assert_int_equal(plugin_load_path(&p, "libz.so.1"), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg_user(), SPOTRUN_PLUGIN_ENTRY));
}

static void test_plugin__env_path_is_the_only_place_looked(void **state)
{
    (void)state;
    setenv("SPOTRUN_CUDA_PLUGIN", "/nonexistent/elsewhere.so", 1);
    const struct backend_plugin *p = NULL;
    assert_int_not_equal(plugin_load_cuda(&p), SR_OK);
    assert_non_null(strstr(sr_errmsg_user(), "/nonexistent/elsewhere.so"));
    unsetenv("SPOTRUN_CUDA_PLUGIN");
}

/* A file that is not a shared object is refused by name before the
 * driver is asked anything. */
static void test_plugin__env_file_not_elf_named_first(void **state)
{
    (void)state;
    char path[] = "/tmp/spotrun-plugin-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
    close(fd);
    setenv("SPOTRUN_CUDA_PLUGIN", path, 1);
    const struct backend_plugin *p = NULL;
    assert_int_equal(plugin_load_cuda(&p), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg_user(), path));
    assert_non_null(strstr(sr_errmsg_user(), "no ELF header"));
    unsetenv("SPOTRUN_CUDA_PLUGIN");
    unlink(path);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest cuda[] = {
        cmocka_unit_test(test_plugin__cuda_plugin_loads_and_resolves),
    };
    if (argc > 1 && strcmp(argv[1], "cuda") == 0)
        return cmocka_run_group_tests(cuda, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plugin__missing_file_is_named),
        cmocka_unit_test(test_plugin__non_elf_file_is_refused),
        cmocka_unit_test(test_plugin__shared_object_without_entry_is_refused),
        cmocka_unit_test(test_plugin__env_path_is_the_only_place_looked),
        cmocka_unit_test(test_plugin__env_file_not_elf_named_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
