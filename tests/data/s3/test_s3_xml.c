/*
 * test_s3_xml.c: parsing S3's XML (error documents with and without the
 * S3 namespace, InitiateMultipartUploadResult, ListBucketResult pages) and
 * building the CompleteMultipartUpload body; malformed input is an error,
 * never a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <string.h>

#include "data/s3/s3_xml.h"

static void test_s3_xml__error_document(void **state)
{
    (void)state;
    struct s3_xml_error e;
    const char *doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<Error><Code>SignatureDoesNotMatch</Code><Message>The request "
        "signature we calculated does not match</Message><StringToSign>x"
        "</StringToSign><RequestId>4442587FB7D0A2F9</RequestId></Error>";
    assert_int_equal(s3_xml_error_parse(&e, doc, strlen(doc)), 1);
    assert_string_equal(e.code, "SignatureDoesNotMatch");
    assert_string_equal(e.message, "The request signature we calculated does "
                        "not match");
    assert_string_equal(e.request_id, "4442587FB7D0A2F9");

    /* the 200 answer of a CompleteMultipartUpload that failed late */
    const char *late = "<?xml version=\"1.0\"?>\n\n   \n<Error xmlns=\"http://"
        "s3.amazonaws.com/doc/2006-03-01/\"><Code>InternalError</Code>"
        "<Message>We encountered an internal error.</Message></Error>";
    assert_int_equal(s3_xml_error_parse(&e, late, strlen(late)), 1);
    assert_string_equal(e.code, "InternalError");

    const char *ok = "<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag>"
                     "</CompleteMultipartUploadResult>";
    assert_int_equal(s3_xml_error_parse(&e, ok, strlen(ok)), 0);
    assert_int_equal(s3_xml_error_parse(&e, "not xml <", 9), 0);
    assert_int_equal(s3_xml_error_parse(&e, "", 0), 0);
}

static void test_s3_xml__upload_id(void **state)
{
    (void)state;
    char id[64];
    const char *doc = "<InitiateMultipartUploadResult xmlns=\"http://s3."
        "amazonaws.com/doc/2006-03-01/\"><Bucket>b</Bucket><Key>k</Key>"
        "<UploadId>VXBsb2FkIElE-42</UploadId></InitiateMultipartUploadResult>";
    assert_int_equal(s3_xml_upload_id(id, sizeof id, doc, strlen(doc)), SR_OK);
    assert_string_equal(id, "VXBsb2FkIElE-42");
    const char *none = "<InitiateMultipartUploadResult><Key>k</Key>"
                       "</InitiateMultipartUploadResult>";
    assert_int_equal(s3_xml_upload_id(id, sizeof id, none, strlen(none)),
                     SR_ERR_FORMAT);
    assert_int_equal(s3_xml_upload_id(id, 4, doc, strlen(doc)),
                     SR_ERR_FORMAT);
    assert_int_equal(s3_xml_upload_id(id, sizeof id, "<a>", 3),
                     SR_ERR_FORMAT);
}

struct seen {
    int n;
    char keys[4][64];
    uint64_t sizes[4];
    double mtimes[4];
};

static sr_status on_entry(void *arg, const char *key, uint64_t size,
                          double mtime)
{
    struct seen *s = arg;
    if (s->n == 4)
        return SR_FAIL(SR_ERR_INTERNAL, "too many");
    snprintf(s->keys[s->n], sizeof s->keys[0], "%s", key);
    s->sizes[s->n] = size;
    s->mtimes[s->n] = mtime;
    s->n++;
    return SR_OK;
}

static void test_s3_xml__list_page(void **state)
{
    (void)state;
    struct sr_buf token = { 0 };
    struct seen s = { 0 };
    int truncated = 0;
    const char *page = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<Name>b</Name><Prefix>d/</Prefix><KeyCount>2</KeyCount>"
        "<MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
        "<Contents><Key>d/a &amp; b</Key><LastModified>2009-10-12T17:50:30."
        "000Z</LastModified><ETag>\"e\"</ETag><Size>434234</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        "<Contents><Key>d/\xc3\xa9</Key><Size>0</Size></Contents>"
        "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOw"
        "M=</NextContinuationToken></ListBucketResult>";
    assert_int_equal(s3_xml_list_page(page, strlen(page), on_entry, &s,
                                      &truncated, &token), SR_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.keys[0], "d/a & b");
    assert_int_equal(s.sizes[0], 434234);
    assert_true(s.mtimes[0] == 1255369830.0);
    assert_string_equal(s.keys[1], "d/\xc3\xa9");
    assert_true(s.mtimes[1] == 0);
    assert_true(truncated);
    assert_string_equal((const char *)token.data, "1ueGcxLPRx1Tr/XYExHnhbYLgv"
                        "eDs2J/wm36Hy4vbOwM=");

    const char *last = "<ListBucketResult><IsTruncated>false</IsTruncated>"
                       "</ListBucketResult>";
    assert_int_equal(s3_xml_list_page(last, strlen(last), on_entry, &s,
                                      &truncated, &token), SR_OK);
    assert_false(truncated);
    assert_int_equal(token.len, 0);

    const char *bad = "<ListBucketResult><IsTruncated>true</IsTruncated>"
                      "</ListBucketResult>";
    assert_int_equal(s3_xml_list_page(bad, strlen(bad), on_entry, &s,
                                      &truncated, &token), SR_ERR_FORMAT);
    const char *nosize = "<ListBucketResult><Contents><Key>k</Key>"
                         "</Contents></ListBucketResult>";
    assert_int_equal(s3_xml_list_page(nosize, strlen(nosize), on_entry, &s,
                                      &truncated, &token), SR_ERR_FORMAT);
    assert_int_equal(s3_xml_list_page("<Error/>", 8, on_entry, &s,
                                      &truncated, &token), SR_ERR_FORMAT);
    buf_free(&token);
}

static void test_s3_xml__complete_body(void **state)
{
    (void)state;
    char etags[3][S3_ETAG_MAX] = { "\"a1\"", "\"b2\"", "\"c<3&\"" };
    struct sr_buf b = { 0 };
    assert_int_equal(s3_xml_complete_body(&b, (const char (*)[S3_ETAG_MAX])
                                          etags, 3), SR_OK);
    xmlDocPtr doc = xmlReadMemory((const char *)b.data, (int)b.len, NULL,
                                  NULL, XML_PARSE_NONET);
    assert_non_null(doc);
    xmlNodePtr root = xmlDocGetRootElement(doc);
    assert_string_equal((const char *)root->name, "CompleteMultipartUpload");
    int n = 0;
    for (xmlNodePtr p = root->children; p; p = p->next) {
        if (p->type != XML_ELEMENT_NODE)
            continue;
        assert_string_equal((const char *)p->name, "Part");
        xmlChar *t = xmlNodeGetContent(p);
        char want[S3_ETAG_MAX + 16];
        snprintf(want, sizeof want, "%d%s", n + 1, etags[n]);
        assert_string_equal((const char *)t, want);
        xmlFree(t);
        n++;
    }
    assert_int_equal(n, 3);
    xmlFreeDoc(doc);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s3_xml__error_document),
        cmocka_unit_test(test_s3_xml__upload_id),
        cmocka_unit_test(test_s3_xml__list_page),
        cmocka_unit_test(test_s3_xml__complete_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
