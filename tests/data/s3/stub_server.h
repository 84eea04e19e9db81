/*
 * stub_server.h: a loopback HTTP/1.1 server on a thread, for unit tests of
 * the S3 client and the credential providers. Each request, headers and
 * body read in full, goes to the test's handler, which fills the reply;
 * every connection is closed after its reply. The handler runs on the
 * server thread; the server counts requests.
 */
#ifndef SPOTRUN_TEST_STUB_SERVER_H
#define SPOTRUN_TEST_STUB_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct stub_req {
    char method[16];
    char target[2048];          /* path and query, as sent */
    char head[8192];            /* the raw header block */
    uint8_t *body;
    size_t body_len;
};

struct stub_reply {
    int status;
    char headers[20480];        /* extra "Name: value\r\n" lines */
    char body[16384];
    const uint8_t *data;        /* when set, sent instead of body */
    size_t data_len;
    int reset;                  /* close the connection without a reply */
    int truncated;              /* send half the body, then close */
    int delay_ms;               /* wait this long before replying */
};

typedef void (*stub_handler)(void *arg, const struct stub_req *r,
                             struct stub_reply *out);

struct stub_server {
    int fd;
    int port;
    pthread_t th;
    atomic_int stop;
    atomic_int requests;
    stub_handler handler;
    void *arg;
};

/* Listen on 127.0.0.1 at a free port and serve until stub_stop. */
void stub_start(struct stub_server *s, stub_handler h, void *arg);
void stub_stop(struct stub_server *s);

/* The value of request header `name` (case-insensitive), or "". */
void stub_header(const struct stub_req *r, const char *name, char *out,
                 size_t cap);

/* A loopback port nothing listens on. */
int stub_closed_port(void);

#endif
