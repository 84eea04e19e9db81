/*
 * stub_server.c: the test HTTP server. One connection at a time: read the
 * header block, then Content-Length bytes of body, call the handler, write
 * the reply with Connection: close.
 */
#include "stub_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

void stub_header(const struct stub_req *r, const char *name, char *out,
                 size_t cap)
{
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *p = strstr(r->head, "\r\n"); p;
         p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
            const char *v = p + 3 + nl;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
    }
}

static int read_request(int c, struct stub_req *r)
{
    size_t len = 0;
    char *end = NULL;
    r->head[0] = '\0';
    while (!end) {
        if (len == sizeof r->head - 1)
            return -1;
        ssize_t k = read(c, r->head + len, sizeof r->head - 1 - len);
        if (k <= 0)
            return -1;
        len += (size_t)k;
        r->head[len] = '\0';
        end = strstr(r->head, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end - r->head) + 4;
    char cl[32];
    end[2] = '\0';
    if (sscanf(r->head, "%15s %2047s", r->method, r->target) != 2)
        return -1;
    stub_header(r, "Content-Length", cl, sizeof cl);
    r->body_len = cl[0] ? strtoul(cl, NULL, 10) : 0;
    r->body = malloc(r->body_len + 1);
    if (!r->body)
        return -1;
    size_t have = len - hlen;
    if (have > r->body_len)
        have = r->body_len;
    memcpy(r->body, r->head + hlen, have);
    while (have < r->body_len) {
        ssize_t k = read(c, r->body + have, r->body_len - have);
        if (k <= 0)
            return -1;
        have += (size_t)k;
    }
    r->body[r->body_len] = 0;
    return 0;
}

static int write_all(int c, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t k = send(c, b, n, MSG_NOSIGNAL);  /* a client gone: EPIPE */
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static void serve(struct stub_server *s, int c)
{
    struct stub_req *r = calloc(1, sizeof *r);
    struct stub_reply *out = calloc(1, sizeof *out);
    if (r && out && read_request(c, r) == 0) {
        atomic_fetch_add(&s->requests, 1);
        out->status = 200;
        s->handler(s->arg, r, out);
        const void *body = out->data ? (const void *)out->data : out->body;
        size_t len = out->data ? out->data_len : strlen(out->body);
        size_t nsend = strcmp(r->method, "HEAD") == 0 ? 0 : len;
        if (out->truncated)
            nsend /= 2;
        if (out->delay_ms > 0)
            usleep((useconds_t)out->delay_ms * 1000);
        if (!out->reset) {
            char head[sizeof out->headers + 128];
            int n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n"
                             "%s\r\n", out->status, len, out->headers);
            /* (a client gone is a test's timeout: not worth a word) */
            if ((write_all(c, head, (size_t)n) != 0 ||
                 write_all(c, body, nsend) != 0) && errno != EPIPE &&
                errno != ECONNRESET)
                perror("stub_server: write");
        }
    }
    if (r)
        free(r->body);
    free(r);
    free(out);
}

static void *run(void *arg)
{
    struct stub_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = { .fd = s->fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve(s, c);
        close(c);
    }
    return NULL;
}

static int bind_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        perror("stub_server: bind");
        abort();
    }
    *port = ntohs(a.sin_port);
    return fd;
}

void stub_start(struct stub_server *s, stub_handler h, void *arg)
{
    memset(s, 0, sizeof *s);
    s->handler = h;
    s->arg = arg;
    s->fd = bind_loopback(&s->port);
    if (listen(s->fd, 64) != 0 || pthread_create(&s->th, NULL, run, s)) {
        perror("stub_server: start");
        abort();
    }
}

void stub_stop(struct stub_server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    close(s->fd);
}

int stub_closed_port(void)
{
    int port;
    close(bind_loopback(&port));
    return port;
}
