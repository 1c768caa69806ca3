/* Process lifecycle events: the records bpf/proclife.bpf.c writes into its
 * ring buffer (or perf buffers) and userspace/proclife.c reads, plus the keys and values of the
 * maps both sides touch. Plain structs of fixed-size integers so the same
 * header compiles against vmlinux.h (BPF) and <linux/types.h> (userspace);
 * every field is naturally aligned, so the layout is the same on both sides.
 * Changing a struct here changes both sides at once: there is no versioning
 * because both are built from one tree and shipped in one binary. */
#ifndef OS_PROCLIFE_SHARED_H
#define OS_PROCLIFE_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define PROCLIFE_COMM_LEN     16   /* TASK_COMM_LEN */
#define PROCLIFE_FILENAME_LEN 256  /* bounded copy of the exec'd path */

enum proclife_event_type {
	PROCLIFE_EXEC = 1,  /* a tracked or matching process exec'd */
	PROCLIFE_FORK = 2,  /* a tracked process forked a new process (not a thread) */
	PROCLIFE_EXIT = 3,  /* the last thread of a tracked process exited */
};

/* proclife_event.flags */
#define PROCLIFE_F_MATCHED    0x1u  /* EXEC: comm / basename matched the configured target */
#define PROCLIFE_F_TRACKED    0x2u  /* EXEC: the process was already tracked before this exec */
#define PROCLIFE_F_AUTOTRACK  0x4u  /* EXEC: the kernel added it to `tracked` (match, auto mode) */
#define PROCLIFE_F_TRACK_FULL 0x8u  /* EXEC/FORK: adding it to `tracked` failed (map full):
                                     * no FORK/EXIT will follow for it */
#define PROCLIFE_F_COREDUMP   0x10u /* EXIT: the process dumped core */

struct proclife_event {
	__u32 type;             /* enum proclife_event_type */
	__u32 flags;            /* PROCLIFE_F_* */
	__u32 tgid;             /* the process the event is about (FORK: the child) */
	__u32 pid;              /* thread: EXEC the exec'ing thread (now the leader),
	                         * FORK the child's, EXIT the last thread to exit */
	__u32 ppid;             /* tgid of the real parent at event time */
	__u32 exit_status;      /* EXIT: raw wait(2) status; 0 otherwise */
	__s32 exit_code;        /* EXIT: exit(3) value, -1 when killed by a signal */
	__u32 exit_signal;      /* EXIT: terminating signal, 0 when it exited */
	__u64 start_ns;         /* process start, ns since boot (CLOCK_BOOTTIME, the clock
	                         * behind /proc/PID/stat's starttime) */
	__u64 parent_start_ns;  /* FORK: start of the process that forked; else 0 */
	__u64 ts_ns;            /* when it happened, CLOCK_BOOTTIME ns */
	char comm[PROCLIFE_COMM_LEN];          /* NUL-terminated */
	char filename[PROCLIFE_FILENAME_LEN];  /* EXEC: path as passed to execve, NUL-terminated
	                                        * (truncated); "" otherwise */
};

/* Index into the per-CPU `counters` array. Host-wide counts (every process on
 * the host, tracked or not) except the emitted/dropped ones. */
enum proclife_counter {
	PROCLIFE_CNT_EXEC = 0,       /* successful execs */
	PROCLIFE_CNT_FORK,           /* new processes (threads not counted) */
	PROCLIFE_CNT_EXIT,           /* processes whose last thread exited */
	PROCLIFE_CNT_RB_DROP,        /* events lost: ring buffer or the CPU's perf buffer full
	                              * (perf: or no buffer on that CPU) */
	PROCLIFE_CNT_TRACK_FULL,     /* inserts into `tracked` that failed */
	PROCLIFE_CNT_EMITTED,        /* events written to the ring buffer or a perf buffer */
	PROCLIFE_CNT_STALE,          /* `tracked` entries dropped: start time mismatch (pid reuse) */
	PROCLIFE_CNT_MAX,
};

/* Value of the `tracked` hash map, keyed by tgid (__u32). */
struct proclife_tracked {
	__u64 start_ticks;  /* start time in USER_HZ ticks (as /proc/PID/stat), 0 = unchecked */
	__u32 how;          /* PROCLIFE_HOW_* */
	__u32 pad;
};

#define PROCLIFE_HOW_USER  1  /* added by userspace (proclife_track) */
#define PROCLIFE_HOW_MATCH 2  /* added by the kernel at a matching exec */
#define PROCLIFE_HOW_FORK  3  /* added by the kernel at fork of a tracked parent */

/* Userspace gets the module API with the records: -Iinclude precedes
 * -Iuserspace, so a "proclife.h" included from outside userspace/ (tests)
 * lands here first. userspace/proclife.h includes this file back; both are
 * guarded. */
#if !defined(__VMLINUX_H__) && !defined(__bpf__)
#include "../userspace/proclife.h"
#endif

#endif
