/*
 * test_storage.c: the file:// backend through the public storage API.
 * Nothing shows at a name before its writer commits, and an abort or a
 * commit leaves no temporary file behind; create-if-absent refuses a name
 * that exists and keeps its bytes; a plain write replaces the whole
 * object; stat and ranged reads; a read past the end names the object and
 * the offset; listing by prefix, sorted (a prefix that names a directory
 * lists its contents, as the S3 backend does; a partial name; nothing);
 * delete, also of a name that is absent, and of the directory its last
 * object leaves empty; deleting all that is listed leaves nothing behind
 * (no temporary file either).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/status.h"
#include "data/storage.h"

static char dir[64];
static struct storage *st;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/spotrun-test-storage-XXXXXX");
    if (!mkdtemp(dir) || storage_open(&st) != SR_OK)
        return -1;
    return 0;
}

/* The directory itself goes in the last test, which deletes every object
 * the others left. */
static int teardown(void **state)
{
    (void)state;
    storage_close(st);
    return 0;
}

/* How many entries (other than . and ..) the directory holds. */
static int entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void uri_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "file://%s/%s", dir, name);
}

static void expect_bytes(const char *uri, const void *want, size_t n)
{
    uint64_t size = 0;
    assert_int_equal(storage_stat(st, uri, &size), SR_OK);
    assert_int_equal(size, n);
    uint8_t *got = malloc(n + 1);
    assert_int_equal(storage_read(st, uri, 0, got, n), SR_OK);
    assert_memory_equal(got, want, n);
    free(got);
}

static void test_storage__writer_commit_and_abort(void **state)
{
    (void)state;
    char uri[256], sub[160];
    uri_of(uri, sizeof uri, "w/obj.bin");
    snprintf(sub, sizeof sub, "%s/w", dir);
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 1);

    struct storage_writer *w;
    assert_int_equal(storage_writer_open(st, uri, 0, &w), SR_OK);
    for (size_t at = 0; at < sizeof data; at += 1000)
        assert_int_equal(storage_writer_write(w, data + at, 1000), SR_OK);
    uint64_t size;
    assert_int_equal(storage_stat(st, uri, &size), SR_ERR_NOT_FOUND);
    assert_int_equal(entries(sub), 1);          /* the temporary file */
    assert_int_equal(storage_writer_commit(w), SR_OK);
    expect_bytes(uri, data, sizeof data);
    assert_int_equal(entries(sub), 1);          /* the object alone */

    /* an aborted overwrite leaves the object as it was, and nothing else */
    assert_int_equal(storage_writer_open(st, uri, 0, &w), SR_OK);
    assert_int_equal(storage_writer_write(w, "other", 5), SR_OK);
    storage_writer_abort(w);
    expect_bytes(uri, data, sizeof data);
    assert_int_equal(entries(sub), 1);

    /* a committed overwrite replaces all of it */
    assert_int_equal(storage_put(st, uri, "short", 5, 0), SR_OK);
    expect_bytes(uri, "short", 5);
    assert_int_equal(entries(sub), 1);
}

static void test_storage__create_if_absent(void **state)
{
    (void)state;
    char uri[256];
    uri_of(uri, sizeof uri, "excl/marker");
    assert_int_equal(storage_put(st, uri, "first", 5, STORAGE_CREATE_EXCL),
                     SR_OK);
    assert_int_equal(storage_put(st, uri, "second", 6, STORAGE_CREATE_EXCL),
                     SR_ERR_EXISTS);
    expect_bytes(uri, "first", 5);
    struct storage_writer *w;
    assert_int_equal(storage_writer_open(st, uri, STORAGE_CREATE_EXCL, &w),
                     SR_ERR_EXISTS);

    /* the name appears while the writer is open: its commit is refused */
    char late[256];
    uri_of(late, sizeof late, "excl/late");
    assert_int_equal(storage_writer_open(st, late, STORAGE_CREATE_EXCL, &w),
                     SR_OK);
    assert_int_equal(storage_writer_write(w, "mine", 4), SR_OK);
    assert_int_equal(storage_put(st, late, "theirs", 6, 0), SR_OK);
    assert_int_equal(storage_writer_commit(w), SR_ERR_EXISTS);
    expect_bytes(late, "theirs", 6);
    char sub[160];
    snprintf(sub, sizeof sub, "%s/excl", dir);
    assert_int_equal(entries(sub), 2);
}

static void test_storage__ranged_reads(void **state)
{
    (void)state;
    char uri[256];
    uri_of(uri, sizeof uri, "r/obj");
    uint8_t data[4096];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i ^ (i >> 8));
    assert_int_equal(storage_put(st, uri, data, sizeof data, 0), SR_OK);
    uint8_t got[100];
    assert_int_equal(storage_read(st, uri, 1000, got, sizeof got), SR_OK);
    assert_memory_equal(got, data + 1000, sizeof got);
    assert_int_equal(storage_read(st, uri, 4050, got, sizeof got),
                     SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "r/obj"));
    assert_non_null(strstr(sr_errmsg(), "ends before byte 4096"));
    char missing[256];
    uri_of(missing, sizeof missing, "r/none");
    assert_int_equal(storage_read(st, missing, 0, got, 1), SR_ERR_NOT_FOUND);
}

/* The names listed under prefix, in the order given, joined by spaces. */
static void list_names(const char *prefix, char *out, size_t cap)
{
    char uri[256];
    uri_of(uri, sizeof uri, prefix);
    struct storage_list l;
    assert_int_equal(storage_list(st, uri, &l), SR_OK);
    out[0] = '\0';
    for (size_t i = 0; i < l.n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s",
                 i ? " " : "", l.v[i].name);
    storage_list_free(&l);
}

static void test_storage__list_and_delete(void **state)
{
    (void)state;
    const char *names[] = { "l/b/z", "l/ab", "l/a/y", "l/cat2", "l/a/x",
                            "l/cat1" };
    char uri[256], got[256];
    for (int i = 0; i < 6; i++) {
        uri_of(uri, sizeof uri, names[i]);
        assert_int_equal(storage_put(st, uri, names[i], strlen(names[i]), 0),
                         SR_OK);
    }
    list_names("l/a", got, sizeof got);         /* a directory */
    assert_string_equal(got, "x y");
    list_names("l/a/", got, sizeof got);
    assert_string_equal(got, "x y");
    list_names("l/ca", got, sizeof got);        /* a partial name */
    assert_string_equal(got, "t1 t2");
    list_names("l", got, sizeof got);
    assert_string_equal(got, "a/x a/y ab b/z cat1 cat2");
    list_names("l/d", got, sizeof got);         /* nothing */
    assert_string_equal(got, "");

    uri_of(uri, sizeof uri, "l/b/z");
    assert_int_equal(storage_delete(st, uri), SR_OK);
    uint64_t size;
    assert_int_equal(storage_stat(st, uri, &size), SR_ERR_NOT_FOUND);
    assert_int_equal(storage_delete(st, uri), SR_OK);   /* absent: fine */
    char sub[160];
    snprintf(sub, sizeof sub, "%s/l/b", dir);
    struct stat sb;
    assert_int_not_equal(stat(sub, &sb), 0);    /* went with its object */
    list_names("l", got, sizeof got);
    assert_string_equal(got, "a/x a/y ab cat1 cat2");
}

/* Run last: deleting every listed object through the API leaves the test
 * directory empty, so no temporary file is left anywhere and each
 * directory went with its last object. */
static void test_storage__deleting_everything_leaves_nothing(void **state)
{
    (void)state;
    char root[128], obj[1200];
    snprintf(root, sizeof root, "file://%s/", dir);
    struct storage_list l;
    assert_int_equal(storage_list(st, root, &l), SR_OK);
    assert_true(l.n > 0);
    for (size_t i = 0; i < l.n; i++) {
        snprintf(obj, sizeof obj, "%s%s", root, l.v[i].name);
        assert_int_equal(storage_delete(st, obj), SR_OK);
    }
    storage_list_free(&l);
    assert_int_equal(entries(dir), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_storage__writer_commit_and_abort),
        cmocka_unit_test(test_storage__create_if_absent),
        cmocka_unit_test(test_storage__ranged_reads),
        cmocka_unit_test(test_storage__list_and_delete),
        cmocka_unit_test(test_storage__deleting_everything_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
