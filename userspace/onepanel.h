/* Tracking the onepanel master process and its workers.
 *
 * Source: eBPF process events (bpf/proclife.bpf.c) when the kernel allows,
 * else ("procfs mode") the netlink proc connector, else a /proc rescan; see
 * the top of onepanel.c. onepanel_prepare() chooses, onepanel_mode() says
 * which and mode_reason why not eBPF. The rest of this comment describes
 * procfs mode; eBPF mode emits the same events from the kernel's records.
 *
 * Identity: the configured pid_file when it names a live matching process,
 * else a /proc scan for processes whose executable is `binary` (or whose comm
 * is `name`); the master is the matching process whose parent does not match,
 * the oldest if there are several. A tracked process is (pid, start time), so
 * a recycled pid is never mistaken for the one we saw.
 *
 * Exit: a pidfd of the master in the core loop; the exit status comes from the
 * netlink proc connector's exit event (a pidfd of a process we did not fork
 * cannot be waited for), which the kernel queues before the pidfd turns
 * readable. Start: the proc connector's exec events; only where the connector
 * is unavailable does a slow /proc rescan run, and it is said in status. */
#ifndef OS_ONEPANEL_H
#define OS_ONEPANEL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct loop;
struct journal;
struct metrics;
struct onepanel_config;
struct ebpf_config;

struct onepanel_state {
	bool configured;
	bool running;
	pid_t pid;
	char exe[256];
	double start_time;       /* unix seconds the process started */
	double since;            /* unix seconds we found it / saw it stop */
	uint64_t restarts;       /* FOUND events after the first one */
	bool has_last_exit;
	int last_exit_code;
	int last_exit_signal;
	const char *tracking;    /* "ebpf", "proc_connector" or "rescan" */
	int64_t workers;         /* live direct children; -1 unknown */
	const char *mode;        /* "ebpf" or "procfs" */
	const char *mode_reason; /* why procfs mode; "" in ebpf mode */
	const char *process_events;  /* proclife flavour ("tp_btf", ...) or "off" */
	const char *process_events_transport; /* "ringbuf", "perfbuf" or "off" */
	const char *scheduler_delay; /* schedlat variant or "off" */
	const char *scheduler_delay_reason; /* why off; "" when on */
};

struct onepanel;

/* cfg is copied; the tracker does not keep the pointer. */
struct onepanel *onepanel_new(struct loop *l, struct journal *j, const struct onepanel_config *cfg);
void onepanel_free(struct onepanel *op);             /* accepts NULL */
/* Choose and open the event source (eBPF, else connector, else rescan) and
 * the scheduler-delay probe; logs one line saying which. Call before
 * onepanel_start (which otherwise prepares with defaults). Never fails: the
 * worst case is rescan mode. */
int onepanel_prepare(struct onepanel *op, const struct ebpf_config *eb);
/* "ebpf" or "procfs" */
const char *onepanel_mode(const struct onepanel *op);
/* Find the master now and start watching; emits ONEPANEL_FOUND if found. */
int onepanel_start(struct onepanel *op);
/* Agent config reload: a new identity or ebpf.enabled forgets the master
 * and prepares again; ebpf.scheduler_delay alone only (re)opens that probe. */
int onepanel_reconfigure(struct onepanel *op, const struct onepanel_config *cfg, const struct ebpf_config *eb);
void onepanel_get_state(const struct onepanel *op, struct onepanel_state *st);
/* Send sig to the tracked master (through its pidfd when there is one, so a
 * recycled pid is never signalled). 0, -ESRCH when not running, -errno. */
int onepanel_signal(struct onepanel *op, int sig);
/* Children the master forked since it was found, as seen by the event
 * source (counts up; compare two readings). -1 in rescan mode. */
int64_t onepanel_forks(const struct onepanel *op);
/* Called after the master forks a child (proc connector); one listener,
 * NULL to clear. Lets reload verification react at once instead of on its
 * next tick. */
void onepanel_on_fork(struct onepanel *op, void (*fn)(void *arg), void *arg);
/* Listeners for the process set (master and direct children): added when
 * found/forked/seeded, removed when gone. At most 4; -ENOSPC beyond. */
int onepanel_on_procs(struct onepanel *op, void (*fn)(void *arg, pid_t tgid, bool added), void *arg);
void onepanel_off_procs(struct onepanel *op, void (*fn)(void *arg, pid_t tgid, bool added), void *arg);
/* The current set, master first; returns how many were written. */
size_t onepanel_procs(const struct onepanel *op, pid_t *out, size_t max);
/* Live direct children (workers); -1 when unknown. */
int64_t onepanel_children(const struct onepanel *op);
/* Identity of the tracked master: start time in clock ticks after boot. */
uint64_t onepanel_start_ticks(const struct onepanel *op);

/* onepanel_* metrics of the master into m (up is 0 when not running). */
int onepanel_collect(struct onepanel *op, struct metrics *m);

#endif
