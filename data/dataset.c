/*
 * dataset.c: the dataset index (index.json), whole-shard verification,
 * and the shard-cutting writer used by `spotrun data`.
 */
#include "dataset.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"

sr_status dataset_shard_uri(const struct dataset *ds, uint32_t i, char *out,
                            size_t cap)
{
    return storage_uri_join(out, cap, ds->root, ds->shards[i].name);
}

void dataset_digest(const struct dataset *ds, char out[65])
{
    unsigned char d[32];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (uint32_t i = 0; ok && i < ds->nshards; i++) {
        char line[192];
        int n = snprintf(line, sizeof line, "%s\n%llu\n", ds->shards[i].name,
                         (unsigned long long)ds->shards[i].nrec);
        ok = EVP_DigestUpdate(ctx, line, (size_t)n);
    }
    if (!ok || !EVP_DigestFinal_ex(ctx, d, &len))
        memset(d, 0, sizeof d);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

uint32_t dataset_find_shard(const struct dataset *ds, uint64_t gid)
{
    /* the last shard starting at or before gid; the halving has no branch
     * on the data (the reader calls this per record, in random order) */
    uint32_t base = 0, n = ds->nshards;
    while (n > 1) {
        uint32_t half = n / 2;
        base = ds->shards[base + half].first <= gid ? base + half : base;
        n -= half;
    }
    return base;
}

static sr_status parse_index(struct dataset *ds, const char *text, size_t len,
                             const char *what)
{
    sr_status s = SR_OK;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return SR_FAIL(SR_ERR_FORMAT, "%s: not valid JSON (line %d: %s)",
                       what, jerr.line, jerr.text);
    const char *fmt = json_string_value(json_object_get(root, "format"));
    json_t *schema = json_object_get(root, "schema");
    json_t *shards = json_object_get(root, "shards");
    if (!fmt || strcmp(fmt, "spotrun-dataset") != 0 ||
        !json_is_object(schema) || !json_is_array(shards)) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: not a spotrun dataset index (needs "
                    "format, schema and shards)", what);
        goto out;
    }
    if (json_integer_value(json_object_get(root, "version")) != 1) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: unsupported dataset index version",
                    what);
        goto out;
    }
    char *stext = json_dumps(schema, JSON_COMPACT);
    if (!stext) {
        s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    s = schema_from_json(&ds->schema, stext, strlen(stext), what);
    free(stext);
    if (s != SR_OK)
        goto out;
    size_t n = json_array_size(shards);
    if (n == 0 || n > UINT32_MAX) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: lists no shards", what);
        goto out;
    }
    ds->shards = calloc(n, sizeof *ds->shards);
    if (!ds->shards) {
        s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    ds->nshards = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(shards, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        json_int_t nrec = json_integer_value(json_object_get(e, "records"));
        json_int_t bytes = json_integer_value(json_object_get(e, "bytes"));
        if (!name || nrec <= 0 || bytes <= 0 || strstr(name, "..") ||
            str_copy(ds->shards[i].name, sizeof ds->shards[i].name, name)) {
            s = SR_FAIL(SR_ERR_FORMAT, "%s: shard entry %zu needs a name, "
                        "records > 0 and bytes > 0", what, i);
            goto out;
        }
        ds->shards[i].nrec = (uint64_t)nrec;
        ds->shards[i].bytes = (uint64_t)bytes;
        ds->shards[i].first = ds->nrec;
        ds->nrec += (uint64_t)nrec;
    }
    json_int_t total = json_integer_value(json_object_get(root, "records"));
    if ((uint64_t)total != ds->nrec)
        s = SR_FAIL(SR_ERR_FORMAT, "%s: says %lld records but its shards "
                    "hold %llu", what, (long long)total,
                    (unsigned long long)ds->nrec);
out:
    json_decref(root);
    return s;
}

sr_status dataset_open(struct dataset *ds, struct storage *st,
                       const char *uri)
{
    memset(ds, 0, sizeof *ds);
    char index_uri[STORAGE_URI_MAX];
    if (str_ends_with(uri, ".json")) {
        SR_TRY(str_copy(index_uri, sizeof index_uri, uri) ? SR_FAIL(
               SR_ERR_USAGE, "location too long: %s", uri) : SR_OK);
        const char *slash = strrchr(uri, '/');
        size_t rl = slash ? (size_t)(slash - uri) : 0;
        snprintf(ds->root, sizeof ds->root, "%.*s", (int)rl, rl ? uri : ".");
    } else {
        SR_TRY(storage_uri_join(index_uri, sizeof index_uri, uri,
                                DATASET_INDEX));
        SR_TRY(storage_uri_join(ds->root, sizeof ds->root, uri, ""));
    }
    struct sr_buf text = { 0 };
    sr_status s = storage_read_all(st, index_uri, &text);
    if (s == SR_ERR_NOT_FOUND) {
        s = SR_FAIL(SR_ERR_NOT_FOUND, "%s: no dataset here (%s is missing; "
                    "create one with `spotrun data import` or `spotrun data "
                    "make`)", uri, DATASET_INDEX);
    } else if (s == SR_OK) {
        s = parse_index(ds, (const char *)text.data, text.len, index_uri);
    }
    buf_free(&text);
    if (s != SR_OK)
        dataset_close(ds);
    return s;
}

void dataset_close(struct dataset *ds)
{
    free(ds->shards);
    ds->shards = NULL;
    ds->nshards = 0;
}

sr_status dataset_check_shard(const struct dataset *ds, uint32_t i,
                              const struct shard_info *si, const char *uri)
{
    if (si->h.nrec != ds->shards[i].nrec)
        return SR_FAIL(SR_ERR_FORMAT, "%s: holds %llu records, the dataset "
                       "index says %llu", uri, (unsigned long long)si->h.nrec,
                       (unsigned long long)ds->shards[i].nrec);
    if (!schema_equal(&si->schema, &ds->schema))
        return SR_FAIL(SR_ERR_FORMAT, "%s: its schema differs from the "
                       "dataset index", uri);
    return SR_OK;
}

/* Read one whole shard, check it against the index entry, the header, and
 * every record. On success *si holds the parsed shard (caller frees). */
static sr_status read_shard(const struct dataset *ds, struct storage *st,
                            uint32_t i, struct sr_buf *body,
                            struct shard_info *si)
{
    char uri[STORAGE_URI_MAX];
    SR_TRY(dataset_shard_uri(ds, i, uri, sizeof uri));
    body->len = 0;
    SR_TRY(storage_read_all(st, uri, body));
    const struct dataset_shard *e = &ds->shards[i];
    if (body->len != e->bytes)
        return SR_FAIL(SR_ERR_FORMAT, "%s: object is %zu bytes, the dataset "
                       "index says %llu", uri, body->len,
                       (unsigned long long)e->bytes);
    SR_TRY(shard_parse(si, body->data, body->len, body->len, uri));
    sr_status s = dataset_check_shard(ds, i, si, uri);
    if (s == SR_OK)
        s = shard_check_records(si, 0, si->h.nrec, body->data, 0, uri);
    if (s != SR_OK)
        shard_info_free(si);
    return s;
}

sr_status dataset_verify_shard(const struct dataset *ds, struct storage *st,
                               uint32_t i)
{
    struct sr_buf body = { 0 };
    struct shard_info si;
    sr_status s = read_shard(ds, st, i, &body, &si);
    if (s == SR_OK)
        shard_info_free(&si);
    buf_free(&body);
    return s;
}

/* ---- writer ---- */

struct dataset_writer {
    struct storage *st;
    char uri[STORAGE_URI_MAX];
    struct shard_schema schema;
    uint64_t per_shard;         /* records per shard */
    struct sr_buf pending;      /* records of the shard being filled */
    uint64_t npending;
    struct dataset_shard *shards;
    uint32_t nshards, cap;
    uint64_t nrec;
};

sr_status dataset_writer_open(struct dataset_writer **out, struct storage *st,
                              const char *uri,
                              const struct shard_schema *schema,
                              uint64_t shard_bytes)
{
    if (schema->record_bytes == 0)
        return SR_FAIL(SR_ERR_USAGE, "empty record schema");
    if (shard_bytes < schema->record_bytes + 4096)
        return SR_FAIL(SR_ERR_USAGE, "shard size %llu bytes is too small for "
                       "records of %zu bytes", (unsigned long long)shard_bytes,
                       schema->record_bytes);
    struct dataset_writer *w = calloc(1, sizeof *w);
    if (!w)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    w->st = st;
    w->schema = *schema;
    /* leave room for header, schema and the 16-byte index entries */
    w->per_shard = (shard_bytes - 4096) / (schema->record_bytes +
                                           SHARD_INDEX_ENTRY_BYTES);
    char index_uri[STORAGE_URI_MAX];
    sr_status s = SR_OK;
    if (str_copy(w->uri, sizeof w->uri, uri))
        s = SR_FAIL(SR_ERR_USAGE, "location too long: %s", uri);
    /* an existing dataset here stops being one before its shards change */
    if (s == SR_OK)
        s = storage_uri_join(index_uri, sizeof index_uri, uri, DATASET_INDEX);
    if (s == SR_OK)
        s = storage_delete(st, index_uri);
    if (s != SR_OK) {
        free(w);
        return s;
    }
    *out = w;
    return SR_OK;
}

static sr_status flush_shard(struct dataset_writer *w)
{
    if (w->npending == 0)
        return SR_OK;
    if (w->nshards == w->cap) {
        uint32_t cap = w->cap ? w->cap * 2 : 16;
        struct dataset_shard *v = realloc(w->shards, cap * sizeof *v);
        if (!v)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory");
        w->shards = v;
        w->cap = cap;
    }
    struct dataset_shard *e = &w->shards[w->nshards];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "shard-%06u%s", w->nshards,
             SHARD_SUFFIX);
    struct sr_buf img = { 0 };
    char uri[STORAGE_URI_MAX];
    sr_status s = storage_uri_join(uri, sizeof uri, w->uri, e->name);
    if (s == SR_OK)
        s = shard_build(&img, &w->schema, w->pending.data, w->npending);
    if (s == SR_OK)
        s = storage_put(w->st, uri, img.data, img.len, 0);
    if (s == SR_OK) {
        e->nrec = w->npending;
        e->bytes = img.len;
        e->first = w->nrec;
        w->nrec += w->npending;
        w->nshards++;
        w->npending = 0;
        w->pending.len = 0;
        log_debug("wrote %s (%llu records, %zu bytes)", uri,
                  (unsigned long long)e->nrec, img.len);
    }
    buf_free(&img);
    return s;
}

sr_status dataset_writer_add(struct dataset_writer *w, const uint8_t *rec,
                             uint64_t n)
{
    size_t rb = w->schema.record_bytes;
    while (n > 0) {
        uint64_t room = w->per_shard - w->npending;
        uint64_t k = n < room ? n : room;
        SR_TRY(buf_append(&w->pending, rec, (size_t)(k * rb)));
        w->npending += k;
        rec += k * rb;
        n -= k;
        if (w->npending == w->per_shard)
            SR_TRY(flush_shard(w));
    }
    return SR_OK;
}

static sr_status write_index(struct dataset_writer *w)
{
    sr_status s = SR_OK;
    struct sr_buf schema = { 0 };
    char *text = NULL;
    json_t *root = NULL;
    SR_TRY(schema_to_json(&w->schema, &schema));
    json_error_t jerr;
    json_t *js = json_loadb((const char *)schema.data, schema.len, 0, &jerr);
    json_t *shards = json_array();
    root = json_pack("{s:s, s:i, s:I, s:I, s:o, s:o}", "format",
                     "spotrun-dataset", "version", 1, "records",
                     (json_int_t)w->nrec, "record_bytes",
                     (json_int_t)w->schema.record_bytes, "schema", js,
                     "shards", shards);
    if (!root) {
        s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < w->nshards; i++)
        json_array_append_new(shards, json_pack("{s:s, s:I, s:I}", "name",
                              w->shards[i].name, "records",
                              (json_int_t)w->shards[i].nrec, "bytes",
                              (json_int_t)w->shards[i].bytes));
    text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text) {
        s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    char uri[STORAGE_URI_MAX];
    s = storage_uri_join(uri, sizeof uri, w->uri, DATASET_INDEX);
    if (s == SR_OK)
        s = storage_put(w->st, uri, text, strlen(text), 0);
out:
    free(text);
    json_decref(root);
    buf_free(&schema);
    return s;
}

sr_status dataset_writer_finish(struct dataset_writer *w, uint64_t *nrec,
                                uint32_t *nshards)
{
    sr_status s = flush_shard(w);
    if (s == SR_OK && w->nrec == 0)
        s = SR_FAIL(SR_ERR_USAGE, "no records to write to %s", w->uri);
    if (s == SR_OK)
        s = write_index(w);
    if (s != SR_OK) {
        dataset_writer_abort(w);
        return s;
    }
    if (nrec)
        *nrec = w->nrec;
    if (nshards)
        *nshards = w->nshards;
    buf_free(&w->pending);
    free(w->shards);
    free(w);
    return SR_OK;
}

void dataset_writer_abort(struct dataset_writer *w)
{
    if (!w)
        return;
    for (uint32_t i = 0; i < w->nshards; i++) {
        char uri[STORAGE_URI_MAX];
        if (storage_uri_join(uri, sizeof uri, w->uri, w->shards[i].name) ==
            SR_OK && storage_delete(w->st, uri) != SR_OK)
            log_warn("could not remove %s", uri);
    }
    buf_free(&w->pending);
    free(w->shards);
    free(w);
}
