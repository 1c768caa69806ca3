/* onepanel-sim: log files, nginx-style line formatting and synthetic lines.
 *
 * Every line is built in a bounded buffer and written with a single write()
 * to a descriptor opened with O_APPEND, so lines from the master and the
 * workers never interleave inside a line. */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sim_logs sim_logs = { .error_fd = STDERR_FILENO, .access_fd = -1 };

static const char *const level_names[] = {
    "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
};

const char *sim_level_name(enum sim_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "debug";
    return level_names[level];
}

void sim_write_all(int fd, const char *buf, size_t len)
{
    if (fd < 0)
        return;
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (n == 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

int sim_log_open(const char *path, char *err, size_t errlen)
{
    int fd;
    do {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        snprintf(err, errlen, "open() \"%s\" failed (%d: %s)", path, errno, strerror(errno));
    return fd;
}

int sim_logs_open(const struct sim_config *c, struct sim_logs *out, char *err, size_t errlen)
{
    out->error_fd = STDERR_FILENO;
    out->access_fd = -1;
    if (c->error_log[0]) {
        out->error_fd = sim_log_open(c->error_log, err, errlen);
        if (out->error_fd < 0) {
            out->error_fd = STDERR_FILENO;
            return -1;
        }
    }
    if (c->access_log[0]) {
        out->access_fd = sim_log_open(c->access_log, err, errlen);
        if (out->access_fd < 0) {
            sim_logs_close(out);
            return -1;
        }
    }
    return 0;
}

void sim_logs_close(struct sim_logs *l)
{
    if (l->error_fd > STDERR_FILENO)
        close(l->error_fd);
    if (l->access_fd > STDERR_FILENO)
        close(l->access_fd);
    l->error_fd = STDERR_FILENO;
    l->access_fd = -1;
}

/* ---- bounded string builder ---- */

void sim_buf_init(struct sim_buf *b, char *storage, size_t cap)
{
    b->p = storage;
    b->cap = cap;
    b->len = 0;
    if (cap)
        storage[0] = '\0';
}

void sim_buf_put(struct sim_buf *b, const char *s, size_t n)
{
    if (b->cap == 0 || b->len + 1 >= b->cap)
        return;
    size_t room = b->cap - 1 - b->len;
    if (n > room)
        n = room;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sim_buf_puts(struct sim_buf *b, const char *s)
{
    sim_buf_put(b, s, strlen(s));
}

void sim_buf_printf(struct sim_buf *b, const char *fmt, ...)
{
    if (b->cap == 0 || b->len + 1 >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->p[b->len] = '\0';
        return;
    }
    b->len += (size_t)n;
    if (b->len > b->cap - 1)
        b->len = b->cap - 1;
}

void sim_buf_escaped(struct sim_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (s == NULL || n == 0) {
        sim_buf_put(b, "-", 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\' || ch < 0x20 || ch > 0x7e) {
            char e[4] = { '\\', 'x', hex[ch >> 4], hex[ch & 15] };
            sim_buf_put(b, e, 4);
        } else {
            char c = (char)ch;
            sim_buf_put(b, &c, 1);
        }
    }
}

/* ---- time ---- */

static void local_now(struct tm *tm)
{
    time_t now = time(NULL);
    if (localtime_r(&now, tm) == NULL)
        memset(tm, 0, sizeof(*tm));
}

void sim_time_errlog(char *out, size_t outlen)
{
    struct tm tm;
    local_now(&tm);
    if (strftime(out, outlen, "%Y/%m/%d %H:%M:%S", &tm) == 0 && outlen)
        out[0] = '\0';
}

void sim_time_access(char *out, size_t outlen)
{
    /* No setlocale() anywhere, so %b is the C locale's English month. */
    struct tm tm;
    local_now(&tm);
    if (strftime(out, outlen, "%d/%b/%Y:%H:%M:%S %z", &tm) == 0 && outlen)
        out[0] = '\0';
}

void sim_time_http(char *out, size_t outlen)
{
    struct tm tm;
    time_t now = time(NULL);
    if (gmtime_r(&now, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    if (strftime(out, outlen, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0 && outlen)
        out[0] = '\0';
}

double sim_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- error log ---- */

void sim_vlog_pid(enum sim_level level, pid_t pid, const char *fmt, va_list ap)
{
    char line[SIM_LINE_MAX];
    char ts[32];
    struct sim_buf b;

    sim_time_errlog(ts, sizeof(ts));
    sim_buf_init(&b, line, sizeof(line) - 1); /* keep room for the newline */
    sim_buf_printf(&b, "%s [%s] %d#%d: ", ts, sim_level_name(level), (int)pid, (int)pid);
    if (b.len + 1 < b.cap) {
        int n = vsnprintf(b.p + b.len, b.cap - b.len, fmt, ap);
        if (n > 0) {
            b.len += (size_t)n;
            if (b.len > b.cap - 1)
                b.len = b.cap - 1;
        }
    }
    line[b.len++] = '\n';
    sim_write_all(sim_logs.error_fd, line, b.len);
}

void sim_log_pid(enum sim_level level, pid_t pid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sim_vlog_pid(level, pid, fmt, ap);
    va_end(ap);
}

void sim_log(enum sim_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sim_vlog_pid(level, getpid(), fmt, ap);
    va_end(ap);
}

/* ---- access log ---- */

size_t sim_access_format(char *out, size_t outlen, const struct sim_access_entry *e,
                         enum sim_access_format fmt)
{
    char ts[48];
    struct sim_buf b;

    if (outlen < 2)
        return 0;
    sim_time_access(ts, sizeof(ts));
    sim_buf_init(&b, out, outlen - 1); /* keep room for the newline */
    sim_buf_printf(&b, "%s - - [%s] \"", e->remote_addr ? e->remote_addr : "-", ts);
    sim_buf_escaped(&b, e->request, e->request_len);
    sim_buf_printf(&b, "\" %d %zu \"", e->status, e->body_bytes);
    sim_buf_escaped(&b, e->referer, e->referer_len);
    sim_buf_puts(&b, "\" \"");
    sim_buf_escaped(&b, e->user_agent, e->user_agent_len);
    sim_buf_puts(&b, "\"");
    if (fmt == SIM_FMT_EXTENDED) {
        sim_buf_printf(&b, " rt=%.3f", e->request_time);
        if (e->upstream_time < 0)
            sim_buf_puts(&b, " urt=-");
        else
            sim_buf_printf(&b, " urt=%.3f", e->upstream_time);
    }
    out[b.len++] = '\n';
    out[b.len] = '\0';
    return b.len;
}

/* ---- synthetic lines ---- */

void sim_rng_seed(struct sim_rng *r, uint64_t seed)
{
    r->s = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

static uint64_t rng_next(struct sim_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

uint32_t sim_rng_below(struct sim_rng *r, uint32_t n)
{
    if (n == 0)
        return 0;
    return (uint32_t)((rng_next(r) >> 32) % n);
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *const user_agents[] = {
    "curl/7.88.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Go-http-client/1.1",
    "python-requests/2.31.0",
    "Wget/1.21.3",
};

static const char *const referers[] = {
    "https://example.com/", "https://www.google.com/", "https://example.com/login",
};

static void synth_client(struct sim_buf *b, struct sim_rng *r)
{
    switch (sim_rng_below(r, 5)) {
    case 0:
        sim_buf_printf(b, "10.%u.%u.%u", sim_rng_below(r, 256), sim_rng_below(r, 256),
                       1 + sim_rng_below(r, 254));
        break;
    case 1:
        sim_buf_printf(b, "192.168.%u.%u", sim_rng_below(r, 256), 1 + sim_rng_below(r, 254));
        break;
    case 2:
        sim_buf_printf(b, "203.0.113.%u", 1 + sim_rng_below(r, 254));
        break;
    case 3:
        sim_buf_printf(b, "198.51.100.%u", 1 + sim_rng_below(r, 254));
        break;
    default:
        sim_buf_puts(b, "127.0.0.1");
        break;
    }
}

size_t sim_synth_access(char *out, size_t outlen, struct sim_rng *r, enum sim_access_format fmt)
{
    char addr[64], req[512];
    struct sim_buf ab, rb;
    const char *method;
    int status;
    size_t bytes;

    sim_buf_init(&ab, addr, sizeof(addr));
    synth_client(&ab, r);

    uint32_t m = sim_rng_below(r, 100);
    method = m < 70 ? "GET" : m < 85 ? "POST" : m < 90 ? "HEAD" : m < 95 ? "PUT" : "DELETE";

    sim_buf_init(&rb, req, sizeof(req));
    sim_buf_printf(&rb, "%s ", method);
    switch (sim_rng_below(r, 12)) {
    case 0: sim_buf_puts(&rb, "/"); break;
    case 1: sim_buf_puts(&rb, "/index.html"); break;
    case 2: sim_buf_puts(&rb, "/login"); break;
    case 3: sim_buf_puts(&rb, "/api/v1/status"); break;
    case 4: sim_buf_printf(&rb, "/api/v1/users/%u", 1 + sim_rng_below(r, 5000)); break;
    case 5: sim_buf_printf(&rb, "/api/v1/orders?page=%u&limit=20", 1 + sim_rng_below(r, 40)); break;
    case 6: sim_buf_printf(&rb, "/static/js/app.%08x.js", sim_rng_below(r, 0xffffffffu)); break;
    case 7: sim_buf_puts(&rb, "/static/css/main.css"); break;
    case 8: sim_buf_puts(&rb, "/favicon.ico"); break;
    case 9: sim_buf_puts(&rb, "/images/logo.png"); break;
    case 10: sim_buf_puts(&rb, "/wp-login.php"); break;
    default: sim_buf_puts(&rb, "/admin/"); break;
    }
    uint32_t v = sim_rng_below(r, 10);
    sim_buf_puts(&rb, v < 8 ? " HTTP/1.1" : v < 9 ? " HTTP/1.0" : " HTTP/2.0");

    uint32_t s = sim_rng_below(r, 100);
    if (s < 80) {
        status = 200;
        bytes = 200 + sim_rng_below(r, 48000);
        if (method[0] == 'H')
            bytes = 0;
    } else if (s < 86) {
        status = 301;
        bytes = 169;
    } else if (s < 96) {
        status = 404;
        bytes = 153;
    } else {
        status = 500;
        bytes = 177;
    }

    double urt = (double)(1 + sim_rng_below(r, status == 500 ? 3000 : 250)) / 1000.0;
    double rt = urt + (double)sim_rng_below(r, 4) / 1000.0;
    const char *ref = NULL;
    if (sim_rng_below(r, 10) >= 6)
        ref = referers[sim_rng_below(r, (uint32_t)NELEM(referers))];
    const char *ua = user_agents[sim_rng_below(r, (uint32_t)NELEM(user_agents))];

    struct sim_access_entry e = {
        .remote_addr = addr,
        .request = req,
        .request_len = rb.len,
        .status = status,
        .body_bytes = bytes,
        .referer = ref,
        .referer_len = ref ? strlen(ref) : 0,
        .user_agent = ua,
        .user_agent_len = strlen(ua),
        .request_time = rt,
        .upstream_time = urt,
    };
    return sim_access_format(out, outlen, &e, fmt);
}

size_t sim_synth_error(char *out, size_t outlen, struct sim_rng *r, uint64_t seq, pid_t pid)
{
    /* Levels rotate info -> notice -> warn -> error; crit and worse are left
     * to explicit control commands so that they always mean something. */
    static const enum sim_level rot[] = { SIM_INFO, SIM_NOTICE, SIM_WARN, SIM_ERROR };
    enum sim_level level = rot[seq % NELEM(rot)];
    char ts[32], client[64];
    struct sim_buf b, cb;
    unsigned conn = (unsigned)(seq + 1);

    if (outlen < 2)
        return 0;
    sim_buf_init(&cb, client, sizeof(client));
    synth_client(&cb, r);
    sim_time_errlog(ts, sizeof(ts));
    sim_buf_init(&b, out, outlen - 1);
    sim_buf_printf(&b, "%s [%s] %d#%d: *%u ", ts, sim_level_name(level), (int)pid, (int)pid, conn);

    uint32_t k = sim_rng_below(r, 2);
    switch (level) {
    case SIM_INFO:
        if (k == 0)
            sim_buf_printf(&b, "client %s closed keepalive connection", client);
        else
            sim_buf_printf(&b, "client closed connection while waiting for request, "
                               "client: %s, server: 0.0.0.0:80", client);
        break;
    case SIM_NOTICE:
        sim_buf_printf(&b, "limiting requests, excess: %u.%03u by zone \"perip\", client: %s, "
                           "server: localhost, request: \"GET /api/v1/status HTTP/1.1\", "
                           "host: \"localhost\"",
                       sim_rng_below(r, 20), sim_rng_below(r, 1000), client);
        break;
    case SIM_WARN:
        if (k == 0)
            sim_buf_printf(&b, "an upstream response is buffered to a temporary file "
                               "/var/cache/onepanel/proxy_temp/%u/%02u/%010u while reading "
                               "upstream, client: %s, server: localhost, request: "
                               "\"GET /api/v1/orders HTTP/1.1\", upstream: "
                               "\"http://127.0.0.1:9000/api/v1/orders\", host: \"localhost\"",
                           sim_rng_below(r, 10), sim_rng_below(r, 100),
                           sim_rng_below(r, 1000000000u), client);
        else
            sim_buf_printf(&b, "a client request body is buffered to a temporary file "
                               "/var/cache/onepanel/client_temp/%010u, client: %s, server: "
                               "localhost, request: \"POST /api/v1/upload HTTP/1.1\", "
                               "host: \"localhost\"",
                           sim_rng_below(r, 1000000000u), client);
        break;
    default:
        switch (sim_rng_below(r, 3)) {
        case 0:
            sim_buf_printf(&b, "open() \"/usr/share/onepanel/html/favicon.ico\" failed "
                               "(2: No such file or directory), client: %s, server: localhost, "
                               "request: \"GET /favicon.ico HTTP/1.1\", host: \"localhost\"",
                           client);
            break;
        case 1:
            sim_buf_printf(&b, "upstream timed out (110: Connection timed out) while reading "
                               "response header from upstream, client: %s, server: localhost, "
                               "request: \"GET /api/v1/orders HTTP/1.1\", upstream: "
                               "\"http://127.0.0.1:9000/api/v1/orders\", host: \"localhost\"",
                           client);
            break;
        default:
            sim_buf_printf(&b, "connect() failed (111: Connection refused) while connecting "
                               "to upstream, client: %s, server: localhost, request: "
                               "\"POST /login HTTP/1.1\", upstream: \"http://127.0.0.1:9000/login\", "
                               "host: \"localhost\"",
                           client);
            break;
        }
        break;
    }
    out[b.len++] = '\n';
    out[b.len] = '\0';
    return b.len;
}
