/* onepanel-sim: a small nginx-shaped stand-in for the "onepanel" server.
 *
 * Shared declarations of the simulator's modules:
 *   config.c        strict parser of the nginx-like configuration file
 *   logs.c          error/access log files, line formatting, synthetic lines
 *   worker.c        the HTTP worker process
 *   onepanel-sim.c  command line, master process, signals, control file
 *
 * libc only; every process is single-threaded. */
#ifndef ONEPANEL_SIM_H
#define ONEPANEL_SIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define SIM_NAME "onepanel-sim"
#define SIM_VERSION "1.0.0"

#define SIM_PATH_MAX 4096
#define SIM_MESSAGE_MAX 1024   /* bytes of the "message" directive */
#define SIM_HEADER_MAX 8192    /* request line + headers; larger is a 400 */
#define SIM_LINE_MAX 8192      /* one error/access log line */
#define SIM_ERR_MAX (SIM_PATH_MAX + 1024)

#define SIM_WORKERS_MAX 16
#define SIM_RATE_MAX 100000

#define SIM_DEFAULT_MESSAGE "Welcome to onepanel-sim!"

/* ---- configuration (config.c) ---- */

enum sim_access_format { SIM_FMT_COMBINED = 0, SIM_FMT_EXTENDED = 1 };

struct sim_listen {
    bool set;
    struct sockaddr_storage addr; /* port 0 = pick any */
    socklen_t addrlen;
};

struct sim_config {
    char path[SIM_PATH_MAX];          /* the file as given with -c */
    struct sim_listen listen;
    char pid_file[SIM_PATH_MAX];      /* "" = none */
    char access_log[SIM_PATH_MAX];    /* "" = none ("off") */
    char error_log[SIM_PATH_MAX];     /* "" = stderr */
    char control_file[SIM_PATH_MAX];  /* "" = none */
    int workers;
    int access_rate;
    int error_rate;
    enum sim_access_format access_format;
    bool fail_reload;
    char message[SIM_MESSAGE_MAX + 1];
};

void sim_config_defaults(struct sim_config *c);
/* Parse and validate PATH into C. On failure returns -1 and writes the
 * nginx-style message ("unknown directive "x" in FILE:3") to ERR. */
int sim_config_load(const char *path, struct sim_config *c, char *err, size_t errlen);

/* Format an address as "127.0.0.1:8080" or "[::1]:8080". */
void sim_addr_format(const struct sockaddr *sa, char *out, size_t outlen);
/* Port of an AF_INET/AF_INET6 address. */
int sim_addr_port(const struct sockaddr *sa);

/* ---- logs (logs.c) ---- */

enum sim_level {
    SIM_EMERG = 0, SIM_ALERT, SIM_CRIT, SIM_ERROR, SIM_WARN, SIM_NOTICE, SIM_INFO, SIM_DEBUG
};

struct sim_logs {
    int error_fd;   /* STDERR_FILENO when no error_log is configured */
    int access_fd;  /* -1 when no access_log is configured */
};

/* The log descriptors of this process (master or worker). */
extern struct sim_logs sim_logs;

const char *sim_level_name(enum sim_level level);
/* write() the whole buffer, retrying on EINTR and short writes. */
void sim_write_all(int fd, const char *buf, size_t len);
/* open(O_WRONLY|O_APPEND|O_CREAT, 0644); -1 and an nginx-style ERR on failure. */
int sim_log_open(const char *path, char *err, size_t errlen);
/* Open the error and access logs configured in C (or stderr / none). */
int sim_logs_open(const struct sim_config *c, struct sim_logs *out, char *err, size_t errlen);
void sim_logs_close(struct sim_logs *l);

/* "2026/11/26 04:14:47 [level] PID#PID: message\n" as one write() to the
 * error log. */
void sim_log(enum sim_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_log_pid(enum sim_level level, pid_t pid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sim_vlog_pid(enum sim_level level, pid_t pid, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* A bounded string builder that truncates instead of overflowing. */
struct sim_buf {
    char *p;
    size_t cap;   /* including the terminating NUL */
    size_t len;
};
void sim_buf_init(struct sim_buf *b, char *storage, size_t cap);
void sim_buf_put(struct sim_buf *b, const char *s, size_t n);
void sim_buf_puts(struct sim_buf *b, const char *s);
void sim_buf_printf(struct sim_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append S escaped the way nginx escapes log variables: '"', '\\' and bytes
 * outside 0x20..0x7e become \xHH. NULL or "" becomes "-". */
void sim_buf_escaped(struct sim_buf *b, const char *s, size_t n);

/* Time stamps, local time. */
void sim_time_errlog(char *out, size_t outlen);  /* 2026/11/26 04:14:47 */
void sim_time_access(char *out, size_t outlen);  /* 26/Nov/2026:04:14:47 +0000 */
void sim_time_http(char *out, size_t outlen);    /* Thu, 26 Nov 2026 04:14:47 GMT */
double sim_monotonic(void);

struct sim_access_entry {
    const char *remote_addr;
    const char *request;      /* raw request line, may contain anything */
    size_t request_len;
    int status;
    size_t body_bytes;
    const char *referer;      /* NULL = "-" */
    size_t referer_len;
    const char *user_agent;   /* NULL = "-" */
    size_t user_agent_len;
    double request_time;      /* extended format only */
    double upstream_time;     /* < 0 prints "-" */
};

/* One access-log line including the trailing newline; returns its length. */
size_t sim_access_format(char *out, size_t outlen, const struct sim_access_entry *e,
                         enum sim_access_format fmt);

/* Deterministic pseudo random numbers (xorshift64*) for synthetic lines. */
struct sim_rng {
    uint64_t s;
};
void sim_rng_seed(struct sim_rng *r, uint64_t seed);
uint32_t sim_rng_below(struct sim_rng *r, uint32_t n);

/* A synthetic access / error-log line (with newline); returns its length.
 * SEQ selects the rotating level of error lines. */
size_t sim_synth_access(char *out, size_t outlen, struct sim_rng *r, enum sim_access_format fmt);
size_t sim_synth_error(char *out, size_t outlen, struct sim_rng *r, uint64_t seq, pid_t pid);

/* ---- worker (worker.c) ---- */

struct sim_worker_ctx {
    const struct sim_config *cfg;
    int listen_fd;          /* -1 when no listen directive */
    unsigned generation;
    pid_t master_pid;
    int index;
};

/* Runs in the forked child; never returns. */
void sim_worker_run(const struct sim_worker_ctx *ctx) __attribute__((noreturn));

#endif
