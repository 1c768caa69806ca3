/* Helpers shared by the agent's BPF programs (schedlat, sysprobe): one copy
 * of the target bitmap test, the per-thread start entry and the log2
 * histogram slot. Include after vmlinux.h and <bpf/bpf_helpers.h>.
 *
 * Everything is __always_inline: the callers run on every context switch
 * or syscall of the host, and the map arguments are the callers' maps, so
 * after inlining the verifier sees the same code as if written in place. */
#ifndef OS_COMMON_BPF_H
#define OS_COMMON_BPF_H

/* floor(log2(v)), 0 for v = 0 or 1. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xffffffffULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xffff) << 4; v >>= shift; r |= shift;
	shift = (v > 0xff) << 3; v >>= shift; r |= shift;
	shift = (v > 0xf) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

/* The slot of d in a log2 histogram of nslots slots (slot s: 2^s <= d <
 * 2^(s+1)); the last slot is open-ended. */
static __always_inline __u32 log2_slot(__u64 d, __u32 nslots)
{
	__u32 slot = log2_u64(d);
	return slot < nslots ? slot : nslots - 1;
}

/* Adds one to entry key of a per-CPU array of __u64. No atomics: the entry
 * is this CPU's and the callers' programs do not nest on a CPU. */
static __always_inline void percpu_inc(void *map, __u32 key)
{
	__u64 *v = bpf_map_lookup_elem(map, &key);
	if (v)
		*v += 1;
}

/* The word holding tgid's bit in a bitmap array of __u64 (bit tgid % 64 of
 * word tgid / 64), or NULL for tgid >= limit. An array lookup the verifier
 * inlines: the cheapest filter for the not-a-target common case. */
static __always_inline __u64 *tgid_word(void *bits_map, __u32 tgid, __u32 limit)
{
	__u32 word = tgid / 64;
	if (tgid >= limit)
		return NULL;
	return bpf_map_lookup_elem(bits_map, &word);
}

/* Is tgid's bit set? */
static __always_inline bool tgid_bit(void *bits_map, __u32 tgid, __u32 limit)
{
	__u64 *bits = tgid_word(bits_map, tgid, limit);
	return bits && (*bits & (1ULL << (tgid % 64)));
}

/* A thread's start entry: in task storage (in_task_storage, tp_btf
 * programs only) of task, or of the current task when task is NULL; else in
 * the preallocated hash keyed by thread id pid. With create, an empty entry
 * (zero: a zeroed value of the hash) is made when missing; when that fails
 * (map full, no memory) entry drop_key of the per-CPU array drops counts
 * it and NULL is returned. Two CPUs racing to create the same entry (a
 * wakeup on another CPU) both end up with the one that won. */
static __always_inline void *start_entry(void *task_map, void *hash, struct task_struct *task, __u32 pid,
					 bool create, bool in_task_storage, const void *zero, void *drops,
					 __u32 drop_key)
{
	void *st;

	if (in_task_storage) {
		st = bpf_task_storage_get(task_map, task ? task : bpf_get_current_task_btf(), 0,
					  create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
		if (!st && create)
			percpu_inc(drops, drop_key);
		return st;
	}
	st = bpf_map_lookup_elem(hash, &pid);
	if (st || !create)
		return st;
	long err = bpf_map_update_elem(hash, &pid, zero, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST: raced with another CPU, use theirs */) {
		percpu_inc(drops, drop_key);
		return NULL;
	}
	st = bpf_map_lookup_elem(hash, &pid);
	if (!st)
		percpu_inc(drops, drop_key);
	return st;
}

#endif
