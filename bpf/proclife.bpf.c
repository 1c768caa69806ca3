// SPDX-License-Identifier: GPL-2.0
/* Process lifecycle of onepanel and its descendants, always on.
 *
 * Three hooks (exec, fork, exit) run for every process on the host, so each
 * one does the least it can for a process we do not care about: bump a
 * per-CPU counter, one hash lookup of the tgid in `tracked` (plus, at exec, a
 * 16-byte comm compare) and return. Only tracked or matching processes cost an
 * event record.
 *
 * `tracked` is the set of tgids we follow. Userspace seeds it (the onepanel
 * master found in /proc); the programs keep it: a fork of a tracked process
 * adds the child, an exec whose comm (or basename prefix) matches the
 * configured target adds the process unless userspace asked to do that
 * itself (cfg_manual_track), and the exit of the last thread removes it. The
 * delete that succeeds is the one that reports the exit, so a process is
 * reported once even where "group dead" has to be guessed. Each entry keeps
 * the start time of the process it was added for (USER_HZ ticks, the unit
 * of /proc/PID/stat); an entry whose start time does not match the task
 * that hits it belongs to an earlier process with the same pid, and is
 * dropped instead of being believed.
 *
 * Every hook exists in three flavours, picked by userspace with
 * bpf_program__set_autoload() before load: tp_btf (typed arguments, the
 * cheapest), raw_tp (same arguments, untyped) and tp (the classic tracepoint
 * record; needs tracefs to attach, and finds the fork child through the
 * parent's children list because the record only has pids). Fields that
 * differ between kernels are read with CO-RE and guarded with
 * bpf_core_field_exists(), so one object loads everywhere.
 *
 * Transport: events go to a BPF ring buffer (`events`, kernel 5.8+) or, on
 * kernels without one, to a perf event array (`events_perf`, one perf
 * buffer per CPU) through bpf_perf_event_output(). cfg_use_perfbuf (rodata)
 * picks one; the verifier sees its value as a constant and never walks the
 * other branch, and userspace does not create the map of the transport not
 * used (bpf_map__set_autocreate). libbpf then turns the instructions that
 * load that map's address into calls of an invalid helper ("poisons" them):
 * harmless in a branch the verifier proves dead (privileged loads remove
 * dead code before helper calls are resolved), an error if it were live.
 * So the same object loads on a kernel where BPF_MAP_TYPE_RINGBUF cannot
 * even be created. Either way the event is built in the per-CPU `scratch`
 * map (it is ~330 bytes) and copied out in one call; a failed copy (buffer
 * full) is counted in PROCLIFE_CNT_RB_DROP. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "proclife.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load (rodata). Plain C types: the skeleton shows
 * them to userspace as they are written here. */
const volatile char cfg_comm[PROCLIFE_COMM_LEN] = {};   /* exact comm to match, "" = none */
const volatile char cfg_base[PROCLIFE_COMM_LEN] = {};   /* basename prefix to match */
const volatile unsigned int cfg_base_len = 0;           /* 0 = no basename match */
const volatile unsigned int cfg_manual_track = 0;       /* 1: matches are not added to `tracked` */
const volatile unsigned long long cfg_tick_ns = 10000000; /* 1e9 / USER_HZ */
const volatile unsigned int cfg_use_perfbuf = 0;        /* 1: events_perf, 0: events (ringbuf) */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);  /* userspace may resize before load */
} events SEC(".maps");

/* The perf buffer transport: one perf event per CPU, installed by
 * userspace's perf_buffer__new(). max_entries 0: libbpf sets it to the
 * number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events_perf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);        /* userspace may resize before load */
	__type(key, __u32);
	__type(value, struct proclife_tracked);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROCLIFE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* One event under construction per CPU: too big for the stack (512 bytes,
 * shared with everything else the program keeps there), usable by both
 * transports (bpf_perf_event_output copies from memory, it cannot reserve),
 * and a failed filter never touches the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proclife_event);
} scratch SEC(".maps");

/* Kernels before 5.5 called start_boottime real_start_time. */
struct task_struct___old {
	u64 real_start_time;
} __attribute__((preserve_access_index));

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline __u64 now_ns(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_boot_ns))
		return bpf_ktime_get_boot_ns();
	return bpf_ktime_get_ns();
}

/* Start time of the process task belongs to: the thread-group leader's (exec
 * by a non-leader thread copies the leader's into the new leader). */
static __always_inline __u64 proc_start_ns(struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	if (bpf_core_field_exists(leader->start_boottime))
		return BPF_CORE_READ(leader, start_boottime);
	return BPF_CORE_READ((struct task_struct___old *)leader, real_start_time);
}

static __always_inline __u64 ns_to_ticks(__u64 ns)
{
	return cfg_tick_ns ? ns / cfg_tick_ns : 0;
}

/* Is tgid tracked, for the process that started at start_ns? A stale entry
 * (an earlier process with the same pid whose exit we never saw) is removed. */
static __always_inline bool is_tracked(__u32 tgid, __u64 start_ns)
{
	struct proclife_tracked *t = bpf_map_lookup_elem(&tracked, &tgid);

	if (!t)
		return false;
	if (t->start_ticks && t->start_ticks != ns_to_ticks(start_ns)) {
		bpf_map_delete_elem(&tracked, &tgid);
		count(PROCLIFE_CNT_STALE);
		return false;
	}
	return true;
}

static __always_inline int track(__u32 tgid, __u64 start_ns, __u32 how)
{
	struct proclife_tracked t = {
		.start_ticks = ns_to_ticks(start_ns),
		.how = how,
	};
	int err = bpf_map_update_elem(&tracked, &tgid, &t, BPF_ANY);

	if (err)
		count(PROCLIFE_CNT_TRACK_FULL);
	return err;
}

static __always_inline struct proclife_event *scratch_event(__u32 type, struct task_struct *task)
{
	__u32 zero = 0;
	struct proclife_event *e = bpf_map_lookup_elem(&scratch, &zero);

	if (!e)
		return NULL;
	e->type = type;
	e->flags = 0;
	e->tgid = BPF_CORE_READ(task, tgid);
	e->pid = BPF_CORE_READ(task, pid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->exit_status = 0;
	e->exit_code = 0;
	e->exit_signal = 0;
	e->start_ns = proc_start_ns(task);
	e->parent_start_ns = 0;
	e->ts_ns = now_ns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->filename[0] = '\0';
	return e;
}

/* ctx: the program's context, which bpf_perf_event_output() wants (the
 * u64 argument array for tp_btf/raw_tp, the record for tp). */
static __always_inline void emit(void *ctx, struct proclife_event *e)
{
	long err;

	if (cfg_use_perfbuf)
		err = bpf_perf_event_output(ctx, &events_perf, BPF_F_CURRENT_CPU, e, sizeof(*e));
	else
		err = bpf_ringbuf_output(&events, e, sizeof(*e), 0);
	if (err)
		count(PROCLIFE_CNT_RB_DROP);
	else
		count(PROCLIFE_CNT_EMITTED);
}

static __always_inline bool comm_matches(const char *comm)
{
	if (!cfg_comm[0])
		return false;
#pragma unroll
	for (int i = 0; i < PROCLIFE_COMM_LEN; i++) {
		if (comm[i] != cfg_comm[i])
			return false;
		if (!cfg_comm[i])
			break;
	}
	return true;
}

/* Does the basename of path (len bytes with its NUL, as returned by
 * bpf_probe_read_kernel_str) start with cfg_base? The last '/' is searched
 * from the end so the loop has one path through it for the verifier. */
static __always_inline bool base_matches(const char *path, long len)
{
	unsigned int base = 0;

	if (!cfg_base_len || len <= 1)
		return false;
	for (int i = 0; i < PROCLIFE_FILENAME_LEN - 1; i++) {
		long idx = len - 2 - i;

		if (idx < 0)
			break;
		if (path[idx & (PROCLIFE_FILENAME_LEN - 1)] == '/') {
			base = (unsigned int)idx + 1;
			break;
		}
	}
#pragma unroll
	for (unsigned int i = 0; i < PROCLIFE_COMM_LEN; i++) {
		if (i >= cfg_base_len)
			break;
		if (base + i >= (unsigned long)len - 1)
			return false;  /* basename shorter than the prefix */
		if (path[(base + i) & (PROCLIFE_FILENAME_LEN - 1)] != cfg_base[i])
			return false;
	}
	return true;
}

/* filename_src: kernel pointer to the NUL-terminated path (bprm->filename or
 * the string inside the tracepoint record). */
static __always_inline int on_exec(void *ctx, struct task_struct *task, const void *filename_src)
{
	struct proclife_event *e;
	bool was_tracked, matched;
	char comm[PROCLIFE_COMM_LEN];
	__u32 tgid;
	long len;

	count(PROCLIFE_CNT_EXEC);
	/* The filter first, from what is cheap to get: an exec of a process
	 * that is neither tracked nor matching costs this much and no more. */
	tgid = BPF_CORE_READ(task, tgid);
	bpf_get_current_comm(comm, sizeof(comm));
	was_tracked = bpf_map_lookup_elem(&tracked, &tgid) != NULL;
	matched = comm_matches(comm);
	if (!was_tracked && !matched && !cfg_base_len)
		return 0;
	e = scratch_event(PROCLIFE_EXEC, task);
	if (!e)
		return 0;
	if (was_tracked)
		was_tracked = is_tracked(tgid, e->start_ns);  /* now with the start time check */
	len = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename_src);
	if (!matched)
		matched = base_matches(e->filename, len);
	if (!was_tracked && !matched)
		return 0;
	if (was_tracked)
		e->flags |= PROCLIFE_F_TRACKED;
	if (matched) {
		e->flags |= PROCLIFE_F_MATCHED;
		if (!was_tracked && !cfg_manual_track) {
			if (track(e->tgid, e->start_ns, PROCLIFE_HOW_MATCH))
				e->flags |= PROCLIFE_F_TRACK_FULL;
			else
				e->flags |= PROCLIFE_F_AUTOTRACK;
		}
	}
	emit(ctx, e);
	return 0;
}

/* child: the new task; threads (same tgid as the parent) are not processes. */
static __always_inline int on_fork(void *ctx, struct task_struct *parent, struct task_struct *child)
{
	struct proclife_event *e;
	__u32 ptgid, ctgid;
	__u64 pstart;

	ctgid = BPF_CORE_READ(child, tgid);
	if (ctgid != BPF_CORE_READ(child, pid))
		return 0;
	count(PROCLIFE_CNT_FORK);
	ptgid = BPF_CORE_READ(parent, tgid);
	if (!bpf_map_lookup_elem(&tracked, &ptgid))
		return 0;  /* the common case, before any other read */
	pstart = proc_start_ns(parent);
	if (!is_tracked(ptgid, pstart))
		return 0;
	e = scratch_event(PROCLIFE_FORK, child);
	if (!e)
		return 0;
	e->parent_start_ns = pstart;
	if (track(ctgid, e->start_ns, PROCLIFE_HOW_FORK))
		e->flags |= PROCLIFE_F_TRACK_FULL;
	emit(ctx, e);
	return 0;
}

/* group_dead: 1/0 when the kernel says, -1 when it does not (older kernels):
 * then the thread group is dead once signal->live reached 0 (two threads may
 * both see 0; the delete from `tracked` lets only one of them report). */
static __always_inline int on_exit(void *ctx, struct task_struct *task, int group_dead)
{
	struct task_struct *leader;
	struct proclife_event *e;
	__u32 tgid, status;
	__u64 start;

	if (group_dead < 0)
		group_dead = BPF_CORE_READ(task, signal, live.counter) == 0;
	if (!group_dead)
		return 0;
	count(PROCLIFE_CNT_EXIT);
	tgid = BPF_CORE_READ(task, tgid);
	if (!bpf_map_lookup_elem(&tracked, &tgid))
		return 0;  /* the common case, before any other read */
	start = proc_start_ns(task);
	if (!is_tracked(tgid, start))
		return 0;
	if (bpf_map_delete_elem(&tracked, &tgid))
		return 0;  /* another thread of the group reported it */
	e = scratch_event(PROCLIFE_EXIT, task);
	if (!e)
		return 0;
	/* What wait(2) would see: a group exit (exit_group, fatal signal) stores
	 * its code in the signal struct; otherwise the leader's own exit code
	 * counts, and the leader is either this task or a zombie kept until the
	 * group is gone. */
	status = BPF_CORE_READ(task, signal, group_exit_code);
	if (!status) {
		leader = BPF_CORE_READ(task, group_leader);
		status = BPF_CORE_READ(leader, exit_code);
	}
	e->exit_status = status;
	if (status & 0x7f) {
		e->exit_signal = status & 0x7f;
		e->exit_code = -1;
		if (status & 0x80)
			e->flags |= PROCLIFE_F_COREDUMP;
	} else {
		e->exit_code = (status >> 8) & 0xff;
	}
	emit(ctx, e);
	return 0;
}

/* ---- tp_btf: typed arguments ---- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(pl_exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(ctx, p, BPF_CORE_READ(bprm, filename));
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pl_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(ctx, parent, child);
}

/* Declared with the one argument every kernel has; the second (group_dead)
 * is read only where the tracepoint has it (a dead branch elsewhere, so the
 * verifier never sees the access). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(pl_exit_btf, struct task_struct *p)
{
	int group_dead = -1;

	if (bpf_core_field_exists(struct trace_event_raw_sched_process_exit, group_dead))
		group_dead = (__u8)ctx[1] != 0;
	return on_exit(ctx, p, group_dead);
}

/* ---- raw_tp: the same arguments, untyped ---- */

SEC("raw_tp/sched_process_exec")
int BPF_PROG(pl_exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(ctx, p, BPF_CORE_READ(bprm, filename));
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(pl_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(ctx, parent, child);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(pl_exit_raw, struct task_struct *p)
{
	int group_dead = -1;

	if (bpf_core_field_exists(struct trace_event_raw_sched_process_exit, group_dead))
		group_dead = (__u8)ctx[1] != 0;
	return on_exit(ctx, p, group_dead);
}

/* ---- tp: classic tracepoint records ---- */

SEC("tp/sched/sched_process_exec")
int pl_exec_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 loc = BPF_CORE_READ(ctx, __data_loc_filename);

	return on_exec(ctx, (struct task_struct *)bpf_get_current_task(), (void *)ctx + (loc & 0xffff));
}

/* The record has pids only. A forked process is appended to the forking
 * thread's children list before the tracepoint fires, so the last entry is
 * the child; a thread is not on that list (nor is a CLONE_PARENT child, which
 * this flavour misses). */
SEC("tp/sched/sched_process_fork")
int pl_fork_tp(struct trace_event_raw_sched_process_fork *ctx)
{
	struct task_struct *parent = (struct task_struct *)bpf_get_current_task();
	struct list_head *head = (void *)parent + bpf_core_field_offset(struct task_struct, children);
	struct list_head *last = BPF_CORE_READ(parent, children.prev);
	struct task_struct *child;
	__u32 child_pid = BPF_CORE_READ(ctx, child_pid);

	if (last == head)
		return 0;
	child = (void *)last - bpf_core_field_offset(struct task_struct, sibling);
	if (BPF_CORE_READ(child, pid) != child_pid)
		return 0;
	return on_fork(ctx, parent, child);
}

SEC("tp/sched/sched_process_exit")
int pl_exit_tp(void *ctx)
{
	struct trace_event_raw_sched_process_exit *rec = ctx;
	int group_dead = -1;

	if (bpf_core_field_exists(rec->group_dead))
		group_dead = BPF_CORE_READ(rec, group_dead) != 0;
	return on_exit(ctx, (struct task_struct *)bpf_get_current_task(), group_dead);
}
