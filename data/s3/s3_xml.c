/*
 * s3_xml.c: S3 response parsing with libxml2's tree API and request bodies
 * with its text writer. Parsing never touches the network (XML_PARSE_NONET)
 * and never substitutes entities; malformed documents are reported as
 * SR_ERR_FORMAT rather than printed by libxml2.
 */
#include "s3_xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../../common/util.h"
#include "credentials.h"

static xmlDocPtr parse(const void *body, size_t len)
{
    if (len == 0 || len > INT_MAX)
        return NULL;
    return xmlReadMemory(body, (int)len, NULL, NULL, XML_PARSE_NONET |
                         XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

static int named(xmlNodePtr n, const char *name)
{
    return n->type == XML_ELEMENT_NODE &&
           strcmp((const char *)n->name, name) == 0;
}

static xmlNodePtr child(xmlNodePtr parent, const char *name)
{
    for (xmlNodePtr n = parent->children; n; n = n->next)
        if (named(n, name))
            return n;
    return NULL;
}

/* Copy a node's text into out, truncating; 0, or -1 when too long. */
static int text_of(char *out, size_t cap, xmlNodePtr n)
{
    xmlChar *t = xmlNodeGetContent(n);
    int rc = str_copy(out, cap, t ? (const char *)t : "");
    if (rc && cap)
        snprintf(out, cap, "%s", (const char *)t);
    xmlFree(t);
    return rc;
}

/* The text of parent's child element `name`; "" when absent. */
static int child_text(char *out, size_t cap, xmlNodePtr parent,
                      const char *name)
{
    xmlNodePtr n = child(parent, name);
    if (!n) {
        out[0] = '\0';
        return 0;
    }
    return text_of(out, cap, n);
}

int s3_xml_error_parse(struct s3_xml_error *out, const void *body,
                       size_t len)
{
    memset(out, 0, sizeof *out);
    xmlDocPtr doc = parse(body, len);
    if (!doc)
        return 0;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int is_error = root && named(root, "Error");
    if (is_error) {
        child_text(out->code, sizeof out->code, root, "Code");
        child_text(out->message, sizeof out->message, root, "Message");
        child_text(out->request_id, sizeof out->request_id, root,
                   "RequestId");
    }
    xmlFreeDoc(doc);
    return is_error;
}

sr_status s3_xml_upload_id(char *out, size_t cap, const void *body,
                           size_t len)
{
    xmlDocPtr doc = parse(body, len);
    xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
    sr_status s = SR_OK;
    if (!root || !named(root, "InitiateMultipartUploadResult")) {
        s = SR_FAIL(SR_ERR_FORMAT, "CreateMultipartUpload: response is not "
                    "an InitiateMultipartUploadResult");
        goto out;
    }
    xmlNodePtr id = child(root, "UploadId");
    if (!id || text_of(out, cap, id) != 0 || !out[0])
        s = SR_FAIL(SR_ERR_FORMAT, "CreateMultipartUpload: missing or "
                    "oversized UploadId");
out:
    xmlFreeDoc(doc);
    return s;
}

static sr_status list_entry(xmlNodePtr c, s3_list_fn fn, void *arg)
{
    char key[1024 + 1], size_s[32], mod[64];
    uint64_t size;
    double mtime = 0;
    if (child_text(key, sizeof key, c, "Key") != 0)
        return SR_FAIL(SR_ERR_FORMAT, "ListObjectsV2: key longer than 1024 "
                       "bytes");
    child_text(size_s, sizeof size_s, c, "Size");
    child_text(mod, sizeof mod, c, "LastModified");
    if (!key[0] || parse_u64(&size, size_s) != 0)
        return SR_FAIL(SR_ERR_FORMAT, "ListObjectsV2: entry without Key or "
                       "Size");
    if (mod[0] && creds_parse_time(&mtime, mod) != 0)
        mtime = 0;
    return fn(arg, key, size, mtime);
}

sr_status s3_xml_list_page(const void *body, size_t len, s3_list_fn fn,
                           void *arg, int *truncated,
                           struct sr_buf *next_token)
{
    xmlDocPtr doc = parse(body, len);
    xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
    sr_status s = SR_OK;
    *truncated = 0;
    next_token->len = 0;
    if (!root || !named(root, "ListBucketResult")) {
        s = SR_FAIL(SR_ERR_FORMAT, "ListObjectsV2: response is not a "
                    "ListBucketResult");
        goto out;
    }
    for (xmlNodePtr n = root->children; n && s == SR_OK; n = n->next) {
        if (named(n, "Contents")) {
            s = list_entry(n, fn, arg);
        } else if (named(n, "IsTruncated")) {
            xmlChar *t = xmlNodeGetContent(n);
            *truncated = t && strcmp((const char *)t, "true") == 0;
            xmlFree(t);
        } else if (named(n, "NextContinuationToken")) {
            xmlChar *t = xmlNodeGetContent(n);
            s = buf_append(next_token, t, t ? strlen((const char *)t) : 0);
            xmlFree(t);
        }
    }
    if (s == SR_OK && *truncated && next_token->len == 0)
        s = SR_FAIL(SR_ERR_FORMAT, "ListObjectsV2: truncated page without "
                    "NextContinuationToken");
out:
    xmlFreeDoc(doc);
    return s;
}

sr_status s3_xml_complete_body(struct sr_buf *out,
                               const char (*etags)[S3_ETAG_MAX], size_t n)
{
    xmlBufferPtr xb = xmlBufferCreate();
    xmlTextWriterPtr w = xb ? xmlNewTextWriterMemory(xb, 0) : NULL;
    int rc = w ? 0 : -1;
    if (rc == 0)
        rc = xmlTextWriterStartDocument(w, NULL, "UTF-8", NULL);
    if (rc >= 0)
        rc = xmlTextWriterStartElement(w, BAD_CAST "CompleteMultipartUpload");
    if (rc >= 0)
        rc = xmlTextWriterWriteAttribute(w, BAD_CAST "xmlns", BAD_CAST
                                         "http://s3.amazonaws.com/doc/"
                                         "2006-03-01/");
    for (size_t i = 0; i < n && rc >= 0; i++) {
        rc = xmlTextWriterStartElement(w, BAD_CAST "Part");
        if (rc >= 0)
            rc = xmlTextWriterWriteFormatElement(w, BAD_CAST "PartNumber",
                                                 "%zu", i + 1);
        if (rc >= 0)
            rc = xmlTextWriterWriteElement(w, BAD_CAST "ETag",
                                           BAD_CAST etags[i]);
        if (rc >= 0)
            rc = xmlTextWriterEndElement(w);
    }
    if (rc >= 0)
        rc = xmlTextWriterEndDocument(w);
    xmlFreeTextWriter(w);
    sr_status s = SR_OK;
    out->len = 0;
    if (rc < 0)
        s = SR_FAIL(SR_ERR_NOMEM, "cannot build the CompleteMultipartUpload "
                    "body");
    else
        s = buf_append(out, xmlBufferContent(xb), (size_t)xmlBufferLength(xb));
    xmlBufferFree(xb);
    return s;
}
