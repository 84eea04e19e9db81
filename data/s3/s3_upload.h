/*
 * s3_upload.h: streaming writes to one S3 object. Bytes are buffered up to
 * one part; an object that never fills a part is sent as one PutObject at
 * commit, a larger one becomes a multipart upload whose parts go out
 * concurrently (curl multi) while the caller keeps writing. Commit
 * completes the upload, with If-None-Match: * when asked (SR_ERR_EXISTS if
 * the key is taken); abort, or any failure, aborts it on S3 so no parts
 * are left behind.
 */
#ifndef SPOTRUN_S3_UPLOAD_H
#define SPOTRUN_S3_UPLOAD_H

#include <stddef.h>

#include "../../common/status.h"
#include "s3.h"

struct s3_upload;

/* Nothing is sent until the first part fills or commit. flags: enum
 * s3_put_flags. */
sr_status s3_upload_open(struct s3_upload **out, struct s3_client *c,
                         const char *bucket, const char *key, int flags)
    SR_MUST_USE;
sr_status s3_upload_write(struct s3_upload *u, const void *p, size_t n)
    SR_MUST_USE;
/* Make the object visible; frees u whatever the outcome. */
sr_status s3_upload_commit(struct s3_upload *u) SR_MUST_USE;
/* Drop the upload; frees u. */
void s3_upload_abort(struct s3_upload *u);

#endif
