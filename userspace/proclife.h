/* Process lifecycle through eBPF: exec, fork and exit of onepanel and its
 * descendants, delivered on the core loop (the event buffer's epoll fd is a
 * loop source; no thread, no polling).
 *
 * What is reported (struct proclife_event in include/proclife.h):
 *   EXEC  a process whose comm equals opts.comm (or whose executable basename
 *         starts with opts.basename_prefix) exec'd: flags has MATCHED; or a
 *         tracked process exec'd: flags has TRACKED (both may be set).
 *   FORK  a tracked process created a new process (threads are not
 *         reported); the child is tracked from then on.
 *   EXIT  the last thread of a tracked process exited: once per process,
 *         with exit_code (or exit_signal, -1 in exit_code) as wait(2) sees it.
 * "Tracked" is a tgid set in a kernel map. proclife_track() adds a process
 * (the master found in /proc at startup, its existing workers); the kernel
 * adds forked children and, unless opts.manual_track, matching execs, and
 * removes a process when it exits. A matching exec is only a candidate: the
 * caller checks the real executable (/proc/PID/exe) and calls
 * proclife_untrack() when it is not onepanel.
 *
 * Identity: a process is (tgid, start). start_ns is CLOCK_BOOTTIME ns, the
 * clock behind /proc/PID/stat's starttime; proclife_ns_to_ticks() turns it
 * into that field's ticks, the only precision /proc has, so compare
 * identities in ticks. Tracked entries carry the start ticks too: an entry
 * left by a process whose exit was missed is never applied to a later
 * process that reuses the pid.
 *
 * Flavours: tp_btf, then raw_tp, then classic tracepoints (needs tracefs),
 * the first that loads and attaches wins; proclife_variant() says which.
 *
 * Transport: a BPF ring buffer where the kernel can create one (5.8+), else
 * a perf buffer (one per CPU; kernels 5.2-5.7), probed at open with
 * libbpf_probe_bpf_map_type(); proclife_transport() says which, and
 * opts.transport forces one (tests). The same object serves both; the map
 * of the transport not used is not even created.
 * Order: the ring buffer is one queue for all CPUs: events arrive in the
 * order the kernel wrote them. Perf buffers are per CPU, so proclife
 * collects everything queued in all of them (reading until a pass over all
 * CPUs finds nothing new), sorts that batch by ts_ns and then delivers it.
 * Either way, when one event happened before another could start (an EXIT
 * and then the EXEC of the successor its parent started, on another CPU),
 * the earlier is delivered first. Perf buffer exception: a backlog larger
 * than one batch (about what the buffers hold, at most 4096 events) is
 * delivered in sorted chunks, and the order across chunks is by CPU.
 *
 * Losses: the kernel counts events it could not write (ringbuf_drops,
 * either transport: the buffer was full, or, perf buffer only, the event
 * happened on a CPU brought online after open, which has no buffer) and
 * failed inserts into a full tracked map (track_full); see
 * proclife_counters().
 *
 * Ownership: proclife_open() registers one loop source; the loop must outlive
 * the handle. The event passed to the callback is valid during the call only.
 * All functions return 0 / -errno unless said otherwise. Needs root (or
 * CAP_BPF + CAP_PERFMON) and kernel BTF. */
#ifndef OS_PROCLIFE_H
#define OS_PROCLIFE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../include/proclife.h"
#include "bpfload.h"

struct loop;
struct proclife;

enum proclife_variant {
	PROCLIFE_VARIANT_AUTO = 0,  /* probe: tp_btf, raw_tp, tp */
	PROCLIFE_VARIANT_TP_BTF,
	PROCLIFE_VARIANT_RAW_TP,
	PROCLIFE_VARIANT_TP,
};

enum proclife_transport {
	PROCLIFE_TRANSPORT_AUTO = 0,  /* ring buffer when the kernel has it, else perf buffer */
	PROCLIFE_TRANSPORT_RINGBUF,   /* fails to open without ring buffer support */
	PROCLIFE_TRANSPORT_PERFBUF,
};

struct proclife_opts {
	const char *comm;             /* exact comm to match at exec (1-15 chars); NULL = none */
	const char *basename_prefix;  /* executable basename prefix (1-15 bytes); NULL = none */
	bool manual_track;            /* matching execs are reported but not tracked */
	unsigned int ringbuf_kib;     /* ring buffer size; 0 = 256, rounded up to a power of 2 */
	unsigned int max_tracked;     /* capacity of the tracked set; 0 = 8192 */
	enum proclife_variant variant;/* force one flavour (tests); AUTO = probe */
	enum proclife_transport transport; /* force one transport (tests); AUTO = probe */
	unsigned int perfbuf_kib;     /* perf buffer size per CPU; 0 = 64, rounded up to a
	                               * power-of-2 number of pages */
};

/* Called from the loop for each event; may call proclife_track/untrack and
 * even proclife_close (the rest of the batch is then dropped). */
typedef void (*proclife_event_fn)(void *arg, const struct proclife_event *ev);

/* Probe, open, configure, load, attach and register on l. On failure
 * returns -errno, *out is NULL and why holds one line saying what failed
 * (for the "falling back to procfs mode" message); why may be NULL. */
int proclife_open(struct loop *l, const struct proclife_opts *o, proclife_event_fn fn, void *arg,
		  struct proclife **out, char *why, size_t whylen);
/* Detach, unregister and free everything. Accepts NULL. */
void proclife_close(struct proclife *p);

/* Add tgid (with its start time from /proc/PID/stat) to the tracked set.
 * -ESRCH if there is no such process (or it exited meanwhile; an EXIT may
 * still be delivered for it), -ENOSPC if the set is full. */
int proclife_track(struct proclife *p, pid_t tgid);
/* Remove tgid; -ENOENT if it was not tracked. Its later events are not
 * reported (those already queued still are). */
int proclife_untrack(struct proclife *p, pid_t tgid);
/* 1 tracked, 0 not, -errno. */
int proclife_is_tracked(struct proclife *p, pid_t tgid);

/* Deliver what is queued now (the loop does this on readiness). Returns the
 * number of events delivered or -errno. */
int proclife_consume(struct proclife *p);

/* "tp_btf", "raw_tp" or "tp". */
const char *proclife_variant(const struct proclife *p);
/* "ringbuf" or "perfbuf". */
const char *proclife_transport(const struct proclife *p);

struct proclife_counters {
	uint64_t execs;             /* host-wide, kernel (every process, tracked or not) */
	uint64_t forks;             /* host-wide new processes */
	uint64_t exits;             /* host-wide process exits */
	uint64_t ringbuf_drops;     /* events the programs could not write: ring buffer (or
	                             * the CPU's perf buffer) full; every loss is here */
	uint64_t track_full;        /* children/matches not tracked: set full */
	uint64_t stale_tracked;     /* tracked entries dropped for a start time mismatch */
	uint64_t events_emitted;    /* written by the kernel */
	uint64_t events_delivered;  /* passed to the callback */
	uint64_t events_malformed;  /* records too short to be an event (never expected) */
	uint64_t perfbuf_lost;      /* perf buffer: losses the perf buffers reported
	                             * (PERF_RECORD_LOST). The same losses as in
	                             * ringbuf_drops, seen from the reading side and late
	                             * (a CPU reports them with its next written event):
	                             * a cross-check, not to be added. 0 with the ring buffer */
};
/* Per-CPU kernel counters summed, plus the userspace ones. */
int proclife_counters(struct proclife *p, struct proclife_counters *out);

/* Self-cost of the loaded programs (struct bpfload_prog_stat; recursion
 * misses are runs skipped because the program was already running on that
 * CPU: events lost, always counted): one entry per loaded program, at most
 * max; returns how many or -errno. */
int proclife_prog_stats(struct proclife *p, struct bpfload_prog_stat *out, size_t max);
/* The oneshield_agent_bpf_prog_* families of those programs into m, as
 * schedlat and sysprobe add theirs (bpfload_add_prog_metrics). */
struct metrics;
int proclife_add_prog_metrics(struct proclife *p, struct metrics *m);
/* kernel.bpf_stats_enabled: 1, 0, or -errno. Stats turned on through a
 * BPF_ENABLE_STATS fd (bpf_enable_stats()) count too but do not show here. */
int proclife_bpf_stats_enabled(void);

/* start_ns -> clock ticks as in /proc/PID/stat field 22. */
uint64_t proclife_ns_to_ticks(uint64_t ns);

#endif
