/* Shared between bpf/schedlat.bpf.c and userspace/schedlat.c: the layout of
 * the maps userspace reads. Plain C types only (no vmlinux typedefs), so
 * both sides can include it.
 *
 * Histograms are log2 of nanoseconds: slot s counts intervals d with
 * 2^s <= d < 2^(s+1) (slot 0 also holds d = 0 and 1); the last slot is
 * open-ended (everything >= 2^(SCHEDLAT_SLOTS-1) ns, about 9 minutes).
 * Userspace exports slot s as the Prometheus bucket le = 2^(s+1) ns, from
 * SCHEDLAT_FIRST_BUCKET on (the slots below it are folded into that first
 * bucket, since sub-microsecond scheduler delays are noise): 30 buckets
 * from 1.024 us to 550 s, plus +Inf. */
#ifndef OS_SCHEDLAT_SHARED_H
#define OS_SCHEDLAT_SHARED_H

#define SCHEDLAT_SLOTS        40
#define SCHEDLAT_FIRST_BUCKET 9     /* le = 2^10 ns = 1.024 us */

/* Key of the `hist` per-CPU array. */
enum schedlat_kind {
	SCHEDLAT_RUNQ = 0,   /* wakeup or preemption -> switched in */
	SCHEDLAT_OFFCPU = 1, /* blocked switch-out -> switched in */
	SCHEDLAT_KINDS = 2,
};

/* Value of `hist`, one per CPU; userspace sums the CPUs. */
struct schedlat_hist {
	unsigned long long slots[SCHEDLAT_SLOTS];
	unsigned long long sum_ns;           /* exact sum of the intervals */
};

/* Key of the `stats` per-CPU array. */
enum schedlat_stat {
	SCHEDLAT_STAT_DROPS = 0,      /* no start entry (map full, no memory): an interval was lost */
	SCHEDLAT_STATS = 1,
};

/* Value of the `targets` hash (key: tgid as unsigned int). The generation
 * is stamped into each thread's start entry so that an entry left over
 * from before a remove/add never yields a sample spanning the gap. */
struct schedlat_target {
	unsigned int gen;
	unsigned int pad;
};

/* Per-thread start timestamps (task storage, or the `starts` hash keyed by
 * thread id). 0 = not set. */
struct schedlat_start {
	unsigned long long offcpu_ts;  /* switched out while blocking */
	unsigned long long runq_ts;    /* became runnable: woken, or preempted */
	unsigned int tgid;             /* lets userspace purge a removed target's entries */
	unsigned int gen;              /* schedlat_target.gen when stamped */
};

#define SCHEDLAT_MAX_THREADS 16384  /* size of the `starts` hash */
#define SCHEDLAT_MAX_TARGETS 1024   /* size of the `targets` hash */

/* `target_bits`: an array of 64-bit words, bit (tgid % 64) of word
 * (tgid / 64) set for every target. It is the programs' first filter:
 * array lookups are inlined by the verifier, a hash lookup is a helper call
 * with jhash, and this test runs for every task on every context switch.
 * Covers PID_MAX_LIMIT (4M on 64-bit): 512 KiB. */
#define SCHEDLAT_TGID_LIMIT (1u << 22)
#define SCHEDLAT_TGID_WORDS (SCHEDLAT_TGID_LIMIT / 64)

#endif
