/*
 * spot.c: the interruption watcher. The signal handler does nothing but
 * note the first signal's number and time (clock_gettime is
 * async-signal-safe); the metadata thread talks to IMDS (data/s3/metadata.h): a
 * token from PUT /latest/api/token (TTL 6 h, renewed a minute before it
 * runs out or on a 401), then GETs of spot/instance-action and
 * events/recommendations/rebalance every poll interval. 404 means no
 * notice. There is no IMDSv1 fallback.
 */
#include "spot.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../data/s3/metadata.h"

#define TOKEN_TTL 21600
#define PROBE_TIMEOUT_S 1.0

static const int stop_signals[] = { SIGTERM, SIGINT, SIGUSR1, SIGUSR2 };
#define NSIGNALS (int)(sizeof stop_signals / sizeof stop_signals[0])

static volatile sig_atomic_t sig_first;     /* signo of the first signal */
static volatile long sig_sec, sig_nsec;

struct spot_watcher {
    pthread_t thread;
    int running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    double interval;
    char endpoint[256];
    char token[256];
    double token_expires;       /* monotonic */
    struct spot_notice action;  /* kind NONE until an instance-action */
    struct spot_notice rebalance;
    /* set (release) once the notice above is filled in, so the loop's
     * per-step checks are one load each and lock only when there is news */
    atomic_int have_action;
    atomic_int rebalance_pending;
    char rebalance_seen[64];    /* noticeTime of the last one taken */
};

static void on_signal(int signo)
{
    if (!sig_first) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sig_sec = ts.tv_sec;
        sig_nsec = ts.tv_nsec;
        sig_first = signo;
    }
}

double spot_parse_time(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end)
        return -1;
    return (double)timegm(&tm);
}

/* One request to IMDS with the session token (or, for the token itself,
 * its TTL); the HTTP status, 0 when none came. */
static long imds_request(struct spot_watcher *w, const char *method,
                         const char *path, struct metadata_resp *r,
                         double timeout_s)
{
    char url[512], hdr[320];
    snprintf(url, sizeof url, "%s%s", w->endpoint, path);
    if (strcmp(method, "PUT") == 0)
        snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token-ttl-seconds: %d",
                 TOKEN_TTL);
    else
        snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", w->token);
    return metadata_call(r, method, url, hdr, timeout_s) == SR_OK ? r->status
                                                                  : 0;
}

static int fetch_token(struct spot_watcher *w, double timeout_s)
{
    struct metadata_resp r = { 0 };
    long st = imds_request(w, "PUT", "/latest/api/token", &r, timeout_s);
    const char *tok = st == 200 ? str_trim((char *)r.body.data) : "";
    int ok = *tok && str_copy(w->token, sizeof w->token, tok) == 0;
    if (ok)
        w->token_expires = now_s() + TOKEN_TTL - 60;
    buf_free(&r.body);
    return ok;
}

/* GET a notice document; 1 with its JSON when present. */
static int fetch_notice(struct spot_watcher *w, const char *path,
                        json_t **out)
{
    struct metadata_resp r = { 0 };
    long st = imds_request(w, "GET", path, &r, 2.0);
    if (st == 401) {                 /* token expired: renew, ask again */
        w->token[0] = '\0';
        if (fetch_token(w, 2.0))
            st = imds_request(w, "GET", path, &r, 2.0);
    }
    *out = NULL;
    if (st == 200)
        *out = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    else if (st != 404 && st != 0)
        log_debug("instance metadata %s answered %ld", path, st);
    buf_free(&r.body);
    return *out != NULL;
}

static void poll_once(struct spot_watcher *w)
{
    if (!w->token[0] || now_s() > w->token_expires)
        if (!fetch_token(w, 2.0))
            return;
    json_t *j;
    if (fetch_notice(w, "/latest/meta-data/spot/instance-action", &j)) {
        const char *action = json_string_value(json_object_get(j, "action"));
        const char *when = json_string_value(json_object_get(j, "time"));
        pthread_mutex_lock(&w->mu);
        if (w->action.kind == SPOT_NONE && action) {
            w->action.kind = SPOT_INSTANCE_ACTION;
            w->action.noticed = wall_s();
            w->action.deadline = when ? spot_parse_time(when) : 0;
            if (w->action.deadline < 0)
                w->action.deadline = 0;
            snprintf(w->action.what, sizeof w->action.what,
                     "spot instance-action %s at %s", action,
                     when ? when : "an unknown time");
            atomic_store_explicit(&w->have_action, 1, memory_order_release);
        }
        pthread_mutex_unlock(&w->mu);
        json_decref(j);
    }
    if (fetch_notice(w, "/latest/meta-data/events/recommendations/rebalance",
                     &j)) {
        const char *when = json_string_value(json_object_get(j,
                                                             "noticeTime"));
        pthread_mutex_lock(&w->mu);
        if (when && strcmp(when, w->rebalance_seen) != 0) {
            snprintf(w->rebalance_seen, sizeof w->rebalance_seen, "%s", when);
            w->rebalance.kind = SPOT_REBALANCE;
            w->rebalance.noticed = wall_s();
            w->rebalance.deadline = 0;
            snprintf(w->rebalance.what, sizeof w->rebalance.what,
                     "rebalance recommendation of %s", when);
            atomic_store_explicit(&w->rebalance_pending, 1,
                                  memory_order_release);
        }
        pthread_mutex_unlock(&w->mu);
        json_decref(j);
    }
}

static void *watch_main(void *arg)
{
    struct spot_watcher *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        pthread_mutex_unlock(&w->mu);
        poll_once(w);
        pthread_mutex_lock(&w->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double t = (double)until.tv_sec + (double)until.tv_nsec * 1e-9 +
                   w->interval;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
        while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &until) !=
               ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

sr_status spot_start(struct spot_watcher **out, const struct spot_opts *o)
{
    struct spot_watcher *w = calloc(1, sizeof *w);
    if (!w)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->interval = o->poll_interval_s > 0 ? o->poll_interval_s : 5;
    sig_first = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < NSIGNALS; i++)
        sigaction(stop_signals[i], &sa, NULL);

    if (imds_endpoint(w->endpoint, sizeof w->endpoint) != SR_OK) {
        log_warn("%s: spot notices come from signals only", sr_errmsg_user());
        w->endpoint[0] = '\0';
    }
    if (o->poll_metadata && w->endpoint[0] && !imds_disabled()) {
        if (!fetch_token(w, PROBE_TIMEOUT_S))
            log_debug("no instance metadata service answered at %s: spot "
                      "notices come from signals only", w->endpoint);
        else if (pthread_create(&w->thread, NULL, watch_main, w) == 0)
            w->running = 1;
    }
    *out = w;
    return SR_OK;
}

int spot_stop_requested(struct spot_watcher *w, struct spot_notice *out)
{
    if (sig_first) {
        memset(out, 0, sizeof *out);
        out->kind = SPOT_SIGNAL;
        out->signo = sig_first;
        out->noticed = (double)sig_sec + (double)sig_nsec * 1e-9;
        const char *name = sig_first == SIGTERM ? "SIGTERM"
                         : sig_first == SIGINT ? "SIGINT"
                         : sig_first == SIGUSR1 ? "SIGUSR1" : "SIGUSR2";
        snprintf(out->what, sizeof out->what, "%s", name);
        return 1;
    }
    if (!w || !atomic_load_explicit(&w->have_action, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&w->mu);
    *out = w->action;
    pthread_mutex_unlock(&w->mu);
    return 1;
}

int spot_take_rebalance(struct spot_watcher *w, struct spot_notice *out)
{
    if (!w || !atomic_load_explicit(&w->rebalance_pending,
                                    memory_order_acquire))
        return 0;
    pthread_mutex_lock(&w->mu);
    *out = w->rebalance;
    atomic_store_explicit(&w->rebalance_pending, 0, memory_order_relaxed);
    pthread_mutex_unlock(&w->mu);
    return 1;
}

int spot_polling(const struct spot_watcher *w)
{
    return w && w->running;
}

void spot_stop(struct spot_watcher *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->running)
        pthread_join(w->thread, NULL);
    /* the handlers stay: a notice that reaches a run while it winds down
     * after its last step must not turn a finished run into a killed one */
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
