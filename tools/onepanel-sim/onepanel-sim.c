/* onepanel-sim: command line and master process.
 *
 * The master parses the configuration, opens the logs and the listening
 * socket, writes the pid file and forks the workers (worker.c). Afterwards it
 * only waits in poll() on a signalfd, with timeouts for the control file
 * (stat every 100 ms) and the synthetic log lines. No work happens in signal
 * handlers: there are none, every handled signal is blocked and read from the
 * signalfd. See README.md for the behaviour. */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TRACKED 256            /* live workers of all generations */
#define CONTROL_INTERVAL 0.1       /* seconds between control-file checks */
#define CONTROL_MAX 65536
#define RELOAD_WAIT 3.0            /* wait for the old generation to leave */
#define STOP_WAIT 5.0              /* SIGTERM: then SIGKILL */
#define QUIT_WAIT 10.0             /* SIGQUIT: then SIGKILL */

struct worker {
    pid_t pid;          /* 0 = free slot */
    unsigned generation;
    int index;
    bool quitting;      /* told to go: its exit is expected */
};

struct synth {
    int rate;           /* lines per second, 0 = off */
    double start;
    uint64_t emitted;
    uint64_t seq;
};

static struct sim_config *g_cfg;
static int g_listen_fd = -1;
static int g_sig_fd = -1;
static unsigned g_generation;
static pid_t g_pid;
static struct worker g_workers[MAX_TRACKED];
static bool g_stopping;
static struct synth g_syn_access, g_syn_error;
static struct sim_rng g_rng_access, g_rng_error; /* one stream each: timing-independent */
static double g_control_next;
static unsigned g_synth_pid_rr;

static struct {
    bool hup, usr1, usr2, term, intr, quit, chld;
} g_pending;

/* A control file we could not truncate is skipped until it changes. */
static struct {
    bool active;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} g_control_skip;

static const char panic_record[] =
    "panic: runtime error: invalid memory address or nil pointer dereference\n"
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a5b3c]\n"
    "\n"
    "goroutine 1 [running]:\n"
    "main.(*Server).handle(...)\n"
    "\t/src/onepanel/server.go:142 +0x1d\n"
    "main.main()\n"
    "\t/src/onepanel/main.go:57 +0x85\n"
    "exit status 2\n";

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: " SIM_NAME " [-?hvtTq] [-s signal] -c filename\n"
            "\n"
            "Options:\n"
            "  -?,-h         : this help\n"
            "  -v            : show version and exit\n"
            "  -t            : test configuration and exit\n"
            "  -T            : test configuration, dump it and exit\n"
            "  -q            : suppress non-error messages during configuration testing\n"
            "  -s signal     : send signal to the master process (pid_file of the\n"
            "                  configuration): stop, quit, reopen, reload, panic\n"
            "  -c filename   : configuration file (required)\n"
            "\n"
            "Without -t/-T/-s the master runs in the foreground until signalled.\n");
}

static const char *signal_name(int signo)
{
    switch (signo) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGCHLD: return "SIGCHLD";
    default: return "signal";
    }
}

/* An [emerg] during startup goes to the error log and to stderr. */
static void startup_emerg(const char *msg)
{
    if (sim_logs.error_fd != STDERR_FILENO)
        sim_log(SIM_EMERG, "%s", msg);
    fprintf(stderr, SIM_NAME ": [emerg] %s\n", msg);
}

static int open_listener(const struct sim_listen *l, int *fd_out, char *err, size_t errlen)
{
    char txt[128];
    int one = 1;
    int family = l->addr.ss_family;

    sim_addr_format((const struct sockaddr *)&l->addr, txt, sizeof(txt));
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket() %s failed (%d: %s)", txt, errno, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0) {
        snprintf(err, errlen, "bind() to %s failed (%d: %s)", txt, errno, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 511) != 0) {
        snprintf(err, errlen, "listen() to %s failed (%d: %s)", txt, errno, strerror(errno));
        close(fd);
        return -1;
    }
    *fd_out = fd;
    return 0;
}

/* "127.0.0.1:PORT" of the bound socket. */
static void listener_text(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(out, outlen, "?");
        return;
    }
    sim_addr_format((const struct sockaddr *)&ss, out, outlen);
}

/* Can the new listen directive keep using the socket bound for the old one? */
static bool listener_reusable(const struct sim_listen *old, const struct sim_listen *nl, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (!old->set || !nl->set || fd < 0)
        return false;
    if (old->addr.ss_family != nl->addr.ss_family)
        return false;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return false;
    int want = sim_addr_port((const struct sockaddr *)&nl->addr);
    if (want != 0 && want != sim_addr_port((const struct sockaddr *)&ss))
        return false;
    if (nl->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&old->addr, *b = (const void *)&nl->addr;
        return memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
    }
    const struct sockaddr_in *a = (const void *)&old->addr, *b = (const void *)&nl->addr;
    return a->sin_addr.s_addr == b->sin_addr.s_addr;
}

static int write_pid_file(const char *path, char *err, size_t errlen)
{
    char tmp[SIM_PATH_MAX + 32];
    char buf[32];
    int fd;

    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    do {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        snprintf(err, errlen, "open() \"%s\" failed (%d: %s)", tmp, errno, strerror(errno));
        return -1;
    }
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    sim_write_all(fd, buf, (size_t)n);
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename() \"%s\" to \"%s\" failed (%d: %s)", tmp, path, errno,
                 strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- workers ---- */

static int live_workers(unsigned below_generation)
{
    int n = 0;
    for (int i = 0; i < MAX_TRACKED; i++)
        if (g_workers[i].pid > 0 && (below_generation == 0 || g_workers[i].generation < below_generation))
            n++;
    return n;
}

static void spawn_worker(int index)
{
    int slot = -1;
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (g_workers[i].pid == 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        sim_log(SIM_ALERT, "too many worker processes, cannot start another one");
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        sim_log(SIM_ALERT, "fork() failed while spawning worker process (%d: %s)", errno,
                strerror(errno));
        return;
    }
    if (pid == 0) {
        static struct sim_worker_ctx ctx;
        close(g_sig_fd);
        ctx.cfg = g_cfg;
        ctx.listen_fd = g_listen_fd;
        ctx.generation = g_generation;
        ctx.master_pid = g_pid;
        ctx.index = index;
        sim_worker_run(&ctx);
    }
    g_workers[slot] = (struct worker){ .pid = pid, .generation = g_generation, .index = index };
    sim_log(SIM_NOTICE, "start worker process %d", (int)pid);
}

static void signal_workers(int signo, unsigned below_generation, bool mark_quitting)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        struct worker *w = &g_workers[i];
        if (w->pid <= 0 || (below_generation && w->generation >= below_generation))
            continue;
        if (mark_quitting)
            w->quitting = true;
        kill(w->pid, signo);
    }
}

static void reap_children(void)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        struct worker *w = NULL;
        for (int i = 0; i < MAX_TRACKED; i++)
            if (g_workers[i].pid == pid)
                w = &g_workers[i];
        if (w == NULL)
            continue;
        bool expected = w->quitting || g_stopping;
        enum sim_level level = expected ? SIM_NOTICE : SIM_ALERT;
        if (WIFEXITED(st))
            sim_log(level, "worker process %d exited with code %d", (int)pid, WEXITSTATUS(st));
        else if (WIFSIGNALED(st))
            sim_log(level, "worker process %d exited on signal %d%s", (int)pid, WTERMSIG(st),
                    WCOREDUMP(st) ? " (core dumped)" : "");
        unsigned gen = w->generation;
        int index = w->index;
        *w = (struct worker){ 0 };
        if (expected || gen != g_generation)
            continue;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 2)
            sim_log(SIM_ALERT, "worker process %d exited with fatal code 2 and cannot be respawned",
                    (int)pid);
        else
            spawn_worker(index);
    }
}

/* SIGKILL every worker and reap it: used right before an abrupt exit. */
static void kill_workers_now(void)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (g_workers[i].pid > 0)
            kill(g_workers[i].pid, SIGKILL);
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (g_workers[i].pid <= 0)
            continue;
        while (waitpid(g_workers[i].pid, NULL, 0) < 0 && errno == EINTR)
            ;
        g_workers[i].pid = 0;
    }
}

/* ---- signals ---- */

static void read_signals(void)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(g_sig_fd, &si, sizeof(si));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(si))
            return;
        switch (si.ssi_signo) {
        case SIGHUP: g_pending.hup = true; break;
        case SIGUSR1: g_pending.usr1 = true; break;
        case SIGUSR2: g_pending.usr2 = true; break;
        case SIGTERM: g_pending.term = true; break;
        case SIGINT: g_pending.intr = true; break;
        case SIGQUIT: g_pending.quit = true; break;
        case SIGCHLD: g_pending.chld = true; break;
        default: break;
        }
    }
}

/* Wait up to TIMEOUT seconds for workers below a generation (0 = all) to
 * exit, reaping them. Other signals stay pending. True when all are gone. */
static bool wait_workers(double timeout, unsigned below_generation)
{
    double deadline = sim_monotonic() + timeout;
    for (;;) {
        reap_children();
        if (live_workers(below_generation) == 0)
            return true;
        double left = deadline - sim_monotonic();
        if (left <= 0)
            return false;
        struct pollfd pfd = { .fd = g_sig_fd, .events = POLLIN };
        int r = poll(&pfd, 1, (int)(left * 1000.0) + 1);
        if (r < 0 && errno != EINTR)
            return false;
        if (r > 0)
            read_signals();
        g_pending.chld = false;
    }
}

static void cleanup_master(void)
{
    if (g_listen_fd >= 0)
        close(g_listen_fd);
    g_listen_fd = -1;
    if (g_sig_fd >= 0)
        close(g_sig_fd);
    g_sig_fd = -1;
    sim_logs_close(&sim_logs);
    free(g_cfg);
    g_cfg = NULL;
}

static void shutdown_master(int signo) __attribute__((noreturn));

static void shutdown_master(int signo)
{
    bool graceful = signo == SIGQUIT;
    g_stopping = true;
    sim_log(SIM_NOTICE, "signal %d (%s) received, %s", signo, signal_name(signo),
            graceful ? "shutting down gracefully" : "exiting");
    signal_workers(graceful ? SIGQUIT : SIGTERM, 0, true);
    if (graceful) {
        /* a SIGTERM/SIGINT during a graceful stop turns it into a fast one */
        double deadline = sim_monotonic() + QUIT_WAIT;
        while (live_workers(0) > 0 && sim_monotonic() < deadline) {
            g_pending.term = g_pending.intr = false;
            wait_workers(0.2, 0);
            if (g_pending.term || g_pending.intr)
                signal_workers(SIGTERM, 0, true);
        }
    } else {
        wait_workers(STOP_WAIT, 0);
    }
    if (live_workers(0) > 0) {
        sim_log(SIM_ALERT, "worker processes did not exit in time, killing them");
        kill_workers_now();
    }
    if (g_listen_fd >= 0) {
        close(g_listen_fd);
        g_listen_fd = -1;
    }
    if (g_cfg->pid_file[0] && unlink(g_cfg->pid_file) != 0 && errno != ENOENT)
        sim_log(SIM_ALERT, "unlink() \"%s\" failed (%d: %s)", g_cfg->pid_file, errno,
                strerror(errno));
    sim_log(SIM_NOTICE, "exiting");
    cleanup_master();
    exit(0);
}

/* ---- panic, crash, exit ---- */

static void do_panic(const char *text) __attribute__((noreturn));

static void do_panic(const char *text)
{
    char rec[SIM_LINE_MAX];
    size_t len;
    if (text == NULL || text[0] == '\0') {
        len = sizeof(panic_record) - 1;
        memcpy(rec, panic_record, len);
    } else {
        struct sim_buf b;
        sim_buf_init(&b, rec, sizeof(rec));
        sim_buf_printf(&b,
                       "panic: %.2048s\n"
                       "\n"
                       "goroutine 1 [running]:\n"
                       "main.(*Server).handle(...)\n"
                       "\t/src/onepanel/server.go:142 +0x1d\n"
                       "main.main()\n"
                       "\t/src/onepanel/main.go:57 +0x85\n"
                       "exit status 2\n",
                       text);
        len = b.len;
    }
    /* the whole record in one write(), like the Go runtime's print */
    sim_write_all(sim_logs.error_fd, rec, len);
    if (sim_logs.error_fd != STDERR_FILENO)
        sim_write_all(STDERR_FILENO, rec, len);
    kill_workers_now();
    _exit(2);
}

static void do_crash(void) __attribute__((noreturn));

static void do_crash(void)
{
    kill_workers_now();
    struct rlimit rl = { 0, 0 };
    setrlimit(RLIMIT_CORE, &rl); /* no core files in the tests' directories */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigaction(SIGSEGV, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGSEGV);
    kill(getpid(), SIGSEGV);
    _exit(139);
}

static void do_exit(int code) __attribute__((noreturn));

static void do_exit(int code)
{
    sim_log(SIM_NOTICE, "exit %d requested by the control file", code);
    kill_workers_now();
    _exit(code);
}

/* ---- reload and reopen ---- */

static void reload_failed(const char *msg)
{
    sim_log(SIM_EMERG, "%s", msg);
    sim_log(SIM_NOTICE, "reload failed, keeping the old configuration");
}

static void synth_configure(struct synth *s, int rate, double now)
{
    if (s->rate == rate)
        return;
    s->rate = rate;
    s->start = now;
    s->emitted = 0;
}

static void reload(const char *why)
{
    char err[SIM_ERR_MAX];
    char txt[128];
    struct sim_config *nc;
    struct sim_logs nl;
    int new_fd = -1;
    bool new_listener = false;

    sim_log(SIM_NOTICE, "%s, reconfiguring", why);
    nc = malloc(sizeof(*nc));
    if (nc == NULL) {
        reload_failed("out of memory");
        return;
    }
    if (sim_config_load(g_cfg->path, nc, err, sizeof(err)) != 0) {
        reload_failed(err);
        free(nc);
        return;
    }
    if (nc->fail_reload) {
        if (nc->listen.set)
            sim_addr_format((const struct sockaddr *)&nc->listen.addr, txt, sizeof(txt));
        else
            snprintf(txt, sizeof(txt), "0.0.0.0:80");
        snprintf(err, sizeof(err),
                 "bind() to %s failed (98: Address already in use) (simulated by \"fail_reload yes\")",
                 txt);
        reload_failed(err);
        free(nc);
        return;
    }

    /* acquire everything the new configuration needs; commit only if all worked */
    if (nc->listen.set) {
        if (listener_reusable(&g_cfg->listen, &nc->listen, g_listen_fd)) {
            new_fd = g_listen_fd;
        } else {
            if (open_listener(&nc->listen, &new_fd, err, sizeof(err)) != 0) {
                reload_failed(err);
                free(nc);
                return;
            }
            new_listener = true;
        }
    }
    if (sim_logs_open(nc, &nl, err, sizeof(err)) != 0) {
        if (new_listener)
            close(new_fd);
        reload_failed(err);
        free(nc);
        return;
    }
    bool pid_moved = strcmp(nc->pid_file, g_cfg->pid_file) != 0;
    if (pid_moved && nc->pid_file[0] && write_pid_file(nc->pid_file, err, sizeof(err)) != 0) {
        if (new_listener)
            close(new_fd);
        sim_logs_close(&nl);
        reload_failed(err);
        free(nc);
        return;
    }

    /* commit */
    if (pid_moved && g_cfg->pid_file[0])
        unlink(g_cfg->pid_file);
    if (g_listen_fd >= 0 && g_listen_fd != new_fd)
        close(g_listen_fd);
    g_listen_fd = new_fd;
    sim_logs_close(&sim_logs);
    sim_logs = nl;
    free(g_cfg);
    g_cfg = nc;

    double now = sim_monotonic();
    synth_configure(&g_syn_access, g_cfg->access_rate, now);
    synth_configure(&g_syn_error, g_cfg->error_rate, now);

    if (new_listener) {
        listener_text(g_listen_fd, txt, sizeof(txt));
        sim_log(SIM_NOTICE, "listening on %s", txt);
    }
    unsigned old_generation = g_generation++;
    for (int i = 0; i < g_cfg->workers; i++)
        spawn_worker(i);
    signal_workers(SIGQUIT, old_generation + 1, true);
    /* The old generation closes its listening socket and exits at once
     * unless it is in the middle of a request; wait for that (bounded), so
     * that after the line below new connections only meet the new workers. */
    wait_workers(RELOAD_WAIT, old_generation + 1);
    sim_log(SIM_NOTICE, "reconfigured, generation %u", g_generation);
}

static void reopen_logs(void)
{
    char err[SIM_ERR_MAX];
    struct sim_logs nl;

    sim_log(SIM_NOTICE, "signal %d (SIGUSR1) received, reopening logs", SIGUSR1);
    if (sim_logs_open(g_cfg, &nl, err, sizeof(err)) != 0) {
        sim_log(SIM_ALERT, "%s", err);
    } else {
        sim_logs_close(&sim_logs);
        sim_logs = nl;
        sim_log(SIM_NOTICE, "reopening logs");
    }
    signal_workers(SIGUSR1, 0, false);
}

/* ---- control file ---- */

static void control_exec(char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (n == 0 || line[0] == '#')
        return;

    char *rest = line;
    while (*rest && *rest != ' ' && *rest != '\t')
        rest++;
    if (*rest) {
        *rest++ = '\0';
        while (*rest == ' ' || *rest == '\t')
            rest++;
    }
    const char *cmd = line;

    static const struct {
        const char *name;
        enum sim_level level;
    } levels[] = {
        { "emerg", SIM_EMERG }, { "alert", SIM_ALERT }, { "critical", SIM_CRIT },
        { "crit", SIM_CRIT },   { "error", SIM_ERROR }, { "warn", SIM_WARN },
        { "notice", SIM_NOTICE }, { "info", SIM_INFO },
    };
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(cmd, levels[i].name) == 0) {
            sim_log(levels[i].level, "%s", rest);
            return;
        }
    }

    if (strcmp(cmd, "panic") == 0) {
        do_panic(rest);
    } else if (strcmp(cmd, "crash") == 0) {
        do_crash();
    } else if (strcmp(cmd, "exit") == 0) {
        char *end = NULL;
        errno = 0;
        long code = strtol(rest, &end, 10);
        if (rest[0] < '0' || rest[0] > '9' || errno || end == rest || *end != '\0' || code > 255) {
            sim_log(SIM_ERROR, "invalid control command \"exit %s\", expected \"exit N\" (0..255)",
                    rest);
            return;
        }
        do_exit((int)code);
    } else if (strcmp(cmd, "reload") == 0) {
        g_pending.hup = true;
    } else if (strcmp(cmd, "reopen") == 0) {
        g_pending.usr1 = true;
    } else if (strcmp(cmd, "stop") == 0) {
        g_pending.term = true;
    } else if (strcmp(cmd, "quit") == 0) {
        g_pending.quit = true;
    } else {
        sim_log(SIM_ERROR, "unknown control command \"%s\"", cmd);
    }
}

static void control_poll(void)
{
    static char buf[CONTROL_MAX + 1];
    const char *path = g_cfg->control_file;
    struct stat st;
    int fd;

    if (path[0] == '\0' || stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
        return;
    if (g_control_skip.active) {
        if (st.st_dev == g_control_skip.dev && st.st_ino == g_control_skip.ino &&
            st.st_size == g_control_skip.size &&
            st.st_mtim.tv_sec == g_control_skip.mtime.tv_sec &&
            st.st_mtim.tv_nsec == g_control_skip.mtime.tv_nsec)
            return;
        g_control_skip.active = false;
    }

    do {
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        sim_log(SIM_ERROR, "open() \"%s\" failed (%d: %s)", path, errno, strerror(errno));
        goto skip;
    }

    /* read everything, then truncate; re-read if it grew meanwhile */
    size_t len = 0;
    for (int round = 0; round < 5; round++) {
        while (len < CONTROL_MAX) {
            ssize_t n = read(fd, buf + len, CONTROL_MAX - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        if (fstat(fd, &st) != 0 || (size_t)st.st_size <= len || len >= CONTROL_MAX)
            break;
    }
    buf[len] = '\0';
    if (ftruncate(fd, 0) != 0) {
        sim_log(SIM_ERROR, "ftruncate() \"%s\" failed (%d: %s)", path, errno, strerror(errno));
        close(fd);
        goto skip;
    }
    close(fd);

    /* one command per line; panic, crash and exit do not return */
    char *s = buf;
    while (*s) {
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = '\0';
        control_exec(s);
        if (!nl)
            break;
        s = nl + 1;
    }
    return;

skip:
    if (stat(path, &st) == 0) {
        g_control_skip.active = true;
        g_control_skip.dev = st.st_dev;
        g_control_skip.ino = st.st_ino;
        g_control_skip.size = st.st_size;
        g_control_skip.mtime = st.st_mtim;
    }
}

/* ---- synthetic log lines ---- */

static pid_t synth_pid(void)
{
    /* error lines claim to come from a worker, round robin */
    for (int k = 0; k < MAX_TRACKED; k++) {
        struct worker *w = &g_workers[(g_synth_pid_rr++) % MAX_TRACKED];
        if (w->pid > 0 && !w->quitting)
            return w->pid;
    }
    return g_pid;
}

static uint64_t synth_due(struct synth *s, double now)
{
    if (s->rate == 0)
        return 0;
    uint64_t due = (uint64_t)((now - s->start) * (double)s->rate);
    if (due > s->emitted + (uint64_t)s->rate)
        s->emitted = due - (uint64_t)s->rate; /* never more than 1 s of backlog */
    return due > s->emitted ? due - s->emitted : 0;
}

static double synth_next(const struct synth *s, double now)
{
    if (s->rate == 0)
        return -1;
    double next = s->start + (double)(s->emitted + 1) / (double)s->rate;
    return next < now + 0.01 ? now + 0.01 : next; /* batch at high rates */
}

static void synth_run(double now)
{
    char line[SIM_LINE_MAX];
    uint64_t n = synth_due(&g_syn_access, now);
    for (uint64_t i = 0; i < n; i++) {
        size_t len = sim_synth_access(line, sizeof(line), &g_rng_access, g_cfg->access_format);
        sim_write_all(sim_logs.access_fd, line, len);
        g_syn_access.emitted++;
    }
    n = synth_due(&g_syn_error, now);
    for (uint64_t i = 0; i < n; i++) {
        size_t len = sim_synth_error(line, sizeof(line), &g_rng_error, g_syn_error.seq++, synth_pid());
        sim_write_all(sim_logs.error_fd, line, len);
        g_syn_error.emitted++;
    }
}

/* ---- the master ---- */

static int run_master(const char *conf)
{
    char err[SIM_ERR_MAX];
    char txt[128];
    struct sim_logs logs;

    g_pid = getpid();

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    g_sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (g_sig_fd < 0) {
        snprintf(err, sizeof(err), "signalfd() failed (%d: %s)", errno, strerror(errno));
        startup_emerg(err);
        return 1;
    }

    g_cfg = malloc(sizeof(*g_cfg));
    if (g_cfg == NULL) {
        startup_emerg("out of memory");
        return 1;
    }
    if (sim_config_load(conf, g_cfg, err, sizeof(err)) != 0) {
        startup_emerg(err);
        cleanup_master();
        return 1;
    }
    if (sim_logs_open(g_cfg, &logs, err, sizeof(err)) != 0) {
        startup_emerg(err);
        cleanup_master();
        return 1;
    }
    sim_logs = logs;
    if (g_cfg->listen.set && open_listener(&g_cfg->listen, &g_listen_fd, err, sizeof(err)) != 0) {
        startup_emerg(err);
        cleanup_master();
        return 1;
    }
    if (g_cfg->pid_file[0] && write_pid_file(g_cfg->pid_file, err, sizeof(err)) != 0) {
        startup_emerg(err);
        cleanup_master();
        return 1;
    }

    g_generation = 1;
    /* fixed seeds ("onepanel", "errorlog"): the same lines every run */
    sim_rng_seed(&g_rng_access, 0x6f6e6570616e656cULL);
    sim_rng_seed(&g_rng_error, 0x6572726f726c6f67ULL);
    sim_log(SIM_NOTICE, SIM_NAME " started");
    sim_log(SIM_NOTICE, SIM_NAME "/" SIM_VERSION ", configuration file %s", g_cfg->path);
    if (g_listen_fd >= 0) {
        listener_text(g_listen_fd, txt, sizeof(txt));
        sim_log(SIM_NOTICE, "listening on %s", txt);
    }
    sim_log(SIM_NOTICE, "start worker processes");
    for (int i = 0; i < g_cfg->workers; i++)
        spawn_worker(i);

    double now = sim_monotonic();
    synth_configure(&g_syn_access, g_cfg->access_rate, now);
    synth_configure(&g_syn_error, g_cfg->error_rate, now);
    g_control_next = now;

    for (;;) {
        now = sim_monotonic();
        if (g_cfg->control_file[0] && now >= g_control_next) {
            control_poll();
            g_control_next = now + CONTROL_INTERVAL;
        }
        synth_run(now);

        if (g_pending.chld) {
            g_pending.chld = false;
            reap_children();
        }
        if (g_pending.usr2)
            do_panic(NULL);
        if (g_pending.term)
            shutdown_master(SIGTERM);
        if (g_pending.intr)
            shutdown_master(SIGINT);
        if (g_pending.quit)
            shutdown_master(SIGQUIT);
        if (g_pending.hup) {
            g_pending.hup = false;
            reload("signal 1 (SIGHUP) received");
        }
        if (g_pending.usr1) {
            g_pending.usr1 = false;
            reopen_logs();
        }
        if (g_pending.chld) /* set again while reloading */
            continue;

        now = sim_monotonic();
        double next = -1;
        if (g_cfg->control_file[0])
            next = g_control_next;
        double t = synth_next(&g_syn_access, now);
        if (t >= 0 && (next < 0 || t < next))
            next = t;
        t = synth_next(&g_syn_error, now);
        if (t >= 0 && (next < 0 || t < next))
            next = t;
        int timeout = -1;
        if (next >= 0) {
            double ms = (next - now) * 1000.0;
            timeout = ms <= 0 ? 0 : ms > 600000 ? 600000 : (int)ms + 1;
        }

        struct pollfd pfd = { .fd = g_sig_fd, .events = POLLIN };
        int r = poll(&pfd, 1, timeout);
        if (r < 0 && errno != EINTR) {
            sim_log(SIM_ALERT, "poll() failed (%d: %s)", errno, strerror(errno));
            continue;
        }
        if (r > 0)
            read_signals();
    }
}

/* ---- -t, -s ---- */

static int test_config(const char *conf, bool dump, bool quiet)
{
    char err[SIM_ERR_MAX];
    struct sim_config *c = malloc(sizeof(*c));
    if (c == NULL) {
        fprintf(stderr, SIM_NAME ": [emerg] out of memory\n");
        return 1;
    }
    if (sim_config_load(conf, c, err, sizeof(err)) != 0) {
        fprintf(stderr, SIM_NAME ": [emerg] %s\n", err);
        fprintf(stderr, SIM_NAME ": configuration file %s test failed\n", conf);
        free(c);
        return 1;
    }
    free(c);
    if (!quiet) {
        fprintf(stderr, SIM_NAME ": the configuration file %s syntax is ok\n", conf);
        fprintf(stderr, SIM_NAME ": configuration file %s test is successful\n", conf);
    }
    if (dump) {
        FILE *f = fopen(conf, "r");
        if (f) {
            char chunk[4096];
            size_t n;
            printf("# configuration file %s:\n", conf);
            while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, n, stdout);
            fclose(f);
            fflush(stdout);
        }
    }
    return 0;
}

static int send_signal(const char *conf, const char *name)
{
    static const struct {
        const char *name;
        int signo;
    } sigs[] = {
        { "stop", SIGTERM }, { "quit", SIGQUIT }, { "reopen", SIGUSR1 },
        { "reload", SIGHUP }, { "panic", SIGUSR2 },
    };
    char err[SIM_ERR_MAX];
    int signo = 0;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (strcmp(sigs[i].name, name) == 0)
            signo = sigs[i].signo;
    if (signo == 0) {
        fprintf(stderr, SIM_NAME ": invalid option: \"-s %s\"\n", name);
        usage(stderr);
        return 1;
    }
    struct sim_config *c = malloc(sizeof(*c));
    if (c == NULL)
        return 1;
    if (sim_config_load(conf, c, err, sizeof(err)) != 0) {
        fprintf(stderr, SIM_NAME ": [emerg] %s\n", err);
        free(c);
        return 1;
    }
    if (c->pid_file[0] == '\0') {
        fprintf(stderr, SIM_NAME ": [error] no \"pid_file\" in %s\n", conf);
        free(c);
        return 1;
    }
    char buf[32] = { 0 };
    int fd = open(c->pid_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, SIM_NAME ": [error] open() \"%s\" failed (%d: %s)\n", c->pid_file, errno,
                strerror(errno));
        free(c);
        return 1;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    char *end = NULL;
    long pid = n > 0 ? strtol(buf, &end, 10) : 0;
    if (pid <= 0 || end == buf || (*end != '\n' && *end != '\0')) {
        fprintf(stderr, SIM_NAME ": [error] invalid PID number \"%.*s\" in \"%s\"\n",
                (int)(n > 0 ? strcspn(buf, "\n") : 0), buf, c->pid_file);
        free(c);
        return 1;
    }
    free(c);
    if (kill((pid_t)pid, signo) != 0) {
        fprintf(stderr, SIM_NAME ": [alert] kill(%ld, %d) failed (%d: %s)\n", pid, signo, errno,
                strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *sig = NULL;
    bool test = false, dump = false, quiet = false;
    int opt;

    opterr = 0;
    while ((opt = getopt(argc, argv, "+hvtTqc:s:")) != -1) {
        switch (opt) {
        case 'h':
            usage(stderr);
            return 0;
        case 'v':
            fprintf(stderr, SIM_NAME " version: " SIM_NAME "/" SIM_VERSION "\n");
            return 0;
        case 't':
            test = true;
            break;
        case 'T':
            test = dump = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'c':
            conf = optarg;
            break;
        case 's':
            sig = optarg;
            break;
        default:
            if (optopt == '?') {
                usage(stderr);
                return 0;
            }
            if (optopt == 'c')
                fprintf(stderr, SIM_NAME ": option \"-c\" requires file name\n");
            else if (optopt == 's')
                fprintf(stderr, SIM_NAME ": option \"-s\" requires parameter\n");
            else if (optopt > 0x20 && optopt < 0x7f)
                fprintf(stderr, SIM_NAME ": invalid option: \"%c\"\n", optopt);
            else
                fprintf(stderr, SIM_NAME ": invalid option\n");
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, SIM_NAME ": invalid option: \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (conf == NULL) {
        fprintf(stderr, SIM_NAME ": [emerg] no configuration file given, use -c FILE\n");
        usage(stderr);
        return 1;
    }
    if (test)
        return test_config(conf, dump, quiet);
    if (sig)
        return send_signal(conf, sig);
    return run_master(conf);
}
