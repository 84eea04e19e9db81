/*
 * buf.h: a growable byte buffer (data, len, cap). Used for object bodies,
 * HDF5 images and JSON text. Growth is geometric; failure leaves the buffer
 * as it was and returns SR_ERR_NOMEM.
 */
#ifndef SPOTRUN_BUF_H
#define SPOTRUN_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct sr_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Make room for at least `extra` more bytes past len. */
sr_status buf_reserve(struct sr_buf *b, size_t extra) SR_MUST_USE;
sr_status buf_append(struct sr_buf *b, const void *p, size_t n) SR_MUST_USE;
sr_status buf_printf(struct sr_buf *b, const char *fmt, ...)
    SR_PRINTF(2, 3) SR_MUST_USE;
void buf_free(struct sr_buf *b);

#endif
