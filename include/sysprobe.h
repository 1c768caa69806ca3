/* Shared between bpf/sysprobe.bpf.c and userspace/sysprobe.c: the layout of
 * the maps userspace reads and writes. Plain C types only (no vmlinux
 * typedefs), so both sides can include it.
 *
 * Per syscall number the programs keep a `struct sysprobe_stat` in the
 * per-CPU array `stats`: index nr for 0 <= nr < SYSPROBE_MAX_NR, index
 * SYSPROBE_NR_OTHER for anything else (x32 numbers, -1 from ptrace/seccomp,
 * numbers beyond the table).
 *
 * Histograms are log2 of nanoseconds: slot s counts syscalls whose latency
 * d (sys_enter -> sys_exit) has 2^s <= d < 2^(s+1) (slot 0 also holds
 * d = 0 and 1); the last slot is open-ended (everything >= 2^39 ns, about
 * 9 minutes). Userspace exports slot s as the Prometheus bucket
 * le = 2^(s+1) ns from SYSPROBE_FIRST_BUCKET on (the slots below are folded
 * into that first bucket): 32 buckets from 256 ns to 550 s, plus +Inf. */
#ifndef OS_SYSPROBE_SHARED_H
#define OS_SYSPROBE_SHARED_H

#define SYSPROBE_SLOTS        40
#define SYSPROBE_FIRST_BUCKET 7     /* le = 2^8 ns = 256 ns */

#define SYSPROBE_MAX_NR       512   /* x86_64 numbers end below 470 (6.18) */
#define SYSPROBE_NR_OTHER     SYSPROBE_MAX_NR
#define SYSPROBE_NR_SLOTS     (SYSPROBE_MAX_NR + 1)

/* Value of `stats`, one per CPU per syscall number; userspace sums the CPUs.
 * 43 x 8 bytes: the array takes 513 x 344 B = 172 KiB per possible CPU. */
struct sysprobe_stat {
	unsigned long long count;
	unsigned long long errors;    /* returned -4095..-1 (a negative errno) */
	unsigned long long sum_ns;    /* exact sum of the latencies */
	unsigned long long slots[SYSPROBE_SLOTS];
};

/* Key of the per-CPU `drops` array. */
enum sysprobe_drop {
	SYSPROBE_DROP_NO_START = 0,  /* a syscall not measured: no room for its start
	                              * (start hash full, or task storage refused) */
	SYSPROBE_DROP_NR_RANGE = 1,  /* measured but not attributed to a number
	                              * (nr outside 0..SYSPROBE_MAX_NR-1): in "other" */
	SYSPROBE_DROPS = 2,
};

/* Start of the syscall a thread is in (task storage, or the `starts` hash
 * keyed by thread id). ts = 0: not in a measured syscall. */
struct sysprobe_start {
	unsigned long long ts;   /* bpf_ktime_get_ns() at sys_enter (CLOCK_MONOTONIC) */
	unsigned int nr;         /* syscall number as sys_enter saw it */
	unsigned int tgid;       /* lets userspace sweep entries of removed targets */
};

#define SYSPROBE_MAX_THREADS 16384  /* size of the `starts` hash */

/* `target_bits`: bit (tgid % 64) of word (tgid / 64) set for every target.
 * Two writers: userspace (the targets it adds) and, while attached, the
 * fork/exit programs (descendants of targets; group exits), both with
 * atomic OR/AND on the word: the array is BPF_F_MMAPABLE, userspace
 * changes its mapping (the flag is dropped when the fork/exit programs
 * are not loaded: userspace is then the only writer, with map syscalls).
 * The only filter the programs use: an array lookup is inlined by the
 * verifier (no helper call, no hashing), and it runs on every syscall of
 * every process of the host while attached. Exact, so no second lookup is
 * needed. Measured here with the kernel's BPF stats on tp_btf/sys_enter:
 * an empty program 46 ns/run (the stats' own clock reads), this filter 67,
 * a hash lookup of the tgid instead 97; twice per syscall. Covers
 * PID_MAX_LIMIT (4M on 64-bit): 512 KiB. */
#define SYSPROBE_TGID_LIMIT (1u << 22)
#define SYSPROBE_TGID_WORDS (SYSPROBE_TGID_LIMIT / 64)

/* Userspace gets the module API with the layout: -Iinclude precedes
 * -Iuserspace, so a "sysprobe.h" included from outside userspace/ (tests)
 * lands here first. userspace/sysprobe.h includes this file back; both are
 * guarded. */
#if !defined(__VMLINUX_H__) && !defined(__bpf__)
#include "../userspace/sysprobe.h"
#endif

#endif
