/* onepanel-sim: the HTTP worker process.
 *
 * A single-threaded poll() loop over the shared listening socket, up to
 * MAX_CONNS non-blocking connections and a signalfd:
 *   SIGTERM/SIGINT  exit at once           SIGQUIT  graceful: stop accepting,
 *   SIGUSR1         reopen the log files            finish requests, exit
 * HTTP/1.1 with keep-alive and pipelining, HTTP/1.0 (keep-alive on request);
 * GET|HEAD / and /healthz answer 200, anything else 404. The access-log line
 * of a request is written before its response is sent, so a client that has
 * its answer can rely on the line being in the log. */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define MAX_CONNS 256
#define KEEPALIVE_TIMEOUT 5.0   /* idle keep-alive connection */
#define IO_TIMEOUT 10.0         /* inside a request or sending a response */
#define LINGER_TIMEOUT 2.0      /* draining input after the last response */
#define QUIT_TIMEOUT 5.0        /* graceful shutdown gives up after this */
#define KEEPALIVE_REQUESTS 1000
#define BODY_MAX (1024 * 1024)
#define OUT_MAX (SIM_MESSAGE_MAX + 2048)

struct conn {
    int fd;
    bool dead;
    bool close_after;   /* close once the pending output is sent */
    bool lingering;     /* write side shut, draining input until EOF */
    unsigned requests;
    size_t inlen;
    size_t outlen, outoff;
    size_t discard;     /* request body bytes still to skip */
    double started;     /* when the current request began */
    double deadline;
    char addr[INET6_ADDRSTRLEN];
    char in[SIM_HEADER_MAX];
    char out[OUT_MAX];
};

static const struct sim_worker_ctx *W;
static struct conn *conns[MAX_CONNS];
static int nconns;
static int listen_fd = -1;
static int sig_fd = -1;
static bool quitting;
static double quit_deadline;
static double accept_paused_until;

static void worker_exit(int code) __attribute__((noreturn));

static void worker_exit(int code)
{
    for (int i = 0; i < nconns; i++) {
        close(conns[i]->fd);
        free(conns[i]);
    }
    nconns = 0;
    if (listen_fd >= 0)
        close(listen_fd);
    if (sig_fd >= 0)
        close(sig_fd);
    sim_logs_close(&sim_logs);
    _exit(code);
}

static bool conn_idle(const struct conn *c)
{
    return c->inlen == 0 && c->outoff == c->outlen && c->discard == 0 && !c->lingering;
}

static void conn_touch(struct conn *c, double now)
{
    if (c->lingering)
        return;
    c->deadline = now + (conn_idle(c) ? KEEPALIVE_TIMEOUT : IO_TIMEOUT);
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 413: return "Request Entity Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* Queue a whole response in c->out. */
static void queue_response(struct conn *c, int status, bool head, const char *body, size_t blen,
                           bool keep)
{
    char date[64];
    struct sim_buf b;

    sim_time_http(date, sizeof(date));
    sim_buf_init(&b, c->out, sizeof(c->out));
    sim_buf_printf(&b,
                   "HTTP/1.1 %d %s\r\n"
                   "Server: " SIM_NAME "/" SIM_VERSION "\r\n"
                   "Date: %s\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n"
                   "Connection: %s\r\n"
                   "X-Onepanel-Generation: %u\r\n"
                   "X-Onepanel-Worker: %d\r\n"
                   "\r\n",
                   status, status_text(status), date, blen, keep ? "keep-alive" : "close",
                   W->generation, (int)getpid());
    if (!head)
        sim_buf_put(&b, body, blen);
    c->outlen = b.len;
    c->outoff = 0;
    if (!keep)
        c->close_after = true;
}

static size_t header_end(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != '\n')
            continue;
        if (i + 1 < n && b[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static bool token_in_list(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

static void access_log(const struct conn *c, const char *req, size_t reqlen, int status,
                       size_t bytes, const char *ref, size_t reflen, const char *ua, size_t ualen)
{
    char line[SIM_LINE_MAX];
    if (sim_logs.access_fd < 0)
        return;
    double rt = sim_monotonic() - c->started;
    if (rt < 0)
        rt = 0;
    struct sim_access_entry e = {
        .remote_addr = c->addr,
        .request = req,
        .request_len = reqlen,
        .status = status,
        .body_bytes = bytes,
        .referer = ref,
        .referer_len = reflen,
        .user_agent = ua,
        .user_agent_len = ualen,
        .request_time = rt,
        .upstream_time = rt,
    };
    size_t n = sim_access_format(line, sizeof(line), &e, W->cfg->access_format);
    sim_write_all(sim_logs.access_fd, line, n);
}

/* Answer a request that cannot be parsed: log it, queue STATUS, close after. */
static void reject(struct conn *c, const char *req, size_t reqlen, int status)
{
    char body[64];
    int blen = snprintf(body, sizeof(body), "%d %s\n", status, status_text(status));
    access_log(c, req, reqlen, status, (size_t)blen, NULL, 0, NULL, 0);
    queue_response(c, status, false, body, (size_t)blen, false);
    c->inlen = 0;
    c->discard = 0;
}

/* Handle the request whose header block is c->in[0, hlen). */
static void handle_request(struct conn *c, size_t hlen)
{
    const char *h = c->in, *end = c->in + hlen;
    const char *nl = memchr(h, '\n', hlen);
    const char *rl_end = nl;
    if (rl_end > h && rl_end[-1] == '\r')
        rl_end--;
    size_t rl_len = (size_t)(rl_end - h);

    /* request line: METHOD SP TARGET SP HTTP/x.y */
    const char *sp1 = memchr(h, ' ', rl_len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(rl_end - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == h || sp2 == sp1 + 1 || sp2 + 1 >= rl_end ||
        memchr(sp2 + 1, ' ', (size_t)(rl_end - sp2 - 1)) != NULL) {
        reject(c, h, rl_len, 400);
        return;
    }
    for (const char *q = h; q < sp1; q++) {
        if (*q < 'A' || *q > 'Z') {
            reject(c, h, rl_len, 400);
            return;
        }
    }
    const char *target = sp1 + 1;
    size_t target_len = (size_t)(sp2 - target);
    const char *ver = sp2 + 1;
    size_t ver_len = (size_t)(rl_end - ver);
    int minor;
    if (ver_len == 8 && memcmp(ver, "HTTP/1.1", 8) == 0) {
        minor = 1;
    } else if (ver_len == 8 && memcmp(ver, "HTTP/1.0", 8) == 0) {
        minor = 0;
    } else if (ver_len >= 5 && memcmp(ver, "HTTP/", 5) == 0) {
        reject(c, h, rl_len, 505);
        return;
    } else {
        reject(c, h, rl_len, 400);
        return;
    }

    /* headers */
    bool has_host = false, te = false, conn_close = false, conn_keep = false;
    long long clen = 0;
    bool has_clen = false;
    const char *ua = NULL, *ref = NULL;
    size_t ua_len = 0, ref_len = 0;
    const char *line = nl + 1;
    while (line < end) {
        const char *le = memchr(line, '\n', (size_t)(end - line));
        if (le == NULL)
            le = end;
        const char *lend = le;
        if (lend > line && lend[-1] == '\r')
            lend--;
        if (lend == line)
            break; /* the empty line */
        if (*line == ' ' || *line == '\t') { /* obsolete line folding */
            reject(c, h, rl_len, 400);
            return;
        }
        const char *colon = memchr(line, ':', (size_t)(lend - line));
        if (colon == NULL || colon == line) {
            reject(c, h, rl_len, 400);
            return;
        }
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        while (v < lend && (*v == ' ' || *v == '\t'))
            v++;
        const char *ve = lend;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);

#define HDR_IS(s) (nlen == sizeof(s) - 1 && strncasecmp(line, s, nlen) == 0)
        if (HDR_IS("host")) {
            has_host = true;
        } else if (HDR_IS("user-agent")) {
            ua = v;
            ua_len = vlen;
        } else if (HDR_IS("referer")) {
            ref = v;
            ref_len = vlen;
        } else if (HDR_IS("connection")) {
            if (token_in_list(v, vlen, "close"))
                conn_close = true;
            if (token_in_list(v, vlen, "keep-alive"))
                conn_keep = true;
        } else if (HDR_IS("transfer-encoding")) {
            te = true;
        } else if (HDR_IS("content-length")) {
            long long n = 0;
            if (vlen == 0 || vlen > 15) {
                reject(c, h, rl_len, 400);
                return;
            }
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9') {
                    reject(c, h, rl_len, 400);
                    return;
                }
                n = n * 10 + (v[i] - '0');
            }
            if (has_clen && n != clen) {
                reject(c, h, rl_len, 400);
                return;
            }
            has_clen = true;
            clen = n;
        }
#undef HDR_IS
        line = le + 1;
    }

    if (minor == 1 && !has_host) {
        reject(c, h, rl_len, 400);
        return;
    }
    if (te) {
        reject(c, h, rl_len, 501);
        return;
    }
    if (clen > BODY_MAX) {
        reject(c, h, rl_len, 413);
        return;
    }

    bool keep = minor == 1 ? !conn_close : (conn_keep && !conn_close);
    if (quitting || c->requests + 1 >= KEEPALIVE_REQUESTS)
        keep = false;

    /* routing: the path without the query string */
    size_t path_len = target_len;
    const char *qm = memchr(target, '?', target_len);
    if (qm)
        path_len = (size_t)(qm - target);
    bool get = (sp1 - h == 3 && memcmp(h, "GET", 3) == 0);
    bool head = (sp1 - h == 4 && memcmp(h, "HEAD", 4) == 0);

    char body[SIM_MESSAGE_MAX + 256];
    int status;
    int blen;
    if ((get || head) && path_len == 1 && target[0] == '/') {
        status = 200;
        blen = snprintf(body, sizeof(body), "message: %s\ngeneration: %u\nworker: %d\n",
                        W->cfg->message, W->generation, (int)getpid());
    } else if ((get || head) && path_len == 8 && memcmp(target, "/healthz", 8) == 0) {
        status = 200;
        blen = snprintf(body, sizeof(body), "ok");
    } else {
        status = 404;
        blen = snprintf(body, sizeof(body), "404 Not Found\n");
    }
    if (blen < 0)
        blen = 0;
    if ((size_t)blen >= sizeof(body))
        blen = (int)sizeof(body) - 1;

    access_log(c, h, rl_len, status, head ? 0 : (size_t)blen, ref, ref_len, ua, ua_len);
    queue_response(c, status, head, body, (size_t)blen, keep);
    c->requests++;

    memmove(c->in, c->in + hlen, c->inlen - hlen);
    c->inlen -= hlen;
    c->discard = (size_t)clen;
}

static void conn_start_linger(struct conn *c, double now)
{
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->inlen = 0;
    c->discard = 0;
    c->deadline = now + LINGER_TIMEOUT;
}

/* Send pending output; true when all of it is gone. */
static bool conn_flush(struct conn *c, double now)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return false;
            c->dead = true;
            return false;
        }
        c->outoff += (size_t)n;
        c->deadline = now + IO_TIMEOUT;
    }
    c->outoff = c->outlen = 0;
    if (c->close_after)
        conn_start_linger(c, now);
    return true;
}

/* Handle as many buffered requests as possible. */
static void conn_process(struct conn *c, double now)
{
    while (!c->dead && !c->lingering && c->outoff == c->outlen) {
        if (c->discard > 0) {
            size_t k = c->discard < c->inlen ? c->discard : c->inlen;
            memmove(c->in, c->in + k, c->inlen - k);
            c->inlen -= k;
            c->discard -= k;
            if (c->discard > 0)
                break;
        }
        /* tolerate empty lines between pipelined requests */
        size_t skip = 0;
        while (skip < c->inlen && (c->in[skip] == '\r' || c->in[skip] == '\n'))
            skip++;
        if (skip) {
            memmove(c->in, c->in + skip, c->inlen - skip);
            c->inlen -= skip;
        }
        if (c->inlen == 0)
            break;
        size_t hlen = header_end(c->in, c->inlen);
        if (hlen == 0) {
            if (c->inlen >= sizeof(c->in)) {
                const char *nl = memchr(c->in, '\n', c->inlen);
                size_t rl = nl ? (size_t)(nl - c->in) : 1024;
                if (rl > 0 && c->in[rl - 1] == '\r')
                    rl--;
                reject(c, c->in, rl, 400);
                conn_flush(c, now);
            }
            break;
        }
        handle_request(c, hlen);
        conn_flush(c, now);
        c->started = now;
    }
    conn_touch(c, now);
}

static void conn_read(struct conn *c, double now)
{
    char scratch[4096];
    for (;;) {
        char *dst;
        size_t room;
        bool sink = c->lingering || c->discard > 0;
        if (c->outoff < c->outlen && !c->lingering)
            break; /* back-pressure: nothing more until the answer is out */
        if (sink) {
            dst = scratch;
            room = sizeof(scratch);
            if (!c->lingering && c->discard < room)
                room = c->discard;
        } else {
            dst = c->in + c->inlen;
            room = sizeof(c->in) - c->inlen;
            if (room == 0)
                break;
        }
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dead = true;
            break;
        }
        if (n == 0) {
            c->dead = true; /* peer closed (or finished after our last answer) */
            break;
        }
        if (c->lingering)
            continue;
        if (conn_idle(c))
            c->started = now;
        if (sink)
            c->discard -= (size_t)n;
        else
            c->inlen += (size_t)n;
        conn_process(c, now);
        if (c->dead)
            break;
    }
    conn_touch(c, now);
}

static void accept_new(double now)
{
    for (int k = 0; k < 64 && nconns < MAX_CONNS; k++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            sim_log(SIM_ALERT, "accept4() failed (%d: %s)", errno, strerror(errno));
            accept_paused_until = now + 0.5;
            return;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            sim_log(SIM_ALERT, "out of memory for a connection");
            close(fd);
            continue;
        }
        c->fd = fd;
        c->started = now;
        if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&ss)->sin6_addr, c->addr,
                      sizeof(c->addr));
        else if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&ss)->sin_addr, c->addr,
                      sizeof(c->addr));
        else
            snprintf(c->addr, sizeof(c->addr), "-");
        conn_touch(c, now);
        conns[nconns++] = c;
    }
}

/* While quitting, idle keep-alive connections are closed at once; a fresh
 * connection that has not sent its request yet gets a short grace period
 * (it was accepted before the quit, its request is most likely in flight). */
static void quit_check(struct conn *c, double now)
{
    if (!conn_idle(c))
        return;
    if (c->requests > 0)
        c->dead = true;
    else if (c->deadline > now + 1.0)
        c->deadline = now + 1.0;
}

static void begin_quit(double now)
{
    if (quitting)
        return;
    quitting = true;
    quit_deadline = now + QUIT_TIMEOUT;
    if (listen_fd >= 0) {
        close(listen_fd);
        listen_fd = -1;
    }
    for (int i = 0; i < nconns; i++)
        quit_check(conns[i], now);
}

static void reopen_logs(void)
{
    struct sim_logs nl;
    char err[SIM_ERR_MAX];
    if (sim_logs_open(W->cfg, &nl, err, sizeof(err)) != 0) {
        sim_log(SIM_ALERT, "%s", err);
        return;
    }
    sim_logs_close(&sim_logs);
    sim_logs = nl;
    sim_log(SIM_NOTICE, "reopening logs");
}

static void handle_signals(double now)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(sig_fd, &si, sizeof(si));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(si))
            return;
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGINT:
            worker_exit(0);
        case SIGQUIT:
            begin_quit(now);
            break;
        case SIGUSR1:
            reopen_logs();
            break;
        default:
            break;
        }
    }
}

static void reap_dead(void)
{
    int j = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = conns[i];
        if (c->dead) {
            close(c->fd);
            free(c);
        } else {
            conns[j++] = c;
        }
    }
    nconns = j;
}

void sim_worker_run(const struct sim_worker_ctx *ctx)
{
    W = ctx;
    listen_fd = ctx->listen_fd;

    /* never outlive the master */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != ctx->master_pid)
        worker_exit(0);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_SETMASK, &set, NULL);
    sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0) {
        sim_log(SIM_ALERT, "signalfd() failed (%d: %s)", errno, strerror(errno));
        worker_exit(2);
    }

    struct pollfd pfds[2 + MAX_CONNS];
    struct conn *polled[MAX_CONNS];

    for (;;) {
        double now = sim_monotonic();
        for (int i = 0; i < nconns; i++)
            if (now >= conns[i]->deadline)
                conns[i]->dead = true;
        reap_dead();
        if (quitting && (nconns == 0 || now >= quit_deadline))
            worker_exit(0);

        int np = 0, nc = 0, listen_slot = -1;
        double next = quitting ? quit_deadline : -1;
        pfds[np++] = (struct pollfd){ .fd = sig_fd, .events = POLLIN };
        if (listen_fd >= 0 && nconns < MAX_CONNS) {
            if (now >= accept_paused_until) {
                listen_slot = np;
                pfds[np++] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
            } else if (next < 0 || accept_paused_until < next) {
                next = accept_paused_until;
            }
        }
        for (int i = 0; i < nconns; i++) {
            struct conn *c = conns[i];
            short ev = (c->outoff < c->outlen && !c->lingering) ? POLLOUT : POLLIN;
            pfds[np++] = (struct pollfd){ .fd = c->fd, .events = ev };
            polled[nc++] = c;
            if (next < 0 || c->deadline < next)
                next = c->deadline;
        }
        int timeout = -1;
        if (next >= 0) {
            double ms = (next - now) * 1000.0 + 1.0;
            timeout = ms < 0 ? 0 : ms > 600000 ? 600000 : (int)ms;
        }

        int r = poll(pfds, (nfds_t)np, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            sim_log(SIM_ALERT, "poll() failed (%d: %s)", errno, strerror(errno));
            worker_exit(2);
        }
        now = sim_monotonic();
        if (pfds[0].revents)
            handle_signals(now);
        if (listen_slot >= 0 && listen_fd >= 0 && (pfds[listen_slot].revents & POLLIN))
            accept_new(now);
        int base = np - nc;
        for (int i = 0; i < nc; i++) {
            struct conn *c = polled[i];
            short re = pfds[base + i].revents;
            if (re == 0 || c->dead)
                continue;
            if (pfds[base + i].events & POLLOUT) {
                if (conn_flush(c, now))
                    conn_process(c, now);
                else if (re & (POLLERR | POLLHUP | POLLNVAL))
                    c->dead = true;
            } else {
                conn_read(c, now);
            }
            if (quitting)
                quit_check(c, now);
        }
    }
}
