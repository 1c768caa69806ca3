/* Syscall investigation of onepanel's processes (eBPF): per syscall, count,
 * errors and latency histogram, for a bounded time chosen by an operator.
 *
 * While attached, programs on raw_syscalls:sys_enter/sys_exit run on every
 * syscall of every process of the host, and tracing them puts every thread
 * of the host on the slow syscall path: getpid() went from 160 to 330 ns
 * for a process that is not a target and to 490 ns for a target
 * (tests/bench/sysprobe_cost.sh, tp_btf+task_storage). Loaded but not
 * attached costs nothing measurable. Hence the lifecycle:
 *
 *   sysprobe_open()            probe, open and LOAD (verifier, maps): cheap,
 *                              catches a kernel without the features early;
 *                              nothing runs yet
 *   sysprobe_add_target()...   the tgids to investigate (any time)
 *   sysprobe_attach()          zero the results, rebuild the targets from
 *                              the added ones, start tracing
 *   sysprobe_detach()          stop: the programs leave the tracepoints
 *   sysprobe_read() / _to_json() / _collect()
 *                              results of the last (or current)
 *                              investigation; kept until the next attach
 *   sysprobe_close()
 *
 * This module has no timer: the owner (the core loop) calls detach when the
 * investigation's time is up.
 *
 * Descendants are followed by the kernel. While attached, two more
 * programs (sched_process_fork, sched_process_exit; they run on forks and
 * exits, not on syscalls) make every process forked by a target a target
 * before it first runs, so a worker forked during an investigation is
 * traced from its first instruction, before the owner could add it; its
 * children likewise (any descendant, not only onepanel's workers; a process
 * keeps being traced across exec). New threads of a target are traced as
 * their group is. When a target's whole thread group has exited, the
 * kernel clears its bit (also for an added target), so a recycled pid is
 * not traced. These kernel-made targets are not in the added list:
 * sysprobe_target_count does not count them; sysprobe_is_target_bit sees
 * them. At each attach the bitmap is rebuilt from the added list only:
 * descendants followed in an earlier investigation are dropped, and those
 * still alive are traced again only if the owner adds them (or if forked
 * by a target while attached). Removing a target does not untrace the
 * descendants the kernel followed (remove those one by one). On a kernel
 * that cannot run the fork/exit programs (BPF atomics: 5.12) sysprobe
 * loads without them, logs it, and sysprobe_follows_forks() is false:
 * targets are then exactly the added ones.
 *
 * What is measured: for each syscall of a thread whose tgid is a target,
 * sys_enter -> sys_exit (CLOCK_MONOTONIC ns), attributed to the syscall
 * number seen at sys_enter, summed over all targets and their threads (no
 * per-process split). Not counted: syscalls in flight at attach or at
 * detach, exit/exit_group (never return), the return of clone/fork in the
 * new thread. An error is a return value in -4095..-1 (a negative errno).
 * Numbers are named by the x86_64 table of the build host's kernel headers
 * (unknown ones: "syscall_<nr>"); numbers outside 0..511 are summed as
 * "other". A 32-bit (ia32) process's numbers are those of the ia32 table
 * and would be misnamed: onepanel is 64-bit.
 *
 * Metrics (sysprobe_collect), from the last or current investigation; they
 * restart from 0 at each attach (a counter reset to Prometheus):
 *   onepanel_syscall_latency_seconds{syscall}  histogram, buckets 256 ns
 *                                      to 550 s (doubling) and +Inf
 *   onepanel_syscall_errors_total{syscall}
 *   oneshield_agent_bpf_sysprobe_drops_total{reason}
 *       reason="no_start": syscalls not measured (no room for the thread's
 *       start entry); reason="nr_out_of_range": measured, counted under
 *       syscall="other"
 *   oneshield_agent_bpf_prog_{runs,run_seconds,recursion_misses}_total{prog}
 *       self-cost, as schedlat documents (runs and time only while
 *       sysctl kernel.bpf_stats_enabled=1); prog is sysprobe_{enter,exit,
 *       fork,pexit}_{btf,raw} (pexit: process exit)
 * Label cardinality is bounded by the syscalls seen (at most 513 values).
 *
 * Kernel memory while open: stats 172 KiB per possible CPU (per-CPU
 * array, written without atomics), target bitmap 512 KiB (also mapped into
 * the owner's address space when following forks), start hash 16384 x 16 B
 * (hash variants only). Userspace: the added list, 4 B per target.
 *
 * Ownership and threads: struct sysprobe is opaque, owned by the caller of
 * sysprobe_open and freed by sysprobe_close. Not thread-safe: one owner
 * calls everything. Each call is a few to a few thousand bpf() syscalls
 * (attach zeroes and read reads 513 per-CPU entries), no sleeping. All
 * functions return 0 or -errno unless said otherwise. Needs root (or
 * CAP_BPF + CAP_PERFMON; sysprobe_kernel_links needs CAP_SYS_ADMIN) and
 * kernel BTF. */
#ifndef OS_SYSPROBE_H
#define OS_SYSPROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../include/sysprobe.h"
#include "bpfload.h"

struct cJSON;
struct metrics;
struct sysprobe;

/* How the programs attach and where per-thread start times live (the
 * values of enum bpfload_variant, which says what each means). */
enum sysprobe_variant {
	SYSPROBE_AUTO = BPFLOAD_AUTO,
	SYSPROBE_TP_BTF_TASK_STORAGE = BPFLOAD_TP_BTF_TASK_STORAGE,
	SYSPROBE_TP_BTF_HASH = BPFLOAD_TP_BTF_HASH,
	SYSPROBE_RAW_TP_HASH = BPFLOAD_RAW_TP_HASH,
};

/* Or'ed into the variant given to sysprobe_open_variant: load without the
 * fork/exit programs, as on a kernel that cannot run them (tests,
 * diagnosis). */
#define SYSPROBE_NO_FOLLOW 0x100u

/* Probe, open and load; does not attach. On success *out owns the programs
 * and maps. On failure returns -errno, *out is NULL and why (when not NULL)
 * holds one line saying what failed, for the log and the REST answer. On
 * success why holds the variant name. */
int sysprobe_open(struct sysprobe **out, char *why, size_t whylen);
/* The same with a forced variant (tests, diagnosis); SYSPROBE_AUTO is
 * sysprobe_open(). A forced variant the kernel lacks fails with
 * -EOPNOTSUPP; an unknown one with -EINVAL. */
int sysprobe_open_variant(struct sysprobe **out, enum sysprobe_variant v, char *why, size_t whylen);

/* Detach and free everything; NULL is fine. */
void sysprobe_close(struct sysprobe *s);

/* "tp_btf+task_storage", "tp_btf+hash", "raw_tp+hash"; "off" for NULL. */
const char *sysprobe_mode(const struct sysprobe *s);

/* Investigate the threads of a thread group, and (while attached) the
 * processes it forks. Adding a target again changes nothing in the list; it
 * sets the bit again if the kernel had cleared it (the process exited).
 * -EINVAL for tgid <= 0 or >= 2^22 (PID_MAX_LIMIT), -ENOMEM. */
int sysprobe_add_target(struct sysprobe *s, pid_t tgid);
/* Stop counting its syscalls (a syscall in flight is dropped): out of the
 * added list, bit cleared. Also stops a descendant the kernel followed.
 * -ENOENT when neither added nor followed. Processes it forked earlier
 * stay traced. */
int sysprobe_remove_target(struct sysprobe *s, pid_t tgid);
/* Number of targets added (and not removed) by the owner; descendants the
 * kernel follows are not counted, and an added target that exited is,
 * until removed. */
size_t sysprobe_target_count(const struct sysprobe *s);
/* Is tgid's bit set in the kernel's bitmap now (added, or followed by the
 * kernel)? 1 or 0; -EINVAL for a tgid out of range, -errno. For tests and
 * diagnosis. */
int sysprobe_is_target_bit(const struct sysprobe *s, pid_t tgid);
/* Are the fork/exit programs loaded (descendants followed while attached)? */
bool sysprobe_follows_forks(const struct sysprobe *s);

/* Zero the results and the drop counters, reset the bitmap to the added
 * targets, then attach the programs (process exit, fork, sys_enter,
 * sys_exit, in that order: a child forked once syscalls are counted is
 * followed). -EALREADY when attached. On failure nothing stays attached. */
int sysprobe_attach(struct sysprobe *s);
/* Destroy the links: the programs leave the tracepoints (they stay loaded)
 * and the host's syscalls take the fast path again, unless something else
 * traces them. Results stay readable. Not attached: a no-op returning 0. */
int sysprobe_detach(struct sysprobe *s);
bool sysprobe_attached(const struct sysprobe *s);

/* BPF links in the kernel (all of them, by id) whose program is one of this
 * handle's: 4 while attached (2 without fork following), 0 after detach. It
 * asks the kernel, not our bookkeeping: the check tests and diagnosis use to
 * prove the attach points are gone. Returns the count or -errno. */
int sysprobe_kernel_links(const struct sysprobe *s);

/* One syscall's results. Latencies in ns. */
struct sysprobe_result {
	char name[32];            /* "read", "syscall_<nr>" when unknown, "other" */
	int nr;                   /* syscall number; -1 for "other" */
	uint64_t count;
	uint64_t errors;
	uint64_t sum_ns;
	uint64_t slots[SYSPROBE_SLOTS];  /* log2 histogram, see include/sysprobe.h */
	double p50_ns, p90_ns, p99_ns;   /* sysprobe_percentile() of slots */
};

/* The syscalls with count > 0 (the current or last investigation), sorted
 * by count, descending (then by number). *out is an array of *n results,
 * NULL when *n is 0; free it with sysprobe_results_free. */
int sysprobe_read(struct sysprobe *s, struct sysprobe_result **out, size_t *n);
void sysprobe_results_free(struct sysprobe_result *r);   /* accepts NULL */

/* Kernel drop counters summed over CPUs (since the last attach). */
struct sysprobe_drops {
	uint64_t no_start;        /* syscalls not measured */
	uint64_t nr_out_of_range; /* measured, counted under "other" */
};
int sysprobe_drops(struct sysprobe *s, struct sysprobe_drops *out);

/* q-quantile (0 <= q <= 1, clamped) in ns of a log2 histogram, by linear
 * interpolation within the slot, as Prometheus' histogram_quantile does:
 * with n samples, rank r = q * n; the slot s is the first whose cumulative
 * count reaches r; the result is lo + (hi - lo) * (r - below) / slots[s]
 * with [lo, hi) = [2^s, 2^(s+1)) ([0, 2) for slot 0) and below the count of
 * the slots before s. The true quantile (the sample of rank max(1, ceil(r)))
 * lies in the same slot, so the error is less than the slot's width: the
 * estimate is within a factor of 2 of the truth (absolute error < 2^s ns).
 * The last slot is open-ended: its lower bound 2^39 ns is returned. 0 when
 * the histogram is empty. Pure: exported for tests. */
double sysprobe_percentile(const uint64_t slots[SYSPROBE_SLOTS], double q);

/* Name of syscall nr in the build-time table, NULL when it has none. */
const char *sysprobe_syscall_name(int nr);

/* Add the families above to m. */
int sysprobe_collect(struct sysprobe *s, struct metrics *m);

/* {"mode","attached","syscalls":[{"name","nr","count","errors","sum_us",
 *  "p50_us","p90_us","p99_us","buckets":[{"le_us","count"}]}],
 *  "drops":N,"drops_by_reason":{"no_start","nr_out_of_range"}}
 * syscalls sorted by count, descending; buckets are the non-empty slots,
 * per slot (not cumulative), le_us its upper bound 2^(s+1) ns in us, "+Inf"
 * for the last; "nr" is -1 for "other"; "drops" sums both reasons. The
 * caller owns the object (cJSON_Delete). NULL on failure, with *err set to
 * -errno when err is not NULL. */
struct cJSON *sysprobe_to_json(struct sysprobe *s, int *err);

/* Self-cost of the loaded programs, from the kernel's BPF stats: one entry
 * per loaded program (4: sys_enter, sys_exit, fork, process exit; 2 without
 * fork following), at most max; returns how many or -errno. */
int sysprobe_prog_stats(const struct sysprobe *s, struct bpfload_prog_stat *out, size_t max);

#endif
