/*
 * metrics.c: the epoch line, the JSON lines file and progress output. The
 * metrics file is rewritten whole through the storage layer at each epoch,
 * so it is never half-written and works the same on file:// and s3://.
 */
#include "metrics.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/util.h"

sr_status jsonl_load(struct sr_buf *out, struct storage *st, const char *uri,
                     const char *key, int64_t max)
{
    struct sr_buf raw = { 0 };
    sr_status s = storage_read_all(st, uri, &raw);
    if (s == SR_ERR_NOT_FOUND) {
        sr_clear_error();
        return SR_OK;
    }
    const char *p = (const char *)raw.data;
    const char *end = p + raw.len;
    while (s == SR_OK && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_t *o = json_loadb(p, len, 0, NULL);
        json_t *v = json_object_get(o, key);
        if (json_is_integer(v) && json_integer_value(v) <= max) {
            s = buf_append(out, p, len);
            if (s == SR_OK)
                s = buf_append(out, "\n", 1);
        }
        json_decref(o);
        p += len + 1;
    }
    buf_free(&raw);
    return s;
}

sr_status metrics_open(struct metrics *m, struct storage *st, const char *uri,
                       int64_t keep_epochs)
{
    memset(m, 0, sizeof *m);
    m->st = st;
    if (!uri || !*uri)
        return SR_OK;
    if (str_copy(m->uri, sizeof m->uri, uri))
        return SR_FAIL(SR_ERR_USAGE, "--metrics-file is too long");
    return jsonl_load(&m->jsonl, st, uri, "epoch", keep_epochs);
}

void metrics_format_line(const struct epoch_metrics *e, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "epoch=%lld step=%lld train_loss=%.4f",
                     (long long)e->epoch, (long long)e->step, e->train_loss);
    if (e->has_val && n > 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n,
                      " val_loss=%.4f val_accuracy=%.4f", e->val_loss,
                      e->val_accuracy);
    if (n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n,
                 " samples_per_sec=%.0f data_wait_s=%.3f epoch_s=%.3f",
                 e->samples_per_sec, e->data_wait_s, e->epoch_s);
}

/* A JSON number, or null for NaN and infinities (JSON has neither). */
static json_t *json_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

sr_status metrics_epoch(struct metrics *m, const struct epoch_metrics *e,
                        FILE *out)
{
    char line[512];
    metrics_format_line(e, line, sizeof line);
    fprintf(out, "%s\n", line);
    fflush(out);
    if (!m->uri[0])
        return SR_OK;
    json_t *o = json_object();
    if (!o)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    json_object_set_new(o, "epoch", json_integer((json_int_t)e->epoch));
    json_object_set_new(o, "step", json_integer((json_int_t)e->step));
    json_object_set_new(o, "train_loss", json_num(e->train_loss));
    if (e->has_val) {
        json_object_set_new(o, "val_loss", json_num(e->val_loss));
        json_object_set_new(o, "val_accuracy", json_num(e->val_accuracy));
    }
    json_object_set_new(o, "samples_per_sec", json_num(e->samples_per_sec));
    json_object_set_new(o, "data_wait_s", json_num(e->data_wait_s));
    json_object_set_new(o, "epoch_s", json_num(e->epoch_s));
    json_object_set_new(o, "timestamp", json_num(wall_s()));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER |
                            JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!text)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    sr_status s = buf_printf(&m->jsonl, "%s\n", text);
    free(text);
    SR_TRY(s);
    return storage_put(m->st, m->uri, m->jsonl.data, m->jsonl.len, 0);
}

void metrics_close(struct metrics *m)
{
    buf_free(&m->jsonl);
}

void progress_init(struct progress *p, const char *mode, double every_s)
{
    memset(p, 0, sizeof *p);
    p->every_s = every_s;
    p->last = now_s();
    if (strcmp(mode, "off") == 0)
        p->mode = PROGRESS_OFF;
    else if (strcmp(mode, "bar") == 0)
        p->mode = PROGRESS_BAR;
    else if (strcmp(mode, "lines") == 0)
        p->mode = PROGRESS_LINES;
    else
        p->mode = isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_LINES;
}

void progress_update(struct progress *p, int64_t epoch, int64_t epochs,
                     int64_t step, int64_t steps, double loss,
                     double samples_per_sec)
{
    if (p->mode == PROGRESS_OFF)
        return;
    double t = now_s();
    double every = p->mode == PROGRESS_BAR ? 0.2 : p->every_s;
    if (t - p->last < every && step != steps)
        return;
    p->last = t;
    double frac = steps ? (double)step / (double)steps : 1;
    if (p->mode == PROGRESS_BAR) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[30] = '\0';
        fprintf(stderr, "\r epoch %lld/%lld [%s] %lld/%lld loss %.4f "
                "%.0f samples/s ", (long long)epoch, (long long)epochs, bar,
                (long long)step, (long long)steps, loss, samples_per_sec);
        p->drawn = 1;
    } else if (step != steps) {
        fprintf(stderr, "spotrun: epoch %lld/%lld step %lld/%lld (%.0f%%) "
                "loss=%.4f samples_per_sec=%.0f\n", (long long)epoch,
                (long long)epochs, (long long)step, (long long)steps,
                100 * frac, loss, samples_per_sec);
    }
    fflush(stderr);
}

void progress_end(struct progress *p)
{
    if (p->mode == PROGRESS_BAR && p->drawn) {
        fprintf(stderr, "\r%*s\r", 100, "");
        fflush(stderr);
        p->drawn = 0;
    }
    p->last = now_s();
}
