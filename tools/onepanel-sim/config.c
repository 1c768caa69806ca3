/* onepanel-sim: strict parser of the nginx-like configuration file.
 *
 * One directive per line: `name value...;`, optionally followed by a
 * `# comment`. Values may be quoted with "..." or '...' (backslash escapes
 * \" \' \\ \n \t). Errors carry the nginx shape "MESSAGE in FILE:LINE". */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_FILE_MAX (1024 * 1024)
#define CONF_ARGS_MAX 64

struct parse_ctx {
    struct sim_config *c;
    const char *file;
    unsigned line;
    char *err;
    size_t errlen;
};

static int fail(struct parse_ctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parse_ctx *p, const char *fmt, ...)
{
    char msg[SIM_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s in %s:%u", msg, p->file, p->line);
    return -1;
}

void sim_config_defaults(struct sim_config *c)
{
    memset(c, 0, sizeof(*c));
    c->workers = 1;
    c->access_format = SIM_FMT_COMBINED;
    snprintf(c->message, sizeof(c->message), "%s", SIM_DEFAULT_MESSAGE);
}

void sim_addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%u", host, (unsigned)ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%u", host, (unsigned)ntohs(s4->sin_port));
    }
}

int sim_addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
}

/* Unsigned decimal without sign or spaces; -1 when not a number. */
static long parse_number(const char *s)
{
    long v = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > 1000000000L)
            return -1;
    }
    return v;
}

/* ---- directive handlers ---- */

static int set_listen(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    const char *v = args[0];
    char host[256];
    const char *port_s;
    struct sim_listen *l = &p->c->listen;

    memset(l, 0, sizeof(*l));
    if (v[0] == '[') {
        const char *rb = strchr(v, ']');
        if (rb == NULL || rb[1] != ':' || (size_t)(rb - v - 1) >= sizeof(host))
            return fail(p, "invalid address \"%s\" of the \"%s\" directive", v, name);
        memcpy(host, v + 1, (size_t)(rb - v - 1));
        host[rb - v - 1] = '\0';
        port_s = rb + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (colon == NULL) {
            if (parse_number(v) < 0)
                return fail(p, "no port in \"%s\" of the \"%s\" directive", v, name);
            snprintf(host, sizeof(host), "*");
            port_s = v;
        } else {
            if ((size_t)(colon - v) >= sizeof(host))
                return fail(p, "host not found in \"%s\" of the \"%s\" directive", v, name);
            memcpy(host, v, (size_t)(colon - v));
            host[colon - v] = '\0';
            port_s = colon + 1;
        }
    }

    long port = parse_number(port_s);
    if (port < 0 || port > 65535)
        return fail(p, "invalid port in \"%s\" of the \"%s\" directive", v, name);

    if (v[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&l->addr;
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return fail(p, "invalid address \"%s\" of the \"%s\" directive", v, name);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        l->addrlen = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&l->addr;
        if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0)
            s4->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (strcmp(host, "localhost") == 0)
            s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return fail(p, "host not found in \"%s\" of the \"%s\" directive", v, name);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        l->addrlen = sizeof(*s4);
    }
    l->set = true;
    return 0;
}

/* A file path whose directory must exist. */
static int set_path(struct parse_ctx *p, const char *name, const char *v, char *dst)
{
    char dir[SIM_PATH_MAX];
    struct stat st;

    if (v[0] == '\0')
        return fail(p, "empty path in \"%s\" directive", name);
    if (strlen(v) >= SIM_PATH_MAX)
        return fail(p, "path too long in \"%s\" directive", name);

    const char *slash = strrchr(v, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == v)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - v), v);
    if (slash && slash[1] == '\0')
        return fail(p, "\"%s\" of the \"%s\" directive is a directory", v, name);

    if (stat(dir, &st) != 0)
        return fail(p, "directory \"%s\" of the \"%s\" directive does not exist (%d: %s)",
                    dir, name, errno, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fail(p, "\"%s\" of the \"%s\" directive is not a directory", dir, name);
    if (stat(v, &st) == 0 && S_ISDIR(st.st_mode))
        return fail(p, "\"%s\" of the \"%s\" directive is a directory", v, name);

    snprintf(dst, SIM_PATH_MAX, "%s", v);
    return 0;
}

static int set_pid_file(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    return set_path(p, name, args[0], p->c->pid_file);
}

static int set_access_log(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    if (strcmp(args[0], "off") == 0) {
        p->c->access_log[0] = '\0';
        return 0;
    }
    return set_path(p, name, args[0], p->c->access_log);
}

static int set_error_log(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    if (strcmp(args[0], "stderr") == 0) {
        p->c->error_log[0] = '\0';
        return 0;
    }
    return set_path(p, name, args[0], p->c->error_log);
}

static int set_control_file(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    return set_path(p, name, args[0], p->c->control_file);
}

static int set_int(struct parse_ctx *p, const char *name, const char *v, long lo, long hi, int *dst)
{
    long n = parse_number(v);
    if (n < 0)
        return fail(p, "invalid value \"%s\" in \"%s\" directive, it must be a number", v, name);
    if (n < lo || n > hi)
        return fail(p, "invalid value \"%s\" in \"%s\" directive, it must be between %ld and %ld",
                    v, name, lo, hi);
    *dst = (int)n;
    return 0;
}

static int set_workers(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    return set_int(p, name, args[0], 0, SIM_WORKERS_MAX, &p->c->workers);
}

static int set_access_rate(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    return set_int(p, name, args[0], 0, SIM_RATE_MAX, &p->c->access_rate);
}

static int set_error_rate(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    return set_int(p, name, args[0], 0, SIM_RATE_MAX, &p->c->error_rate);
}

static int set_access_format(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    if (strcmp(args[0], "combined") == 0)
        p->c->access_format = SIM_FMT_COMBINED;
    else if (strcmp(args[0], "extended") == 0)
        p->c->access_format = SIM_FMT_EXTENDED;
    else
        return fail(p, "invalid value \"%s\" in \"%s\" directive, it must be \"combined\" or "
                       "\"extended\"", args[0], name);
    return 0;
}

static int set_fail_reload(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    (void)nargs;
    if (strcmp(args[0], "yes") == 0 || strcmp(args[0], "on") == 0)
        p->c->fail_reload = true;
    else if (strcmp(args[0], "no") == 0 || strcmp(args[0], "off") == 0)
        p->c->fail_reload = false;
    else
        return fail(p, "invalid value \"%s\" in \"%s\" directive, it must be \"yes\" or \"no\"",
                    args[0], name);
    return 0;
}

static int set_message(struct parse_ctx *p, const char *name, char **args, int nargs)
{
    /* Several words are joined with one space: `message hello world;`. */
    struct sim_buf b;
    size_t total = 0;
    for (int i = 0; i < nargs; i++)
        total += strlen(args[i]) + (i ? 1 : 0);
    if (total > SIM_MESSAGE_MAX)
        return fail(p, "value of \"%s\" directive is too long (%zu > %d bytes)", name, total,
                    SIM_MESSAGE_MAX);
    sim_buf_init(&b, p->c->message, sizeof(p->c->message));
    for (int i = 0; i < nargs; i++) {
        if (i)
            sim_buf_puts(&b, " ");
        sim_buf_puts(&b, args[i]);
    }
    return 0;
}

struct directive {
    const char *name;
    int (*set)(struct parse_ctx *p, const char *name, char **args, int nargs);
    int min_args, max_args;
};

static const struct directive directives[] = {
    { "listen", set_listen, 1, 1 },
    { "pid_file", set_pid_file, 1, 1 },
    { "access_log", set_access_log, 1, 1 },
    { "error_log", set_error_log, 1, 1 },
    { "workers", set_workers, 1, 1 },
    { "access_rate", set_access_rate, 1, 1 },
    { "error_rate", set_error_rate, 1, 1 },
    { "access_format", set_access_format, 1, 1 },
    { "control_file", set_control_file, 1, 1 },
    { "fail_reload", set_fail_reload, 1, 1 },
    { "message", set_message, 1, CONF_ARGS_MAX },
};
#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* Print a token for an error message: up to the next space or ';'. */
static int token_len(const char *s, const char *end)
{
    const char *q = s;
    while (q < end && !is_space(*q) && (q == s || *q != ';') && q - s < 64)
        q++;
    return (int)(q - s);
}

/* Tokenise and apply one line [s, end). SCRATCH has room for end-s+1 bytes. */
static int parse_line(struct parse_ctx *p, const char *s, const char *end, char *scratch,
                      unsigned *seen)
{
    char *args[CONF_ARGS_MAX + 1];
    int nargs = 0;
    bool terminated = false;
    char *out = scratch;

    while (s < end) {
        while (s < end && is_space(*s))
            s++;
        if (s >= end || *s == '#')
            break;
        if (terminated)
            return fail(p, "unexpected \"%.*s\" after \";\" (one directive per line)",
                        token_len(s, end), s);
        if (*s == ';') {
            if (nargs == 0)
                return fail(p, "unexpected \";\"");
            terminated = true;
            s++;
            continue;
        }
        if (*s == '{' || *s == '}')
            return fail(p, "unexpected \"%c\"", *s);
        if (nargs > CONF_ARGS_MAX)
            return fail(p, "too many arguments in \"%s\" directive", args[0]);

        args[nargs++] = out;
        if (*s == '"' || *s == '\'') {
            char q = *s++;
            bool closed = false;
            while (s < end) {
                if (*s == q) {
                    closed = true;
                    s++;
                    break;
                }
                if (*s == '\\' && s + 1 < end) {
                    s++;
                    switch (*s) {
                    case 'n': *out++ = '\n'; break;
                    case 't': *out++ = '\t'; break;
                    case 'r': *out++ = '\r'; break;
                    default: *out++ = *s; break;
                    }
                    s++;
                    continue;
                }
                *out++ = *s++;
            }
            if (!closed)
                return fail(p, "unterminated quoted string");
            if (s < end && !is_space(*s) && *s != ';')
                return fail(p, "unexpected \"%.*s\" after quoted string", token_len(s, end), s);
        } else {
            while (s < end && !is_space(*s) && *s != ';')
                *out++ = *s++;
        }
        *out++ = '\0';
    }

    if (nargs == 0)
        return 0; /* blank or comment-only line */
    if (!terminated)
        return fail(p, "directive \"%s\" is not terminated by \";\"", args[0]);

    const char *name = args[0];
    for (unsigned i = 0; i < N_DIRECTIVES; i++) {
        const struct directive *d = &directives[i];
        if (strcmp(d->name, name) != 0)
            continue;
        if (*seen & (1u << i))
            return fail(p, "\"%s\" directive is duplicate", name);
        *seen |= 1u << i;
        int n = nargs - 1;
        if (n < d->min_args || n > d->max_args)
            return fail(p, "invalid number of arguments in \"%s\" directive", name);
        return d->set(p, name, args + 1, n);
    }
    return fail(p, "unknown directive \"%s\"", name);
}

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    int fd;
    struct stat st;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        snprintf(err, errlen, "open() \"%s\" failed (%d: %s)", path, errno, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "\"%s\" is not a regular file", path);
        close(fd);
        return -1;
    }
    char *buf = malloc(CONF_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory reading \"%s\"", path);
        close(fd);
        return -1;
    }
    size_t len = 0;
    for (;;) {
        if (len > CONF_FILE_MAX) {
            snprintf(err, errlen, "configuration file \"%s\" is too large (max %d bytes)", path,
                     CONF_FILE_MAX);
            free(buf);
            close(fd);
            return -1;
        }
        ssize_t n = read(fd, buf + len, CONF_FILE_MAX + 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "read() \"%s\" failed (%d: %s)", path, errno, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len > CONF_FILE_MAX) {
        snprintf(err, errlen, "configuration file \"%s\" is too large (max %d bytes)", path,
                 CONF_FILE_MAX);
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

int sim_config_load(const char *path, struct sim_config *c, char *err, size_t errlen)
{
    char *text = NULL, *scratch = NULL;
    size_t len = 0;
    unsigned seen = 0;
    int rc = 0;

    sim_config_defaults(c);
    if (strlen(path) >= sizeof(c->path)) {
        snprintf(err, errlen, "configuration file name is too long");
        return -1;
    }
    snprintf(c->path, sizeof(c->path), "%s", path);

    if (read_file(path, &text, &len, err, errlen) != 0)
        return -1;
    scratch = malloc(len + 1);
    if (scratch == NULL) {
        free(text);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    struct parse_ctx p = { .c = c, .file = path, .line = 0, .err = err, .errlen = errlen };
    const char *s = text, *end = text + len;
    while (s < end && rc == 0) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        p.line++;
        if (memchr(s, '\0', (size_t)(le - s)) != NULL)
            rc = fail(&p, "unexpected NUL byte");
        else
            rc = parse_line(&p, s, le, scratch, &seen);
        s = nl ? nl + 1 : end;
    }

    free(scratch);
    free(text);
    return rc;
}
