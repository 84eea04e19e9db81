/*
 * s3_xml.h: the XML of S3's API, read and written with libxml2: error
 * documents, InitiateMultipartUploadResult, ListBucketResult pages and
 * the CompleteMultipartUpload request body. Element names are matched
 * without their namespace, as S3 and compatible servers differ there.
 */
#ifndef SPOTRUN_S3_XML_H
#define SPOTRUN_S3_XML_H

#include <stddef.h>

#include "../../common/buf.h"
#include "../../common/status.h"
#include "s3.h"

struct s3_xml_error {
    char code[64];
    char message[512];
    char request_id[96];
};

/* 1 when body is an <Error> document (out filled), 0 otherwise. */
int s3_xml_error_parse(struct s3_xml_error *out, const void *body,
                       size_t len);

/* The UploadId of an InitiateMultipartUploadResult. */
sr_status s3_xml_upload_id(char *out, size_t cap, const void *body,
                           size_t len) SR_MUST_USE;

/* Call fn for each <Contents> of a ListObjectsV2 page; *truncated and
 * next_token (replaced) say whether and where to continue. */
sr_status s3_xml_list_page(const void *body, size_t len, s3_list_fn fn,
                           void *arg, int *truncated,
                           struct sr_buf *next_token) SR_MUST_USE;

/* The CompleteMultipartUpload body for parts 1..n with these ETags. */
sr_status s3_xml_complete_body(struct sr_buf *out,
                               const char (*etags)[S3_ETAG_MAX], size_t n)
    SR_MUST_USE;

#endif
