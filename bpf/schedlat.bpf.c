// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Scheduler delay of onepanel's threads: run-queue latency and off-CPU time
 * as log2 histograms kept in kernel maps (see include/schedlat.h).
 *
 * The programs run on every wakeup and context switch of the host, so the
 * common path for a task that is not a target is one inlined array lookup
 * (`target_bits`, a bitmap by tgid) and no clock read. Only threads whose
 * tgid is in `targets` (which also holds its generation) get a start entry:
 *
 *   switch-out, still runnable (preempted, yielded, or woken before it
 *   could block)   -> runq_ts = now, offcpu_ts = 0
 *   switch-out, blocking (prev_state != TASK_RUNNING)
 *                  -> offcpu_ts = now, runq_ts = 0
 *   switch-out, exiting (TASK_DEAD) -> entry deleted
 *   wakeup         -> runq_ts = now (wakeup_new also clears offcpu_ts)
 *   switch-in      -> runq sample (now - runq_ts) and off-CPU sample
 *                     (now - offcpu_ts) for whichever is set; both cleared
 *
 * So a preempted thread contributes only run-queue latency, and a blocked
 * thread contributes off-CPU time (block -> running again, which includes
 * its wait for a CPU after the wakeup) plus the run-queue latency of that
 * wait. Every switch-out rewrites the entry, so a wakeup seen for a thread
 * that never left the CPU cannot produce a bogus sample later.
 *
 * Start entries live in task storage when the kernel allocates it safely
 * under the run-queue lock (userspace probes), otherwise in the `starts`
 * hash keyed by thread id, which is preallocated and bounded: when it is
 * full the interval is not tracked and SCHEDLAT_STAT_DROPS counts it.
 *
 * Two program sets: tp_btf (typed task pointers, task storage possible) and
 * raw_tp (CO-RE reads, hash only). Userspace autoloads one of them. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "common.bpf.h"
#include "schedlat.h"

#define TASK_RUNNING 0x0000
#define TASK_DEAD    0x0080

/* Set by userspace before load (rodata: the verifier prunes the branch not
 * taken, so code for a missing map or tracepoint argument is never checked). */
const volatile bool use_task_storage = false;   /* tp_btf set only */
const volatile bool has_prev_state_arg = false; /* sched_switch has prev_state (5.18+) */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SCHEDLAT_TGID_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} target_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SCHEDLAT_MAX_TARGETS);
	__type(key, __u32);
	__type(value, struct schedlat_target);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct schedlat_start);
} task_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SCHEDLAT_MAX_THREADS);
	__type(key, __u32);
	__type(value, struct schedlat_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCHEDLAT_KINDS);
	__type(key, __u32);
	__type(value, struct schedlat_hist);
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCHEDLAT_STATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* task_struct before 5.14 named the state field `state`. */
struct task_struct___pre514 {
	volatile long state;
} __attribute__((preserve_access_index));

static __always_inline void record(__u32 kind, __u64 now, __u64 since)
{
	if (!since || now < since)
		return;
	__u64 d = now - since;
	struct schedlat_hist *h = bpf_map_lookup_elem(&hist, &kind);
	if (!h)
		return;
	__u32 slot = log2_slot(d, SCHEDLAT_SLOTS);
	h->slots[slot] += 1;
	h->sum_ns += d;
}

static __always_inline __u32 task_tgid(struct task_struct *t, bool btf)
{
	return btf ? t->tgid : BPF_CORE_READ(t, tgid);
}

static __always_inline __u32 task_pid(struct task_struct *t, bool btf)
{
	return btf ? t->pid : BPF_CORE_READ(t, pid);
}

/* The target entry of a tgid, or NULL; the bitmap answers for almost all
 * tasks without a hash lookup. */
static __always_inline struct schedlat_target *target_of(__u32 tgid)
{
	if (!tgid_bit(&target_bits, tgid, SCHEDLAT_TGID_LIMIT))
		return NULL;
	return bpf_map_lookup_elem(&targets, &tgid);
}

static __always_inline unsigned int task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return (unsigned int)BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

/* The thread's start entry; with create, make an empty one when missing
 * (counted as a drop when the map is full or memory is short). */
static __always_inline struct schedlat_start *start_get(struct task_struct *t, __u32 pid, bool create,
							 bool btf)
{
	const struct schedlat_start zero = {};

	return start_entry(&task_starts, &starts, t, pid, create, btf && use_task_storage, &zero, &stats,
			   SCHEDLAT_STAT_DROPS);
}

static __always_inline int on_wakeup(struct task_struct *p, bool btf, bool new_task)
{
	__u32 tgid = task_tgid(p, btf);
	struct schedlat_target *tg = target_of(tgid);
	if (!tg)
		return 0;
	struct schedlat_start *st = start_get(p, task_pid(p, btf), true, btf);
	if (!st)
		return 0;
	if (new_task || st->gen != tg->gen)
		st->offcpu_ts = 0;   /* reused pid, or stamped before a remove/add */
	st->runq_ts = bpf_ktime_get_ns();
	st->tgid = tgid;
	st->gen = tg->gen;
	return 0;
}

static __always_inline int on_switch(unsigned long long *ctx, bool preempt, struct task_struct *prev,
				     struct task_struct *next, bool btf)
{
	struct schedlat_target *tg;
	struct schedlat_start *st;
	__u64 now = 0;
	__u32 pid, tgid;

	/* prev is current here: the raw variant saves a probe read */
	tgid = btf ? prev->tgid : (__u32)(bpf_get_current_pid_tgid() >> 32);
	tg = target_of(tgid);
	if (tg) {
		now = bpf_ktime_get_ns();
		pid = btf ? prev->pid : (__u32)bpf_get_current_pid_tgid();
		unsigned int prev_state = has_prev_state_arg ? (unsigned int)ctx[3] : task_state(prev);
		if (!preempt && (prev_state & TASK_DEAD)) {
			/* last switch of an exiting thread; task storage goes with the task */
			if (!(btf && use_task_storage))
				bpf_map_delete_elem(&starts, &pid);
		} else if ((st = start_get(prev, pid, true, btf))) {
			if (preempt || prev_state == TASK_RUNNING) {
				st->runq_ts = now;
				st->offcpu_ts = 0;
			} else {
				st->offcpu_ts = now;
				st->runq_ts = 0;
			}
			st->tgid = tgid;
			st->gen = tg->gen;
		}
	}

	tgid = task_tgid(next, btf);
	tg = target_of(tgid);
	if (!tg)
		return 0;
	st = start_get(next, task_pid(next, btf), false, btf);
	if (!st)
		return 0;
	if (!now)
		now = bpf_ktime_get_ns();
	if (st->gen == tg->gen) {   /* else stamped before a remove/add: no sample */
		record(SCHEDLAT_RUNQ, now, st->runq_ts);
		record(SCHEDLAT_OFFCPU, now, st->offcpu_ts);
	}
	st->runq_ts = 0;
	st->offcpu_ts = 0;
	return 0;
}

/* ---- tp_btf: typed arguments ---- */

SEC("tp_btf/sched_wakeup")
int BPF_PROG(schedlat_wakeup_btf, struct task_struct *p)
{
	return on_wakeup(p, true, false);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(schedlat_wakeup_new_btf, struct task_struct *p)
{
	return on_wakeup(p, true, true);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(schedlat_switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(ctx, preempt, prev, next, true);
}

/* ---- raw_tp: the same on kernels without tp_btf ---- */

SEC("raw_tp/sched_wakeup")
int BPF_PROG(schedlat_wakeup_raw, struct task_struct *p)
{
	return on_wakeup(p, false, false);
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(schedlat_wakeup_new_raw, struct task_struct *p)
{
	return on_wakeup(p, false, true);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(schedlat_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(ctx, preempt, prev, next, false);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
