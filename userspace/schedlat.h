/* Scheduler delay of onepanel's threads (eBPF): run-queue latency and
 * off-CPU time as Prometheus histograms.
 *
 * The BPF programs (bpf/schedlat.bpf.c) run on every wakeup and context
 * switch of the host and keep log2 histograms in kernel maps for the
 * threads of the tgids added as targets; nothing is streamed, userspace
 * reads the maps when metrics are collected. Histograms are cumulative
 * since schedlat_open() and aggregate all targets.
 *
 * Exported by schedlat_collect():
 *   onepanel_runqueue_latency_seconds  histogram: runnable -> running (after
 *                                      a wakeup, or after being preempted)
 *   onepanel_offcpu_seconds            histogram: blocked switch-out ->
 *                                      running again (includes the
 *                                      run-queue wait after the wakeup)
 *   oneshield_agent_bpf_schedlat_drops_total   intervals lost (no room for
 *                                      a thread's start entry)
 *   oneshield_agent_bpf_prog_runs_total{prog}, _run_seconds_total{prog}
 *                                      self-cost from the kernel's BPF stats;
 *                                      stay 0 unless the operator sets
 *                                      sysctl kernel.bpf_stats_enabled=1
 *                                      (the agent never sets it: it costs
 *                                      two clock reads per program run)
 *   oneshield_agent_bpf_prog_recursion_misses_total{prog}  runs the kernel
 *                                      skipped (lost events)
 * The histograms carry label process=<label_value> when label_value is not
 * NULL.
 *
 * Needs root (or CAP_BPF + CAP_PERFMON) and kernel BTF. Not thread-safe: one
 * owner (the core loop) calls everything. Calls never block for long: each is
 * a few bpf() syscalls. */
#ifndef OS_SCHEDLAT_H
#define OS_SCHEDLAT_H

#include <stddef.h>
#include <sys/types.h>

#include "bpfload.h"

struct metrics;
struct schedlat;

/* How the programs are attached and where per-thread start times live
 * (the values of enum bpfload_variant, which says what each means). */
enum schedlat_variant {
	SCHEDLAT_AUTO = BPFLOAD_AUTO,
	SCHEDLAT_TP_BTF_TASK_STORAGE = BPFLOAD_TP_BTF_TASK_STORAGE,
	SCHEDLAT_TP_BTF_HASH = BPFLOAD_TP_BTF_HASH,
	SCHEDLAT_RAW_TP_HASH = BPFLOAD_RAW_TP_HASH,
};

/* Probe, open, load and attach. On success *out owns the programs and maps
 * (free with schedlat_close). On failure returns -errno, *out is NULL and
 * why (when not NULL) holds one line saying what failed, for the log and
 * /v1/status. */
int schedlat_open(struct schedlat **out, char *why, size_t whylen);
/* The same with a forced variant (tests and diagnosis); SCHEDLAT_AUTO is
 * schedlat_open(). A forced variant the kernel lacks fails (-EOPNOTSUPP). */
int schedlat_open_variant(struct schedlat **out, enum schedlat_variant v, char *why, size_t whylen);

/* The variant in use, e.g. "tp_btf+task_storage", for status output. */
const char *schedlat_mode(const struct schedlat *s);

/* Track the threads of a thread group (the onepanel master, each worker).
 * Adding a tracked tgid again is a no-op. -EINVAL for tgid <= 0, -E2BIG when
 * the target table (1024) is full. */
int schedlat_add_target(struct schedlat *s, pid_t tgid);
/* Stop tracking; intervals in flight are discarded. -ENOENT when not tracked. */
int schedlat_remove_target(struct schedlat *s, pid_t tgid);

/* Per-thread start entries in the kernel hash (live tracked threads, plus
 * any not yet swept); -EOPNOTSUPP with task storage. For tests and
 * diagnosis. */
int schedlat_start_entries(struct schedlat *s);

/* Read the kernel maps and add the families above to m. */
int schedlat_collect(struct schedlat *s, struct metrics *m, const char *label_value);

/* Detach and free everything; NULL is fine. */
void schedlat_close(struct schedlat *s);

#endif
