/* Readers and parsers for /proc (and statvfs of mounts).
 *
 * Every reader takes the proc root ("/proc" in the agent, a fixture directory
 * in unit tests) so the parsers are tested on recorded files. Parsers never
 * trust the text: a truncated or garbled file gives -EINVAL, never a crash
 * or a read past the buffer. Files are read whole into a bounded stack or
 * heap buffer with one read loop (no stdio), nothing is cached across calls.
 * All functions return 0 or -errno. */
#ifndef OS_PROCFS_H
#define OS_PROCFS_H

#include <stdint.h>
#include <sys/types.h>

struct metrics;

/* One process, from /proc/PID/{stat,status,io,fd,task/TID/children}. */
struct proc_info {
	pid_t pid;
	pid_t ppid;
	char state;
	char comm[32];
	uint64_t start_ticks;        /* field 22 of stat: start time after boot, in clock ticks */
	double start_time;           /* unix seconds: boot time + start_ticks / CLK_TCK */
	double cpu_user_seconds;
	double cpu_system_seconds;
	uint64_t rss_bytes;
	uint64_t vsize_bytes;
	uint64_t threads;
	int64_t open_fds;            /* -1 when /proc/PID/fd is unreadable */
	int64_t read_bytes;          /* /proc/PID/io read_bytes; -1 when io unreadable */
	int64_t write_bytes;
	int64_t rchar;
	int64_t wchar;
	int64_t children;            /* direct children of every thread; -1 if unavailable */
};

/* Parse the text of /proc/PID/stat (comm may contain spaces and ')'). */
int procfs_parse_stat(const char *text, size_t len, struct proc_info *out);
/* Read all of struct proc_info for pid. -ENOENT/-ESRCH if it is gone. */
int procfs_read_proc(const char *proc_root, pid_t pid, struct proc_info *out);
/* readlink of /proc/PID/exe without the " (deleted)" suffix; -ENOENT etc. */
int procfs_read_exe(const char *proc_root, pid_t pid, char *out, size_t outlen);
/* Boot time (unix seconds) from the btime line of /proc/stat. */
int procfs_boot_time(const char *proc_root, double *btime);

/* Host metrics into m, node_exporter names and units:
 *   node_cpu_seconds_total{cpu,mode}                       counter
 *   node_context_switches_total, node_forks_total,
 *   node_intr_total                                        counter
 *   node_procs_running, node_procs_blocked                 gauge
 *   node_boot_time_seconds                                 gauge
 *   node_load1, node_load5, node_load15                    gauge
 *   node_memory_total_bytes, _free_, _available_, _buffers_, _cached_,
 *     _swap_total_, _swap_free_, _shmem_, _sreclaimable_ (bytes)     gauge
 *     (snake_case: promtool's lint rejects node_exporter's camelCase)
 *   node_filesystem_size_bytes, _free_bytes, _avail_bytes,
 *     _files, _files_free {device,fstype,mountpoint}       gauge
 *     (real filesystems only: fstypes not marked "nodev" in
 *      /proc/filesystems, each mountpoint once)
 *   node_disk_reads_completed_total, _writes_completed_total,
 *     _read_bytes_total, _written_bytes_total,
 *     _read_time_seconds_total, _write_time_seconds_total,
 *     _io_time_seconds_total {device}                      counter
 *     (whole disks and partitions; not loop/ram devices with no I/O)
 *   node_network_receive_bytes_total, _transmit_bytes_total,
 *     _receive_packets_total, _transmit_packets_total,
 *     _receive_errs_total, _transmit_errs_total,
 *     _receive_drop_total, _transmit_drop_total {device}   counter
 *   node_pressure_cpu_waiting_seconds_total,
 *     node_pressure_memory_waiting_seconds_total, _memory_stalled_,
 *     node_pressure_io_waiting_seconds_total, _io_stalled_  counter
 *     (only when /proc/pressure exists)
 * A source that cannot be read is skipped (logged at debug once) and the
 * others still collected: returns 0 unless m itself fails (-ENOMEM). */
int procfs_collect_host(struct metrics *m, const char *proc_root);

/* Parsers, for tests and fuzzing. Each takes the whole text of one file
 * (not NUL-terminated, never read past len). The metric parsers declare
 * their families in m and add what they understood; a malformed line is
 * skipped and makes the parser return -EINVAL once the rest is added, and
 * an -ENOMEM from m is returned at once. */
/* /proc/PID/status: sets out->threads from "Threads:". */
int procfs_parse_status(const char *text, size_t len, struct proc_info *out);
/* /proc/PID/io: sets rchar, wchar, read_bytes, write_bytes (all or none). */
int procfs_parse_io(const char *text, size_t len, struct proc_info *out);
/* /proc/PID/task/TID/children: number of pids in the list. */
int procfs_parse_children(const char *text, size_t len, uint64_t *count);
/* /proc/stat: cpu, ctxt, processes, intr, procs_*, btime families. */
int procfs_parse_host_stat(const char *text, size_t len, struct metrics *m);
int procfs_parse_loadavg(const char *text, size_t len, struct metrics *m);
int procfs_parse_meminfo(const char *text, size_t len, struct metrics *m);
int procfs_parse_diskstats(const char *text, size_t len, struct metrics *m);
int procfs_parse_netdev(const char *text, size_t len, struct metrics *m);
/* /proc/pressure/<resource>, resource "cpu", "memory" or "io". */
int procfs_parse_pressure(const char *text, size_t len, const char *resource, struct metrics *m);
/* /proc/self/mountinfo with the text of /proc/filesystems; statvfs()s each
 * kept mountpoint and skips those where it fails. */
int procfs_parse_mountinfo(const char *text, size_t len, const char *filesystems, size_t fs_len,
			   struct metrics *m);
/* The same with each mountpoint statvfs()ed under root (e.g. /proc/1/root),
 * for a table read from another mount namespace. */
int procfs_parse_mountinfo_at(const char *text, size_t len, const char *filesystems, size_t fs_len,
			      const char *root, struct metrics *m);

#endif
