/*
 * buf.c: growable byte buffer. The buffer always keeps one spare byte so a
 * text body can be NUL-terminated without another allocation.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sr_status buf_reserve(struct sr_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return SR_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2)
            return SR_FAIL(SR_ERR_NOMEM, "buffer of %zu bytes too large",
                           b->len + extra);
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory growing a buffer to %zu "
                       "bytes", cap);
    b->data = p;
    b->cap = cap;
    return SR_OK;
}

sr_status buf_append(struct sr_buf *b, const void *p, size_t n)
{
    SR_TRY(buf_reserve(b, n));
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return SR_OK;
}

sr_status buf_printf(struct sr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return SR_FAIL(SR_ERR_INTERNAL, "bad format string");
    SR_TRY(buf_reserve(b, (size_t)n));
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SR_OK;
}

void buf_free(struct sr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
