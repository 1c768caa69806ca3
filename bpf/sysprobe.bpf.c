// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Syscall investigation of onepanel's processes: per syscall number, count,
 * errors and a log2 latency histogram in kernel maps (see
 * include/sysprobe.h). Attached only while an investigation runs: with a
 * program on raw_syscalls:sys_enter/sys_exit every thread of the host takes
 * the slow syscall path, target or not.
 *
 * The common path is a thread that is not a target: one inlined array
 * lookup (`target_bits`, a bitmap by tgid) and no clock read. For a target:
 *
 *   sys_enter  start = { now, nr } in the thread's start entry
 *   sys_exit   start consumed (ts = 0); sample now - ts into stats[nr] when
 *              the entry belongs to this attach and to this syscall
 *
 * Samples that are not taken, on purpose:
 *   - syscalls in flight at attach (entered before it; a start entry left
 *     from an earlier attach is older than `since_ns`) or at detach;
 *   - the sys_exit of clone/fork in the new thread (it never entered);
 *   - exit/exit_group, which never return.
 * The syscall number is checked again at sys_exit (regs->orig_ax) so that a
 * stale hash entry of a dead thread (its last syscall was exit) is never
 * paired with the first sys_exit of a new thread reusing the tid;
 * rt_sigreturn sets orig_ax to -1 and is accepted as is.
 *
 * Start entries live in task storage when the kernel has it for tracing
 * programs (freed with the task), otherwise in the `starts` hash keyed by
 * thread id: preallocated and bounded; an entry stays for the thread's life
 * and is rewritten in place (insert once, no delete per syscall: both are
 * far slower than a write). When it is full, SYSPROBE_DROP_NO_START counts
 * the syscall.
 *
 * Concurrency: stats and drops are per-CPU and written without atomics. A
 * program does not nest on its CPU (the kernel skips a recursive run and
 * counts a recursion miss), syscall tracepoints never fire in IRQ context,
 * and BPF runs them with preemption off. A start entry is written only by
 * its own thread.
 *
 * Following descendants. A process forked by a target must be traced from
 * its first instruction, before userspace could learn of it, so the kernel
 * keeps the bitmap up to date itself, with two more programs attached and
 * detached together with sys_enter/sys_exit:
 *
 *   sched_process_fork  a new process (child->pid == child->tgid; a new
 *                       thread already shares its group's bit) whose
 *                       parent's tgid is a target becomes one: its bit is
 *                       set before the child first runs, so its first
 *                       syscall is counted. Grandchildren follow likewise.
 *   sched_process_exit  the exit of a target thread drops its start entry
 *                       (hash variants); the exit of the whole thread group
 *                       (group_dead) clears the tgid's bit, whoever set it,
 *                       so a recycled pid is never traced.
 *
 * Both run on every fork and exit of the host while attached, not on
 * syscalls: one array lookup for a process that is not a target.
 * group_dead is the tracepoint's second argument where the kernel has it
 * (6.x: CO-RE tells, as in proclife.bpf.c); elsewhere the group is dead
 * once signal->live reached 0 (two threads may both see that: clearing
 * twice is harmless).
 *
 * The bitmap has two writers, userspace (add/remove a target) and these
 * programs, on different CPUs at once and often on the same word (workers
 * get neighbouring pids). Both sides use atomic OR/AND on the word
 * (userspace through an mmap of the array, BPF_F_MMAPABLE), so neither
 * loses the other's bits. BPF atomic OR/AND need kernel 5.12, mmapable
 * arrays 5.5: where the fork/exit programs cannot load, userspace loads the
 * object without them ("follow" off: targets are exactly what userspace
 * added, as before) and keeps the bitmap with map syscalls, being then its
 * only writer.
 *
 * Two program sets: tp_btf (typed arguments, task storage possible) and
 * raw_tp (CO-RE reads, hash only). Userspace autoloads one of them. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "common.bpf.h"
#include "sysprobe.h"

/* Set by userspace before load: the verifier prunes the branch not taken. */
const volatile bool use_task_storage = false;   /* tp_btf set only */

/* Set by userspace before each attach: a start stamped earlier belongs to a
 * previous investigation. */
__u64 since_ns = 0;

/* Userspace clears BPF_F_MMAPABLE before load when the fork/exit programs
 * are not loaded (kernels before 5.5 refuse the flag). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SYSPROBE_TGID_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} target_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sysprobe_start);
} task_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SYSPROBE_MAX_THREADS);
	__type(key, __u32);
	__type(value, struct sysprobe_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYSPROBE_NR_SLOTS);
	__type(key, __u32);
	__type(value, struct sysprobe_stat);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYSPROBE_DROPS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

#if defined(__TARGET_ARCH_x86)
#define REGS_SYSCALL_NR(btf, regs) ((btf) ? (long)(regs)->orig_ax : (long)BPF_CORE_READ(regs, orig_ax))
#elif defined(__TARGET_ARCH_arm64)
#define REGS_SYSCALL_NR(btf, regs) ((btf) ? (long)(regs)->syscallno : (long)BPF_CORE_READ(regs, syscallno))
#else
#error "sysprobe: syscall number register unknown for this architecture"
#endif

static __always_inline void drop_inc(__u32 which)
{
	percpu_inc(&drops, which);
}

static __always_inline bool is_target(__u32 tgid)
{
	return tgid_bit(&target_bits, tgid, SYSPROBE_TGID_LIMIT);
}

/* Set (on) or clear the bit of tgid, atomically: userspace and the programs
 * on other CPUs write the same words. */
static __always_inline void target_mark(__u32 tgid, bool on)
{
	__u64 *bits = tgid_word(&target_bits, tgid, SYSPROBE_TGID_LIMIT);
	if (!bits)
		return;
	__u64 bit = 1ULL << (tgid % 64);
	if (on)
		__sync_fetch_and_or(bits, bit);
	else
		__sync_fetch_and_and(bits, ~bit);
}

/* The current thread's start entry; with create, make an empty one when
 * missing (counted as a drop when that fails). */
static __always_inline struct sysprobe_start *start_get(__u32 pid, bool create, bool btf)
{
	const struct sysprobe_start zero = {};

	return start_entry(&task_starts, &starts, NULL, pid, create, btf && use_task_storage, &zero, &drops,
			   SYSPROBE_DROP_NO_START);
}

static __always_inline int on_enter(long id, bool btf)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = (__u32)(pid_tgid >> 32);
	if (!is_target(tgid))
		return 0;
	struct sysprobe_start *st = start_get((__u32)pid_tgid, true, btf);
	if (!st)
		return 0;
	st->nr = (__u32)id;
	st->tgid = tgid;
	st->ts = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_exit(struct pt_regs *regs, long ret, bool btf)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_target((__u32)(pid_tgid >> 32)))
		return 0;
	struct sysprobe_start *st = start_get((__u32)pid_tgid, false, btf);
	if (!st || !st->ts)
		return 0;
	__u64 now = bpf_ktime_get_ns(), ts = st->ts;
	__u32 nr = st->nr;
	st->ts = 0;
	if (ts < since_ns || now < ts)
		return 0;
	long exit_nr = REGS_SYSCALL_NR(btf, regs);
	if (exit_nr != -1 && (__u32)exit_nr != nr)
		return 0;

	__u32 idx = nr;
	if (nr >= SYSPROBE_MAX_NR) {
		idx = SYSPROBE_NR_OTHER;
		drop_inc(SYSPROBE_DROP_NR_RANGE);
	}
	struct sysprobe_stat *s = bpf_map_lookup_elem(&stats, &idx);
	if (!s)
		return 0;
	__u64 d = now - ts;
	__u32 slot = log2_slot(d, SYSPROBE_SLOTS);
	s->count += 1;
	if (ret < 0 && ret >= -4095)
		s->errors += 1;
	s->sum_ns += d;
	s->slots[slot] += 1;
	return 0;
}

/* parent: the forking thread (current); child: the new task. */
static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	if (!is_target(BPF_CORE_READ(parent, tgid)))
		return 0;   /* the common case */
	__u32 pid = BPF_CORE_READ(child, pid), tgid = BPF_CORE_READ(child, tgid);
	if (pid != tgid)
		return 0;   /* a new thread: its group's bit is already set */
	target_mark(tgid, true);
	return 0;
}

/* task: the exiting thread (current); group_dead: 1/0 when the kernel says,
 * -1 when it does not. */
static __always_inline int on_proc_exit(struct task_struct *task, int group_dead)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = (__u32)(pid_tgid >> 32), pid = (__u32)pid_tgid;
	if (!is_target(tgid))
		return 0;   /* the common case */
	if (!use_task_storage)   /* task storage goes with the task */
		bpf_map_delete_elem(&starts, &pid);
	if (group_dead < 0)
		group_dead = BPF_CORE_READ(task, signal, live.counter) == 0;
	if (group_dead)
		target_mark(tgid, false);
	return 0;
}

/* ---- tp_btf: typed arguments ---- */

SEC("tp_btf/sys_enter")
int BPF_PROG(sysprobe_enter_btf, struct pt_regs *regs, long id)
{
	return on_enter(id, true);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sysprobe_exit_btf, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, true);
}

/* ---- raw_tp: the same on kernels without tp_btf ---- */

SEC("raw_tp/sys_enter")
int BPF_PROG(sysprobe_enter_raw, struct pt_regs *regs, long id)
{
	return on_enter(id, false);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(sysprobe_exit_raw, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, false);
}

/* ---- following descendants (see the top comment) ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sysprobe_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

/* Declared with the one argument every kernel has; the second (group_dead)
 * is read only where the tracepoint has it (a dead branch elsewhere, so the
 * verifier never sees the access). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sysprobe_pexit_btf, struct task_struct *p)
{
	int group_dead = -1;

	if (bpf_core_field_exists(struct trace_event_raw_sched_process_exit, group_dead))
		group_dead = (__u8)ctx[1] != 0;
	return on_proc_exit(p, group_dead);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(sysprobe_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(sysprobe_pexit_raw, struct task_struct *p)
{
	int group_dead = -1;

	if (bpf_core_field_exists(struct trace_event_raw_sched_process_exit, group_dead))
		group_dead = (__u8)ctx[1] != 0;
	return on_proc_exit(p, group_dead);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
