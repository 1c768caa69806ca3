/* Tracking onepanel: the master and its workers, from one of two sources.
 *
 *  ebpf    bpf/proclife.bpf.c reports exec (of a process whose comm or
 *          executable name matches, filtered in the kernel), fork and exit
 *          of the master and its descendants (a tgid set the programs keep
 *          themselves), through a ring buffer in the core loop.
 *  procfs  the netlink proc connector (every exec/fork/exit of the host,
 *          filtered here), or where even that is missing a /proc rescan.
 *
 * Both feed the same three handlers (on_proc_exec, on_proc_fork, on_proc_exit), so FOUND,
 * STOP and WORKER_START/STOP behave the same in both modes and CI tests both
 * (ebpf.enabled: false or ONESHIELD_FORCE_PROCFS=1 forces procfs).
 *
 * The commit point of a STOP is the master's pidfd turning readable, in both
 * modes: the kernel has then finished the exit, so neither the pid file nor
 * a /proc scan can take the dying master for a new one. The exit status
 * comes from the source, whose record of the exit is queued before the pidfd
 * wakes (sched_process_exit and the connector's exit message both precede
 * exit_notify), so the source is drained first.
 *
 * The scheduler-delay probe (schedlat) follows the same process set: the
 * master and its direct children are its targets. */
#include "onepanel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "procfs.h"
#include "proclife.h"
#include "schedlat.h"

#define PROC_ROOT "/proc"
#define MAX_PROC_LISTENERS 4
#define EXIT_WAIT_MS 100
#define RESCAN_MS 2000
#define MAX_CANDIDATES 4096

struct onepanel {
	struct loop *loop;
	struct journal *journal;

	/* identity, copied from the config */
	bool configured;
	char *binary;           /* realpath of the configured binary */
	char *name;
	char *pid_file;

	/* the tracked master */
	bool running;
	pid_t pid;
	uint64_t start_ticks;
	double start_time;
	char exe[256];
	int pidfd;
	struct loop_io *pidfd_io;
	double since;
	uint64_t found_count;
	bool have_exit;         /* exit status of the tracked tgid seen by the source */
	bool dead;              /* the source saw the whole master exit */
	uint64_t exit_kns;      /* when the source saw it (kernel CLOCK_MONOTONIC ns) */
	uint64_t ev_kns;        /* the event being handled: when the kernel saw it, 0 unknown */
	int exit_status;        /* wait(2)-style status */
	bool has_last_exit;
	int last_exit_code, last_exit_signal;

	/* direct children of the master (workers), kept from the connector's
	 * fork/exit events after one /proc scan when the master is found:
	 * task/TID/children is not in every kernel, and a /proc scan per
	 * sample is what we avoid. */
	struct kid {
		pid_t pid;
		uint64_t start_ticks;  /* 0 = unknown */
	} *kids;
	size_t nkids, capkids;
	int64_t forks;          /* children forked since found */
	void (*fork_fn)(void *arg);
	void *fork_arg;

	/* Life span (clock ticks after boot) of the master we last lost. A
	 * process that started inside it was most likely forked by that master
	 * (an orphaned worker still exiting), so a /proc scan must not take it
	 * for a new master. */
	uint64_t lost_start, lost_end;

	/* Matching execs seen while a master was still tracked: a restart whose
	 * exec the connector reported before the old master's pidfd woke us.
	 * Adopted (if still alive) when the tracked master stops. */
	struct {
		pid_t pid;
		uint64_t start_ticks;
	} pending[8];
	size_t npending;

	/* discovery */
	int nl_fd;
	struct loop_io *nl_io;
	struct loop_timer *rescan;
	/* procfs mode: the pidfd can wake us before the connector has sent
	 * the exit (proc_exit_connector runs after exit_notify): wait a
	 * little for the status before the STOP */
	struct loop_timer *exit_wait;
	bool stop_pending;

	/* eBPF */
	bool prepared;
	struct ebpf_config ebpf;      /* as last prepared */
	struct proclife *pl;
	char mode_reason[256];        /* why procfs mode, "" in ebpf mode */
	struct schedlat *sl;
	char schedlat_reason[256];    /* why off / failed */
	uint64_t rb_drops_seen;       /* proclife ring buffer drops already reconciled */
	uint64_t dropped_kids;        /* workers not recorded (no memory) */
	uint64_t dropped_pending;     /* pending execs overwritten */
	uint64_t worker_starts, worker_stops;

	struct {
		void (*fn)(void *arg, pid_t tgid, bool added);
		void *arg;
	} procs_listeners[MAX_PROC_LISTENERS];
};

static double now_unix(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_identity(struct onepanel *op, const struct onepanel_config *cfg)
{
	free(op->binary);
	free(op->name);
	free(op->pid_file);
	op->binary = op->name = op->pid_file = NULL;
	op->configured = cfg && cfg->configured;
	if (!op->configured)
		return;
	if (cfg->binary) {
		/* /proc/PID/exe is the resolved path: compare against the same. */
		char real[PATH_MAX];
		op->binary = strdup(realpath(cfg->binary, real) ? real : cfg->binary);
	}
	if (cfg->name)
		op->name = strdup(cfg->name);
	if (cfg->pid_file)
		op->pid_file = strdup(cfg->pid_file);
}

/* Does pid look like onepanel? With only a pid_file configured, anything the
 * pid file names is onepanel. */
static bool matches(const struct onepanel *op, pid_t pid, const struct proc_info *pi)
{
	if (op->binary) {
		char exe[PATH_MAX];
		return procfs_read_exe(PROC_ROOT, pid, exe, sizeof(exe)) == 0 && strcmp(exe, op->binary) == 0;
	}
	if (op->name)
		return pi && strcmp(pi->comm, op->name) == 0;
	return op->pid_file != NULL;
}

static pid_t read_pid_file(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *end;
	errno = 0;
	long v = strtol(buf, &end, 10);
	while (*end == '\n' || *end == ' ' || *end == '\r' || *end == '\t')
		end++;
	if (errno || end == buf || *end || v <= 0 || v > INT_MAX)
		return 0;
	return (pid_t)v;
}

struct cand {
	pid_t pid, ppid;
	uint64_t start;
};

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = ((const struct cand *)b)->pid;
	return (x > y) - (x < y);
}

static int cmp_cand(const void *a, const void *b)
{
	pid_t x = ((const struct cand *)a)->pid, y = ((const struct cand *)b)->pid;
	return (x > y) - (x < y);
}

/* The master: a matching process whose parent does not match; the oldest
 * when there are several (two instances, or orphaned workers next to a new
 * master: the master is older than the workers it forked). */
static pid_t scan_proc(struct onepanel *op, struct proc_info *out)
{
	if (!op->binary && !op->name)
		return 0;
	DIR *d = opendir(PROC_ROOT);
	if (!d)
		return 0;
	struct cand *c = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		pid_t pid = (pid_t)atoi(de->d_name);
		struct proc_info pi;
		if (op->binary) {
			if (!matches(op, pid, NULL))
				continue;
			if (procfs_read_proc(PROC_ROOT, pid, &pi))
				continue;
		} else {
			if (procfs_read_proc(PROC_ROOT, pid, &pi) || !matches(op, pid, &pi))
				continue;
		}
		if (pi.state == 'Z' || pi.state == 'X')
			continue;
		if (op->lost_end && pi.start_ticks >= op->lost_start && pi.start_ticks < op->lost_end)
			continue;
		if (n == cap) {
			if (cap >= MAX_CANDIDATES)
				break;
			size_t nc = cap ? cap * 2 : 16;
			struct cand *p = realloc(c, nc * sizeof(*p));
			if (!p)
				break;
			c = p;
			cap = nc;
		}
		c[n++] = (struct cand){ pid, pi.ppid, pi.start_ticks };
	}
	closedir(d);
	pid_t best = 0;
	uint64_t best_start = 0;
	if (n)
		qsort(c, n, sizeof(*c), cmp_cand);
	for (size_t i = 0; i < n; i++) {
		if (bsearch(&c[i].ppid, c, n, sizeof(*c), cmp_pid))
			continue;
		if (!best || c[i].start < best_start) {
			best = c[i].pid;
			best_start = c[i].start;
		}
	}
	free(c);
	if (best && procfs_read_proc(PROC_ROOT, best, out))
		best = 0;
	return best;
}

static void pidfd_ready(void *arg, int fd, uint32_t events);
static void drain_source(struct onepanel *op);
static void nl_drain(struct onepanel *op);
static void master_gone(struct onepanel *op);

static bool has_event_source(const struct onepanel *op)
{
	return op->pl || op->nl_fd >= 0;
}

/* The process set changed: the master or a worker came or went. */
static void notify_procs(struct onepanel *op, pid_t tgid, bool added)
{
	if (op->sl) {
		int rc = added ? schedlat_add_target(op->sl, tgid) : schedlat_remove_target(op->sl, tgid);
		if (rc && rc != -ENOENT)
			log_debug("onepanel: scheduler delay target %d: %s", tgid, strerror(-rc));
	}
	for (size_t i = 0; i < MAX_PROC_LISTENERS; i++)
		if (op->procs_listeners[i].fn)
			op->procs_listeners[i].fn(op->procs_listeners[i].arg, tgid, added);
}

/* true when pid is a new worker */
static bool kid_add(struct onepanel *op, pid_t pid, uint64_t start_ticks)
{
	for (size_t i = 0; i < op->nkids; i++) {
		if (op->kids[i].pid == pid) {
			if (start_ticks)
				op->kids[i].start_ticks = start_ticks;
			return false;
		}
	}
	if (op->nkids == op->capkids) {
		size_t cap = op->capkids ? op->capkids * 2 : 8;
		struct kid *p = realloc(op->kids, cap * sizeof(*p));
		if (!p) {
			op->dropped_kids++;
			return false;
		}
		op->kids = p;
		op->capkids = cap;
	}
	op->kids[op->nkids++] = (struct kid){ pid, start_ticks };
	notify_procs(op, pid, true);
	return true;
}

/* true when pid was a worker (with that start time, when both are known) */
static bool kid_del(struct onepanel *op, pid_t pid, uint64_t start_ticks)
{
	for (size_t i = 0; i < op->nkids; i++) {
		if (op->kids[i].pid != pid)
			continue;
		if (start_ticks && op->kids[i].start_ticks && start_ticks != op->kids[i].start_ticks)
			return false;
		op->kids[i] = op->kids[--op->nkids];
		notify_procs(op, pid, false);
		return true;
	}
	return false;
}

static void kids_clear(struct onepanel *op)
{
	while (op->nkids) {
		pid_t pid = op->kids[--op->nkids].pid;
		notify_procs(op, pid, false);
	}
}

static int read_stat(pid_t pid, struct proc_info *pi)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), PROC_ROOT "/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n <= 0)
		return -EIO;
	return procfs_parse_stat(buf, (size_t)n, pi);
}

/* One scan when the master is found; the event source keeps the set
 * current afterwards. Workers found here existed before: no events. The
 * master is tracked in the kernel first, so a fork racing with the scan is
 * reported by the source as well (kid_add deduplicates). */
static void seed_kids(struct onepanel *op)
{
	kids_clear(op);
	DIR *d = opendir(PROC_ROOT);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		struct proc_info pi;
		pid_t pid = (pid_t)atoi(de->d_name);
		if (read_stat(pid, &pi) || pi.ppid != op->pid || pi.state == 'Z' || pi.state == 'X')
			continue;
		if (op->pl) {
			int rc = proclife_track(op->pl, pid);
			if (rc == -ESRCH)
				continue;
			if (rc)
				log_warn("onepanel: cannot track worker %d in the kernel: %s", pid, strerror(-rc));
		}
		kid_add(op, pid, pi.start_ticks);
	}
	closedir(d);
}

static const char *sig_name(int sig)
{
	const char *s = sigabbrev_np(sig);
	return s ? s : "?";
}

static const char *tracking_name(const struct onepanel *op)
{
	return op->pl ? "ebpf" : op->nl_fd >= 0 ? "proc_connector" : "rescan";
}

static void track(struct onepanel *op, pid_t pid, const struct proc_info *pi, const char *how)
{
	op->running = true;
	op->npending = 0;
	op->forks = 0;
	op->pid = pid;
	op->start_ticks = pi->start_ticks;
	op->start_time = pi->start_time;
	op->since = now_unix();
	op->have_exit = false;
	op->dead = false;
	op->exe[0] = '\0';
	if (procfs_read_exe(PROC_ROOT, pid, op->exe, sizeof(op->exe)))
		snprintf(op->exe, sizeof(op->exe), "%s", pi->comm);

	op->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (op->pidfd >= 0) {
		op->pidfd_io = loop_io_add(op->loop, op->pidfd, EPOLLIN, pidfd_ready, op);
		if (!op->pidfd_io) {
			close(op->pidfd);
			op->pidfd = -1;
		}
	}
	if (op->pidfd < 0) {
		log_warn("onepanel: pidfd_open(%d): %s; checking for its exit by rescan", pid, strerror(errno));
		if (op->rescan)
			loop_timer_arm(op->rescan, RESCAN_MS, RESCAN_MS);
	}
	if (op->pl) {
		int rc = proclife_track(op->pl, pid);
		if (rc && rc != -ESRCH)
			log_warn("onepanel: cannot track pid %d in the kernel: %s", pid, strerror(-rc));
	}
	notify_procs(op, pid, true);
	/* A process found at its exec has no children we have not heard of:
	 * its forks come after the exec in the source's stream. One found
	 * otherwise (pid file, scan, an exec adopted late) may have some. */
	if (has_event_source(op) && strcmp(how, "exec") != 0)
		seed_kids(op);

	if (op->found_count++ > 0)
		log_info("onepanel restarted: pid %d (%s)", pid, op->exe);
	else
		log_info("onepanel found: pid %d (%s) via %s", pid, op->exe, how);
	struct event *e = event_new(EV_ONEPANEL_FOUND, EL_INFO, "onepanel found: pid %d (%s)", pid, op->exe);
	if (e) {
		e->pid = pid;
		event_set_field(e, "exe", "%s", op->exe);
		event_set_field(e, "start_time", "%.3f", op->start_time);
		event_set_field(e, "found_by", "%s", how);
		event_set_field(e, "restarts", "%llu", (unsigned long long)(op->found_count - 1));
		event_set_field(e, "tracking", "%s", tracking_name(op));
		if (op->ev_kns)
			event_set_field(e, "kernel_ns", "%llu", (unsigned long long)op->ev_kns);
		if (has_event_source(op))
			event_set_field(e, "workers", "%zu", op->nkids);
		journal_append(op->journal, e);
	}
}

static void untrack(struct onepanel *op)
{
	if (op->stop_pending)
		loop_timer_disarm(op->exit_wait);
	op->stop_pending = false;
	loop_io_del(op->loop, op->pidfd_io);
	op->pidfd_io = NULL;
	if (op->pidfd >= 0)
		close(op->pidfd);
	op->pidfd = -1;
	if (op->running) {
		kids_clear(op);
		notify_procs(op, op->pid, false);
	}
	op->running = false;
	op->pid = 0;
	op->nkids = 0;
}

static void emit_stop(struct onepanel *op)
{
	pid_t pid = op->pid;
	double uptime = now_unix() - op->start_time;
	struct event *e;
	if (op->have_exit && WIFSIGNALED(op->exit_status)) {
		int sig = WTERMSIG(op->exit_status);
		e = event_new(EV_ONEPANEL_STOP, EL_WARNING, "onepanel stopped: pid %d killed by signal %d (SIG%s)", pid,
			      sig, sig_name(sig));
		if (e) {
			e->has_exit = true;
			e->signal = sig;
		}
		op->has_last_exit = true;
		op->last_exit_code = -1;
		op->last_exit_signal = sig;
	} else if (op->have_exit) {
		int code = WEXITSTATUS(op->exit_status);
		e = event_new(EV_ONEPANEL_STOP, code ? EL_WARNING : EL_INFO,
			      "onepanel stopped: pid %d exited with status %d", pid, code);
		if (e) {
			e->has_exit = true;
			e->exit_code = code;
		}
		op->has_last_exit = true;
		op->last_exit_code = code;
		op->last_exit_signal = 0;
	} else {
		e = event_new(EV_ONEPANEL_STOP, EL_WARNING, "onepanel stopped: pid %d (exit status unknown)", pid);
		op->has_last_exit = false;
	}
	log_info("onepanel stopped: pid %d", pid);
	if (e) {
		e->pid = pid;
		event_set_field(e, "exe", "%s", op->exe);
		event_set_field(e, "uptime_seconds", "%.3f", uptime);
		if (op->have_exit && op->exit_kns)
			event_set_field(e, "kernel_ns", "%llu", (unsigned long long)op->exit_kns);
		journal_append(op->journal, e);
	}
	struct timespec bt;
	clock_gettime(CLOCK_BOOTTIME, &bt);
	long hz = sysconf(_SC_CLK_TCK);
	op->lost_start = op->start_ticks;
	op->lost_end = (uint64_t)bt.tv_sec * (uint64_t)hz + (uint64_t)bt.tv_nsec / (1000000000UL / (uint64_t)hz);
	untrack(op);
	op->since = now_unix();
}

static void emit_worker(struct onepanel *op, bool start, pid_t pid, bool has_status, int status)
{
	struct event *e;
	if (start) {
		op->worker_starts++;
		e = event_new(EV_ONEPANEL_WORKER_START, EL_INFO, "onepanel worker started: pid %d (master %d)", pid,
			      op->pid);
	} else if (has_status && WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		/* SIGTERM/SIGQUIT are how a master retires its workers */
		bool expected = sig == SIGTERM || sig == SIGQUIT;
		op->worker_stops++;
		e = event_new(EV_ONEPANEL_WORKER_STOP, expected ? EL_INFO : EL_WARNING,
			      "onepanel worker stopped: pid %d killed by signal %d (SIG%s)", pid, sig, sig_name(sig));
		if (e) {
			e->has_exit = true;
			e->signal = sig;
		}
	} else if (has_status) {
		int code = WEXITSTATUS(status);
		op->worker_stops++;
		e = event_new(EV_ONEPANEL_WORKER_STOP, code ? EL_WARNING : EL_INFO,
			      "onepanel worker stopped: pid %d exited with status %d", pid, code);
		if (e) {
			e->has_exit = true;
			e->exit_code = code;
		}
	} else {
		op->worker_stops++;
		e = event_new(EV_ONEPANEL_WORKER_STOP, EL_INFO, "onepanel worker stopped: pid %d", pid);
	}
	if (e) {
		e->pid = pid;
		event_set_field(e, "ppid", "%d", op->pid);
		if (op->ev_kns)
			event_set_field(e, "kernel_ns", "%llu", (unsigned long long)op->ev_kns);
		journal_append(op->journal, e);
	}
}

/* Look for the master: pid file first, then (if allowed) /proc. Right after
 * the master stopped only the pid file is trusted: workers orphaned by a
 * master killed with SIGKILL match the executable and have init as parent,
 * and a scan would take one of them for a new master. A real restart is an
 * exec, which the event source reports. */
static void find(struct onepanel *op, const char *why, bool allow_scan)
{
	struct proc_info pi;
	if (op->running || !op->configured)
		return;
	if (op->pid_file) {
		pid_t pid = read_pid_file(op->pid_file);
		if (pid > 0 && procfs_read_proc(PROC_ROOT, pid, &pi) == 0 && pi.state != 'Z' &&
		    pi.state != 'X' && !(op->lost_end && pi.start_ticks == op->lost_start) &&
		    matches(op, pid, &pi)) {
			track(op, pid, &pi, "pid_file");
			return;
		}
	}
	if (!allow_scan)
		return;
	pid_t pid = scan_proc(op, &pi);
	if (pid > 0)
		track(op, pid, &pi, why);
}

/* Is the tracked (pid, start time) still alive? Used where no pidfd. */
static bool still_alive(struct onepanel *op)
{
	struct proc_info pi;
	return procfs_read_proc(PROC_ROOT, op->pid, &pi) == 0 && pi.start_ticks == op->start_ticks &&
	       pi.state != 'Z' && pi.state != 'X';
}

static void adopt_pending(struct onepanel *op)
{
	for (size_t i = 0; i < op->npending && !op->running; i++) {
		struct proc_info pi;
		pid_t pid = op->pending[i].pid;
		if (procfs_read_proc(PROC_ROOT, pid, &pi) == 0 && pi.start_ticks == op->pending[i].start_ticks &&
		    pi.state != 'Z' && matches(op, pid, &pi))
			track(op, pid, &pi, "exec_pending");
	}
	op->npending = 0;
}

/* The master is gone: STOP, then look for its successor. */
static void master_gone(struct onepanel *op)
{
	emit_stop(op);
	find(op, "pid_file", !has_event_source(op));
	adopt_pending(op);
}

static void pidfd_ready(void *arg, int fd, uint32_t events)
{
	struct onepanel *op = arg;
	(void)events;
	drain_source(op);
	if (!op->running || fd != op->pidfd)
		return;
	/* eBPF's record of the exit precedes the pidfd's wakeup; the
	 * connector's follows it, usually within microseconds */
	if (op->nl_fd >= 0 && !op->have_exit && op->exit_wait) {
		loop_io_del(op->loop, op->pidfd_io);
		op->pidfd_io = NULL;
		op->stop_pending = true;
		loop_timer_arm(op->exit_wait, EXIT_WAIT_MS, 0);
		return;
	}
	master_gone(op);
}

static void exit_wait_done(void *arg)
{
	struct onepanel *op = arg;
	if (op->stop_pending && op->running) {
		nl_drain(op);
		if (op->running)
			master_gone(op);
	}
}

/* Events may have been lost (ring buffer or connector overrun): compare
 * with /proc instead of trusting what we have. */
static void reconcile(struct onepanel *op, const char *why)
{
	log_warn("onepanel: %s; checking the process set against /proc", why);
	if (op->running && op->pidfd < 0 && !still_alive(op))
		master_gone(op);
	if (op->running && has_event_source(op))
		seed_kids(op);
	if (!op->running)
		find(op, "scan", true);
}

static void rescan_tick(void *arg)
{
	struct onepanel *op = arg;
	if (op->running && op->pidfd < 0 && !still_alive(op))
		master_gone(op);
	if (!op->running)
		find(op, "scan", true);
}

/* ---- the three events, from either source ---- */

static void on_proc_exec(struct onepanel *op, pid_t pid, bool autotracked)
{
	if (!op->configured)
		return;
	struct proc_info pi, ppi;
	/* This runs for every exec the source reports (every exec on the host
	 * with the connector): read only the stat line (and the exe link)
	 * until the process matches. Our own children (the validator running
	 * "nginx -t") are never onepanel. */
	if (read_stat(pid, &pi) || !matches(op, pid, &pi) || pi.ppid == getpid()) {
		if (autotracked)
			proclife_untrack(op->pl, pid);
		return;
	}
	/* A new master is a matching exec whose parent does not match (a
	 * matching parent means a child of onepanel, e.g. an upgrade). */
	bool child_of_onepanel = read_stat(pi.ppid, &ppi) == 0 && matches(op, pi.ppid, &ppi);
	if (op->running) {
		if (pid == op->pid || child_of_onepanel)
			return;
		size_t i = op->npending;
		if (i < sizeof(op->pending) / sizeof(op->pending[0])) {
			op->npending++;
		} else {
			op->dropped_pending++;
			i = 0;
		}
		op->pending[i].pid = pid;
		op->pending[i].start_ticks = pi.start_ticks;
		return;
	}
	if (op->pid_file) {
		find(op, "exec", false);
		if (op->running)
			return;
	}
	/* pi (the stat line) is all track() needs: FOUND is on the event's
	 * path, and the full /proc read costs several files */
	if (!child_of_onepanel) {
		static double btime = -1;
		if (btime < 0 && procfs_boot_time(PROC_ROOT, &btime))
			btime = 0;
		pi.start_time = btime + (double)pi.start_ticks / (double)sysconf(_SC_CLK_TCK);
		track(op, pid, &pi, "exec");
	}
}

static void on_proc_fork(struct onepanel *op, pid_t parent, uint64_t parent_start, pid_t child, uint64_t child_start)
{
	if (!op->running || parent != op->pid || op->dead)
		return;
	if (parent_start && parent_start != op->start_ticks)
		return;
	op->forks++;
	if (kid_add(op, child, child_start))
		emit_worker(op, true, child, false, 0);
	if (op->fork_fn)
		op->fork_fn(op->fork_arg);
}

/* whole: the last thread of tgid (the process) exited; the connector also
 * reports single threads, which carry the status of the master when its
 * last one goes. */
static void on_proc_exit(struct onepanel *op, pid_t tgid, uint64_t start, pid_t ppid, int status, bool whole)
{
	if (!op->running)
		return;
	if (tgid == op->pid && (!start || start == op->start_ticks)) {
		op->have_exit = true;
		op->exit_status = status;
		op->exit_kns = op->ev_kns;
		op->dead = op->dead || whole;
		/* eBPF reports the exit of the last thread once, at
		 * sched_process_exit: commit there, without waiting for the
		 * pidfd (find() skips the dying master by its start time). */
		if ((whole && op->pl) || op->stop_pending)
			master_gone(op);
		return;
	}
	/* Workers outliving a dead master are orphans, not our workers: by
	 * the time they exit they have been reparented. (The connector reports
	 * the master's own exit after it has signalled its children with
	 * PR_SET_PDEATHSIG, so their exits can come first.) */
	if (!whole || op->dead || ppid != op->pid)
		return;
	if (kid_del(op, tgid, start))
		emit_worker(op, false, tgid, true, status);
}

/* ---- eBPF source ---- */

static void pl_event(void *arg, const struct proclife_event *ev)
{
	struct onepanel *op = arg;
	uint64_t start = proclife_ns_to_ticks(ev->start_ns);
	/* ts_ns is CLOCK_BOOTTIME; events carry CLOCK_MONOTONIC like the
	 * connector's (the two differ by the time spent suspended) */
	struct timespec b, m;
	clock_gettime(CLOCK_BOOTTIME, &b);
	clock_gettime(CLOCK_MONOTONIC, &m);
	int64_t off = ((int64_t)b.tv_sec - m.tv_sec) * 1000000000 + (b.tv_nsec - m.tv_nsec);
	if (off < 0) /* the two reads are not simultaneous */
		off = 0;
	op->ev_kns = ev->ts_ns > (uint64_t)off ? ev->ts_ns - (uint64_t)off : 0;
	switch (ev->type) {
	case PROCLIFE_EXEC:
		if (ev->flags & PROCLIFE_F_MATCHED)
			on_proc_exec(op, (pid_t)ev->tgid, (ev->flags & PROCLIFE_F_AUTOTRACK) != 0);
		break;
	case PROCLIFE_FORK:
		on_proc_fork(op, (pid_t)ev->ppid, ev->parent_start_ns ? proclife_ns_to_ticks(ev->parent_start_ns) : 0,
			(pid_t)ev->tgid, start);
		break;
	case PROCLIFE_EXIT:
		on_proc_exit(op, (pid_t)ev->tgid, start, (pid_t)ev->ppid, (int)ev->exit_status, true);
		break;
	default:
		break;
	}
	op->ev_kns = 0;
}

/* ---- netlink proc connector source ---- */

static void handle_proc_event(struct onepanel *op, const struct proc_event *ev)
{
	op->ev_kns = ev->timestamp_ns;
	switch (ev->what) {
	case PROC_EVENT_EXEC:
		on_proc_exec(op, ev->event_data.exec.process_tgid, false);
		break;
	case PROC_EVENT_FORK:
		if (ev->event_data.fork.child_pid == ev->event_data.fork.child_tgid)
			on_proc_fork(op, ev->event_data.fork.parent_tgid, 0, ev->event_data.fork.child_tgid, 0);
		break;
	case PROC_EVENT_EXIT:
		on_proc_exit(op, ev->event_data.exit.process_tgid, 0, ev->event_data.exit.parent_tgid,
			     (int)ev->event_data.exit.exit_code,
			ev->event_data.exit.process_pid == ev->event_data.exit.process_tgid);
		break;
	default:
		break;
	}
	op->ev_kns = 0;
}

static void nl_drain(struct onepanel *op)
{
	char buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
	if (op->nl_fd < 0)
		return;
	for (;;) {
		ssize_t n = recv(op->nl_fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {
				/* Overrun during an exec storm: events were lost. */
				reconcile(op, "proc connector overrun");
				continue;
			}
			return;
		}
		if (n == 0)
			return;
		for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)n); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_ERROR || nh->nlmsg_type == NLMSG_NOOP)
				continue;
			struct cn_msg *cn = NLMSG_DATA(nh);
			if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(*cn)) ||
			    cn->id.idx != CN_IDX_PROC || cn->len < sizeof(struct proc_event) ||
			    nh->nlmsg_len < NLMSG_LENGTH(sizeof(*cn) + sizeof(struct proc_event)))
				continue;
			/* cn_msg's payload sits at offset 36: copy it out to an
			 * aligned proc_event rather than read it in place. */
			struct proc_event ev;
			memcpy(&ev, cn->data, sizeof(ev));
			handle_proc_event(op, &ev);
		}
	}
}

static void nl_ready(void *arg, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	nl_drain(arg);
}

static void drain_source(struct onepanel *op)
{
	if (op->pl)
		proclife_consume(op->pl);
	else
		nl_drain(op);
}

static int connector_open(void)
{
	int fd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
	if (fd < 0)
		return -errno;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0 };
	int rcv = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	/* nlmsghdr | cn_msg | op, laid out by hand: cn_msg ends in a
	 * flexible array, so it cannot sit inside a struct. */
	char msg[NLMSG_LENGTH(sizeof(struct cn_msg) + sizeof(enum proc_cn_mcast_op))]
		__attribute__((aligned(NLMSG_ALIGNTO)));
	memset(msg, 0, sizeof(msg));
	struct nlmsghdr *nh = (struct nlmsghdr *)msg;
	nh->nlmsg_len = sizeof(msg);
	nh->nlmsg_type = NLMSG_DONE;
	struct cn_msg *cn = NLMSG_DATA(nh);
	cn->id.idx = CN_IDX_PROC;
	cn->id.val = CN_VAL_PROC;
	cn->len = sizeof(enum proc_cn_mcast_op);
	enum proc_cn_mcast_op op = PROC_CN_MCAST_LISTEN;
	memcpy(cn->data, &op, sizeof(op));
	if (send(fd, &msg, sizeof(msg), 0) < 0)
		goto fail;
	return fd;
fail:;
	int e = errno;
	close(fd);
	return -e;
}

/* ---- lifecycle ---- */

struct onepanel *onepanel_new(struct loop *l, struct journal *j, const struct onepanel_config *cfg)
{
	struct onepanel *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->loop = l;
	op->journal = j;
	op->pidfd = -1;
	op->nl_fd = -1;
	set_identity(op, cfg);
	op->since = now_unix();
	return op;
}

static void close_schedlat(struct onepanel *op)
{
	schedlat_close(op->sl);
	op->sl = NULL;
}

static void close_sources(struct onepanel *op)
{
	proclife_close(op->pl);
	op->pl = NULL;
	loop_io_del(op->loop, op->nl_io);
	op->nl_io = NULL;
	if (op->nl_fd >= 0)
		close(op->nl_fd);
	op->nl_fd = -1;
	loop_timer_free(op->loop, op->rescan);
	op->rescan = NULL;
	loop_timer_free(op->loop, op->exit_wait);
	op->exit_wait = NULL;
	close_schedlat(op);
}

void onepanel_free(struct onepanel *op)
{
	if (!op)
		return;
	untrack(op);
	close_sources(op);
	free(op->binary);
	free(op->name);
	free(op->pid_file);
	free(op->kids);
	free(op);
}

/* In a PID namespace of its own (a container), the kernel's programs see
 * host pids and /proc shows the namespace's: eBPF mode would track the
 * wrong numbers. The initial PID namespace has a fixed inode number
 * (PROC_PID_INIT_INO); a container's own /proc hides the levels above it,
 * so NSpid cannot tell. */
static bool in_child_pid_ns(void)
{
	char link[64];
	ssize_t n = readlink(PROC_ROOT "/self/ns/pid", link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = '\0';
	return strcmp(link, "pid:[4026531836]") != 0;
}

static bool ebpf_wanted(const struct onepanel *op, const char **why)
{
	const char *force = getenv("ONESHIELD_FORCE_PROCFS");
	if (force && *force == '1') {
		*why = "forced by ONESHIELD_FORCE_PROCFS=1";
		return false;
	}
	if (!op->ebpf.enabled) {
		*why = "ebpf.enabled is false in the configuration";
		return false;
	}
	if (in_child_pid_ns()) {
		*why = "the agent runs in a PID namespace of its own (a container): eBPF programs see host pids";
		return false;
	}
	return true;
}

/* The scheduler-delay probe, targets the current process set. */
static void setup_schedlat(struct onepanel *op)
{
	const char *why = NULL;
	close_schedlat(op);
	if (!ebpf_wanted(op, &why)) {
		snprintf(op->schedlat_reason, sizeof(op->schedlat_reason), "off: %s", why);
		return;
	}
	if (!op->ebpf.scheduler_delay) {
		snprintf(op->schedlat_reason, sizeof(op->schedlat_reason), "off: ebpf.scheduler_delay is false");
		return;
	}
	if (!op->configured) {
		snprintf(op->schedlat_reason, sizeof(op->schedlat_reason), "off: no onepanel configured");
		return;
	}
	char err[200] = "";
	int rc = schedlat_open(&op->sl, err, sizeof(err));
	if (rc) {
		snprintf(op->schedlat_reason, sizeof(op->schedlat_reason), "unavailable: %s",
			 err[0] ? err : strerror(-rc));
		log_warn("onepanel: scheduler delay metrics %s", op->schedlat_reason);
		return;
	}
	op->schedlat_reason[0] = '\0';
	if (op->running) {
		schedlat_add_target(op->sl, op->pid);
		for (size_t i = 0; i < op->nkids; i++)
			schedlat_add_target(op->sl, op->kids[i].pid);
	}
}

int onepanel_prepare(struct onepanel *op, const struct ebpf_config *eb)
{
	if (op->running)
		untrack(op);
	/* An open proc connector is kept for reuse below: opening one needs
	 * CAP_NET_ADMIN (before Linux 6.6), which the agent drops after start
	 * (privs.h), and a SIGHUP comes here again. */
	int old_nl = op->nl_fd;
	loop_io_del(op->loop, op->nl_io);
	op->nl_io = NULL;
	op->nl_fd = -1;
	close_sources(op);
	op->prepared = true;
	op->ebpf = *eb;
	op->rb_drops_seen = 0;

	const char *why = NULL;
	op->mode_reason[0] = '\0';
	if (!ebpf_wanted(op, &why)) {
		snprintf(op->mode_reason, sizeof(op->mode_reason), "%s", why);
	} else if (op->configured && !op->binary && !op->name) {
		snprintf(op->mode_reason, sizeof(op->mode_reason),
			 "onepanel is identified by pid_file only; the kernel-side filter needs onepanel.binary "
			 "or onepanel.name");
	} else {
		struct proclife_opts o = { 0 };
		char base[16];
		if (op->name)
			o.comm = op->name;
		if (op->binary) {
			const char *b = strrchr(op->binary, '/');
			snprintf(base, sizeof(base), "%s", b ? b + 1 : op->binary);
			if (base[0])
				o.basename_prefix = base;
		}
		char err[200] = "";
		int rc = proclife_open(op->loop, &o, pl_event, op, &op->pl, err, sizeof(err));
		if (rc)
			snprintf(op->mode_reason, sizeof(op->mode_reason), "eBPF process events unavailable: %s",
				 err[0] ? err : strerror(-rc));
	}
	if (op->pl)
		log_info("eBPF mode: process events through %s tracepoints and a %s", proclife_variant(op->pl),
			 strcmp(proclife_transport(op->pl), "perfbuf") == 0 ? "perf buffer" : "ring buffer");
	else
		log_warn("procfs mode: %s", op->mode_reason);

	if (!op->pl && op->configured) {
		/* ONESHIELD_NO_PROC_CONNECTOR=1 forces the /proc-rescan fallback,
		 * as on a host without the connector (diagnostics and tests). */
		const char *no_cn = getenv("ONESHIELD_NO_PROC_CONNECTOR");
		int fd = no_cn && *no_cn == '1' ? -EPROTONOSUPPORT : old_nl >= 0 ? old_nl : connector_open();
		if (fd == old_nl)
			old_nl = -1;
		if (fd >= 0) {
			op->nl_fd = fd;
			op->nl_io = loop_io_add(op->loop, fd, EPOLLIN, nl_ready, op);
			if (!op->nl_io) {
				close(fd);
				op->nl_fd = -1;
			}
		}
		if (op->nl_fd < 0)
			log_warn("onepanel: netlink proc connector unavailable (%s); rescanning /proc every %d ms",
				 strerror(-fd), RESCAN_MS);
	}
	if (old_nl >= 0)
		close(old_nl);
	/* The rescan timer also covers a master we could not get a pidfd for. */
	op->rescan = loop_timer_new(op->loop, rescan_tick, op);
	op->exit_wait = loop_timer_new(op->loop, exit_wait_done, op);
	if (op->rescan && op->configured && !has_event_source(op))
		loop_timer_arm(op->rescan, RESCAN_MS, RESCAN_MS);
	setup_schedlat(op);
	return 0;
}

int onepanel_start(struct onepanel *op)
{
	if (!op->prepared) {
		struct ebpf_config eb = { .enabled = true, .scheduler_delay = true };
		onepanel_prepare(op, &eb);
	}
	if (!op->configured) {
		log_info("onepanel: not configured; tracking host metrics only");
		return 0;
	}
	find(op, "scan", true);
	if (!op->running)
		log_info("onepanel: not running yet; waiting for it to start");
	return 0;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int onepanel_reconfigure(struct onepanel *op, const struct onepanel_config *cfg, const struct ebpf_config *eb)
{
	struct onepanel tmp = { 0 };
	set_identity(&tmp, cfg);
	bool same = tmp.configured == op->configured && str_eq(tmp.binary, op->binary) &&
		    str_eq(tmp.name, op->name) && str_eq(tmp.pid_file, op->pid_file);
	free(tmp.binary);
	free(tmp.name);
	free(tmp.pid_file);
	if (same && eb->enabled == op->ebpf.enabled) {
		if (eb->scheduler_delay != op->ebpf.scheduler_delay) {
			op->ebpf = *eb;
			setup_schedlat(op);
		}
		op->ebpf = *eb;
		return 0;
	}
	log_info("onepanel: %s changed; looking for it again", same ? "ebpf.enabled" : "identity");
	if (op->running)
		untrack(op);
	set_identity(op, cfg);
	op->found_count = 0;
	op->lost_start = op->lost_end = 0;
	onepanel_prepare(op, eb);
	if (op->configured)
		find(op, "scan", true);
	return 0;
}

void onepanel_get_state(const struct onepanel *op, struct onepanel_state *st)
{
	memset(st, 0, sizeof(*st));
	st->configured = op->configured;
	st->running = op->running;
	st->pid = op->pid;
	snprintf(st->exe, sizeof(st->exe), "%s", op->running ? op->exe : "");
	st->start_time = op->running ? op->start_time : 0;
	st->since = op->since;
	st->restarts = op->found_count ? op->found_count - 1 : 0;
	st->has_last_exit = op->has_last_exit;
	st->last_exit_code = op->last_exit_code;
	st->last_exit_signal = op->last_exit_signal;
	st->tracking = tracking_name(op);
	st->workers = op->running && has_event_source(op) ? (int64_t)op->nkids : -1;
	st->mode = onepanel_mode(op);
	st->mode_reason = op->mode_reason;
	st->process_events = op->pl ? proclife_variant(op->pl) : "off";
	st->process_events_transport = op->pl ? proclife_transport(op->pl) : "off";
	st->scheduler_delay = op->sl ? schedlat_mode(op->sl) : "off";
	st->scheduler_delay_reason = op->schedlat_reason;
}

const char *onepanel_mode(const struct onepanel *op)
{
	return op->pl ? "ebpf" : "procfs";
}

int onepanel_signal(struct onepanel *op, int sig)
{
	if (!op->running)
		return -ESRCH;
	if (op->pidfd >= 0) {
		if (syscall(SYS_pidfd_send_signal, op->pidfd, sig, NULL, 0) == 0)
			return 0;
		if (errno != ENOSYS)
			return -errno;
	}
	return kill(op->pid, sig) < 0 ? -errno : 0;
}

void onepanel_on_fork(struct onepanel *op, void (*fn)(void *arg), void *arg)
{
	op->fork_fn = fn;
	op->fork_arg = arg;
}

int onepanel_on_procs(struct onepanel *op, void (*fn)(void *arg, pid_t tgid, bool added), void *arg)
{
	for (size_t i = 0; i < MAX_PROC_LISTENERS; i++) {
		if (!op->procs_listeners[i].fn) {
			op->procs_listeners[i].fn = fn;
			op->procs_listeners[i].arg = arg;
			return 0;
		}
	}
	return -ENOSPC;
}

void onepanel_off_procs(struct onepanel *op, void (*fn)(void *arg, pid_t tgid, bool added), void *arg)
{
	for (size_t i = 0; i < MAX_PROC_LISTENERS; i++)
		if (op->procs_listeners[i].fn == fn && op->procs_listeners[i].arg == arg)
			op->procs_listeners[i].fn = NULL;
}

size_t onepanel_procs(const struct onepanel *op, pid_t *out, size_t max)
{
	size_t n = 0;
	if (!op->running)
		return 0;
	if (n < max)
		out[n++] = op->pid;
	for (size_t i = 0; i < op->nkids && n < max; i++)
		out[n++] = op->kids[i].pid;
	return n;
}

int64_t onepanel_forks(const struct onepanel *op)
{
	return has_event_source(op) ? op->forks : -1;
}

int64_t onepanel_children(const struct onepanel *op)
{
	return has_event_source(op) && op->running ? (int64_t)op->nkids : -1;
}

uint64_t onepanel_start_ticks(const struct onepanel *op)
{
	return op->running ? op->start_ticks : 0;
}

static void collect_bpf(struct onepanel *op, struct metrics *m)
{
	struct proclife_counters c;
	if (proclife_counters(op->pl, &c) == 0) {
		if (c.ringbuf_drops > op->rb_drops_seen) {
			op->rb_drops_seen = c.ringbuf_drops;
			reconcile(op, "eBPF ring buffer overrun");
		}
		metrics_declare(m, "oneshield_agent_bpf_host_execs_total", MT_COUNTER,
				"Successful execs on the host since the agent loaded its eBPF programs.");
		metrics_declare(m, "oneshield_agent_bpf_host_forks_total", MT_COUNTER,
				"New processes on the host since the agent loaded its eBPF programs.");
		metrics_declare(m, "oneshield_agent_bpf_host_exits_total", MT_COUNTER,
				"Process exits on the host since the agent loaded its eBPF programs.");
		metrics_declare(m, "oneshield_agent_bpf_ringbuf_drops_total", MT_COUNTER,
				"Events lost because an eBPF ring buffer was full.");
		metrics_declare(m, "oneshield_agent_bpf_events_total", MT_COUNTER,
				"Process events by stage: written by the kernel, delivered to the tracker, malformed.");
		metrics_declare(m, "oneshield_agent_bpf_track_full_total", MT_COUNTER,
				"Processes the kernel could not add to the tracked set (set full).");
		metrics_declare(m, "oneshield_agent_bpf_stale_tracked_total", MT_COUNTER,
				"Tracked entries dropped because the pid was reused by another process.");
		metrics_add(m, "oneshield_agent_bpf_host_execs_total", (double)c.execs, NULL);
		metrics_add(m, "oneshield_agent_bpf_host_forks_total", (double)c.forks, NULL);
		metrics_add(m, "oneshield_agent_bpf_host_exits_total", (double)c.exits, NULL);
		metrics_add(m, "oneshield_agent_bpf_ringbuf_drops_total", (double)c.ringbuf_drops, "module", "proclife",
			    NULL);
		metrics_add(m, "oneshield_agent_bpf_events_total", (double)c.events_emitted, "stage", "emitted", NULL);
		metrics_add(m, "oneshield_agent_bpf_events_total", (double)c.events_delivered, "stage", "delivered",
			    NULL);
		metrics_add(m, "oneshield_agent_bpf_events_total", (double)c.events_malformed, "stage", "malformed",
			    NULL);
		metrics_add(m, "oneshield_agent_bpf_track_full_total", (double)c.track_full, NULL);
		metrics_add(m, "oneshield_agent_bpf_stale_tracked_total", (double)c.stale_tracked, NULL);
	}
	proclife_add_prog_metrics(op->pl, m);
}

int onepanel_collect(struct onepanel *op, struct metrics *m)
{
	if (op->pl)
		collect_bpf(op, m);
	if (op->sl)
		schedlat_collect(op->sl, m, NULL);
	if (!op->configured)
		return 0;
	metrics_declare(m, "onepanel_up", MT_GAUGE, "1 if the onepanel master process is running.");
	metrics_declare(m, "onepanel_restarts_total", MT_COUNTER, "Times onepanel was found again after it stopped.");
	metrics_add(m, "onepanel_up", op->running ? 1 : 0, NULL);
	metrics_add(m, "onepanel_restarts_total", op->found_count ? (double)(op->found_count - 1) : 0, NULL);
	if (has_event_source(op)) {
		metrics_declare(m, "onepanel_worker_starts_total", MT_COUNTER,
				"Workers the onepanel master forked while the agent watched.");
		metrics_declare(m, "onepanel_worker_stops_total", MT_COUNTER,
				"Workers of the onepanel master that exited while the agent watched.");
		metrics_add(m, "onepanel_worker_starts_total", (double)op->worker_starts, NULL);
		metrics_add(m, "onepanel_worker_stops_total", (double)op->worker_stops, NULL);
	}
	metrics_declare(m, "oneshield_agent_tracking_dropped_total", MT_COUNTER,
			"Process-tracking records the agent could not keep, by reason.");
	metrics_add(m, "oneshield_agent_tracking_dropped_total", (double)op->dropped_kids, "reason", "worker_nomem",
		    NULL);
	metrics_add(m, "oneshield_agent_tracking_dropped_total", (double)op->dropped_pending, "reason",
		    "pending_exec_overflow", NULL);
	if (!op->running)
		return 0;
	struct proc_info pi;
	if (procfs_read_proc(PROC_ROOT, op->pid, &pi) || pi.start_ticks != op->start_ticks)
		return 0; /* exiting right now: the pidfd will tell */
	metrics_declare(m, "onepanel_pid", MT_GAUGE, "Process id of the onepanel master.");
	metrics_declare(m, "onepanel_start_time_seconds", MT_GAUGE, "Start time of the onepanel master, unix seconds.");
	metrics_declare(m, "onepanel_cpu_seconds_total", MT_COUNTER, "CPU time of the onepanel master by mode.");
	metrics_declare(m, "onepanel_resident_memory_bytes", MT_GAUGE, "Resident set size of the onepanel master.");
	metrics_declare(m, "onepanel_virtual_memory_bytes", MT_GAUGE, "Virtual memory size of the onepanel master.");
	metrics_declare(m, "onepanel_threads", MT_GAUGE, "Threads of the onepanel master.");
	metrics_declare(m, "onepanel_children", MT_GAUGE, "Direct child processes of the onepanel master (workers).");
	metrics_add(m, "onepanel_pid", op->pid, NULL);
	metrics_add(m, "onepanel_start_time_seconds", op->start_time, NULL);
	metrics_add(m, "onepanel_cpu_seconds_total", pi.cpu_user_seconds, "mode", "user", NULL);
	metrics_add(m, "onepanel_cpu_seconds_total", pi.cpu_system_seconds, "mode", "system", NULL);
	metrics_add(m, "onepanel_resident_memory_bytes", (double)pi.rss_bytes, NULL);
	metrics_add(m, "onepanel_virtual_memory_bytes", (double)pi.vsize_bytes, NULL);
	metrics_add(m, "onepanel_threads", (double)pi.threads, NULL);
	if (has_event_source(op))
		metrics_add(m, "onepanel_children", (double)op->nkids, NULL);
	else if (pi.children >= 0)
		metrics_add(m, "onepanel_children", (double)pi.children, NULL);
	if (pi.open_fds >= 0) {
		metrics_declare(m, "onepanel_open_fds", MT_GAUGE, "Open file descriptors of the onepanel master.");
		metrics_add(m, "onepanel_open_fds", (double)pi.open_fds, NULL);
	}
	if (pi.read_bytes >= 0) {
		metrics_declare(m, "onepanel_io_read_bytes_total", MT_COUNTER,
				"Bytes the onepanel master caused to be read from storage.");
		metrics_declare(m, "onepanel_io_written_bytes_total", MT_COUNTER,
				"Bytes the onepanel master caused to be written to storage.");
		metrics_add(m, "onepanel_io_read_bytes_total", (double)pi.read_bytes, NULL);
		metrics_add(m, "onepanel_io_written_bytes_total", (double)pi.write_bytes, NULL);
	}
	return 0;
}
