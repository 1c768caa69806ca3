/* Unit tests for procfs.c: the parsers on recorded /proc files under
 * tests/unit/data/proc (recorded on a 2-cpu VM; 4242 is a made-up process
 * whose comm "one) panel (x" has spaces and parentheses), on hand-written
 * edge cases and garbage, and the readers on this machine's /proc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "procfs.h"

#define FIXTURE TEST_DATA_DIR "/proc"

#define assert_near(a, b) do {							\
	double a_ = (a), b_ = (b);						\
	if (!(fabs(a_ - b_) <= 1e-9 * (fabs(b_) > 1 ? fabs(b_) : 1)))		\
		fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);		\
} while (0)

static double tck(void)
{
	return (double)sysconf(_SC_CLK_TCK);
}

/* Value of a sample, failing the test when it is missing. */
#define value_of(m, name, ...) ({						\
	double v_ = NAN;							\
	int e_ = metrics_lookup((m), (name), &v_, ##__VA_ARGS__, NULL);	\
	if (e_)									\
		fail_msg("no sample %s: %d", (name), e_);			\
	v_;									\
})

#define missing(m, name, ...) ({						\
	double v_;								\
	metrics_lookup((m), (name), &v_, ##__VA_ARGS__, NULL) == -ENOENT;	\
})

/* ---- temporary proc roots ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tmp(void)
{
	char *d = strdup("/tmp/test_procfs.XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void mkdirs(const char *root, const char *rel)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	for (char *p = path + strlen(root) + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(path, 0755);
			*p = '/';
		}
	}
	mkdir(path, 0755);
}

static void write_file(const char *root, const char *rel, const void *data, size_t len)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void write_str(const char *root, const char *rel, const char *s)
{
	write_file(root, rel, s, strlen(s));
}

static void link_fixture(const char *root, const char *rel)
{
	char from[PATH_MAX], to[PATH_MAX];

	snprintf(from, sizeof(from), "%s/%s", FIXTURE, rel);
	snprintf(to, sizeof(to), "%s/%s", root, rel);
	assert_int_equal(symlink(from, to), 0);
}

/* Run a parser on an exact-size heap copy, so ASan sees any read past len. */
typedef int (*mparse_fn)(const char *, size_t, struct metrics *);

static int run_parser(mparse_fn fn, const char *text, size_t len, struct metrics *m)
{
	char *copy = malloc(len ? len : 1);
	int err;

	assert_non_null(copy);
	memcpy(copy, text, len);
	err = fn(copy, len, m);
	free(copy);
	return err;
}

static int parse_stat_copy(const char *text, size_t len, struct proc_info *pi)
{
	char *copy = malloc(len ? len : 1);
	int err;

	assert_non_null(copy);
	memcpy(copy, text, len);
	err = procfs_parse_stat(copy, len, pi);
	free(copy);
	return err;
}

static int pressure_cpu(const char *t, size_t n, struct metrics *m)
{
	return procfs_parse_pressure(t, n, "cpu", m);
}

static int pressure_memory(const char *t, size_t n, struct metrics *m)
{
	return procfs_parse_pressure(t, n, "memory", m);
}

static const char fs_text[] = "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\txfs\n"
			      "nodev\tfuse\n\tfuseblk\nnodev\toverlay\n";

static int mountinfo_fs(const char *t, size_t n, struct metrics *m)
{
	return procfs_parse_mountinfo(t, n, fs_text, sizeof(fs_text) - 1, m);
}

static const struct {
	const char *name;
	mparse_fn fn;
	int empty_result;
} mparsers[] = {
	{ "stat", procfs_parse_host_stat, -EINVAL },
	{ "loadavg", procfs_parse_loadavg, -EINVAL },
	{ "meminfo", procfs_parse_meminfo, -EINVAL },
	{ "diskstats", procfs_parse_diskstats, 0 },	/* no block devices */
	{ "net/dev", procfs_parse_netdev, -EINVAL },
	{ "pressure/cpu", pressure_cpu, -EINVAL },
	{ "pressure/memory", pressure_memory, -EINVAL },
	{ "mountinfo", mountinfo_fs, -EINVAL },
};

/* ---- /proc/PID/stat ---- */

static const char stat_4242[] =
	"4242 (one) panel (x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 130 0 0 20 0 2 0 12345 "
	"104857600 2560 18446744073709551615 94542754910208 94542754930089 140724862329232 0 0 0 0 "
	"0 0 0 0 0 17 1 0 0 0 0 0 94542754946096 94542754947712 94543319166976 140724862331523 "
	"140724862331543 140724862331543 140724862332907 0\n";

static void test_stat_comm_with_parens(void **state)
{
	struct proc_info pi;

	(void)state;
	assert_int_equal(parse_stat_copy(stat_4242, sizeof(stat_4242) - 1, &pi), 0);
	assert_int_equal(pi.pid, 4242);
	assert_string_equal(pi.comm, "one) panel (x");
	assert_int_equal(pi.state, 'S');
	assert_int_equal(pi.ppid, 1);
	assert_near(pi.cpu_user_seconds, 250 / tck());
	assert_near(pi.cpu_system_seconds, 130 / tck());
	assert_int_equal(pi.threads, 2);
	assert_int_equal(pi.start_ticks, 12345);
	assert_int_equal(pi.vsize_bytes, 104857600);
	assert_int_equal(pi.rss_bytes, 2560ull * (uint64_t)sysconf(_SC_PAGESIZE));
	/* not from stat */
	assert_int_equal(pi.open_fds, -1);
	assert_int_equal(pi.read_bytes, -1);
	assert_int_equal(pi.children, -1);
}

static void test_stat_odd_comms(void **state)
{
	struct proc_info pi;
	const char *s;

	(void)state;
	s = "7 () R 0 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0";
	assert_int_equal(parse_stat_copy(s, strlen(s), &pi), 0);
	assert_string_equal(pi.comm, "");
	assert_int_equal(pi.rss_bytes, 0);

	s = "8 ((x) (y) 1 2 3)) Z 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0";
	assert_int_equal(parse_stat_copy(s, strlen(s), &pi), 0);
	assert_string_equal(pi.comm, "(x) (y) 1 2 3)");
	assert_int_equal(pi.state, 'Z');

	/* longer than comm[]: truncated, not overflowed */
	s = "9 (0123456789012345678901234567890123456789) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0";
	assert_int_equal(parse_stat_copy(s, strlen(s), &pi), 0);
	assert_int_equal(strlen(pi.comm), sizeof(pi.comm) - 1);
	assert_memory_equal(pi.comm, "0123456789", 10);

	/* a newline in comm (prctl allows it) */
	s = "10 (a\nb) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0";
	assert_int_equal(parse_stat_copy(s, strlen(s), &pi), 0);
	assert_string_equal(pi.comm, "a\nb");
}

static void test_stat_truncated(void **state)
{
	/* offset of field 24 (rss): every shorter prefix lacks a field */
	const char *rss = strstr(stat_4242, " 2560 ");
	size_t need = (size_t)(rss - stat_4242) + 1;
	struct proc_info pi;

	(void)state;
	for (size_t n = 0; n <= sizeof(stat_4242) - 1; n++) {
		int err = parse_stat_copy(stat_4242, n, &pi);
		if (n <= need)
			assert_int_equal(err, -EINVAL);
	}
	/* cut right after comm, and inside comm */
	assert_int_equal(parse_stat_copy("4242 (one) panel (x)", 20, &pi), -EINVAL);
	assert_int_equal(parse_stat_copy("4242 (one) pan", 14, &pi), -EINVAL);
}

static void test_stat_garbage(void **state)
{
	static const char *const bad[] = {
		"",
		"(",
		")(",
		"()",
		"4242",
		"abc (x) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0",	/* pid */
		"-5 (x) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0",
		"5 (x) SS 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0",	/* state */
		"5 (x) S -1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0",	/* ppid */
		"5 (x) S 1 0 0 0 -1 0 0 0 0 0 1x 2 0 0 20 0 1 0 5 0 0",	/* utime */
		"5 (x) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99999999999999999999 0 0",
		"5 (x) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 18446744073709551615", /* rss bytes overflow */
		"5 (x) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 -1 0 5 0 0",	/* threads */
		"5 (x) S 1 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0\n0",	/* rss on the next line */
	};
	struct proc_info pi;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_stat_copy(bad[i], strlen(bad[i]), &pi) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
	}
	/* binary: NULs and high bytes, no crash */
	unsigned char bin[300];
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (unsigned char)(i * 37 + 11);
	bin[10] = '(';
	bin[200] = ')';
	assert_int_equal(parse_stat_copy((const char *)bin, sizeof(bin), &pi), -EINVAL);
}

/* ---- /proc/PID ---- */

static void test_read_proc_fixture(void **state)
{
	struct proc_info pi;
	double btime;

	(void)state;
	assert_int_equal(procfs_boot_time(FIXTURE, &btime), 0);
	assert_near(btime, 1795666455.0);

	assert_int_equal(procfs_read_proc(FIXTURE, 4242, &pi), 0);
	assert_int_equal(pi.pid, 4242);
	assert_string_equal(pi.comm, "one) panel (x");
	assert_int_equal(pi.threads, 2);
	assert_near(pi.start_time, 1795666455.0 + 12345 / tck());
	assert_int_equal(pi.open_fds, 5);
	assert_int_equal(pi.rchar, 123456);
	assert_int_equal(pi.wchar, 65432);
	assert_int_equal(pi.read_bytes, 40960);
	assert_int_equal(pi.write_bytes, 8192);
	assert_int_equal(pi.children, 3);	/* 2 of thread 4242 + 1 of 4243 */

	assert_int_equal(procfs_read_proc(FIXTURE, 4243, &pi), -ENOENT);
	assert_int_equal(procfs_read_proc("/nonexistent", 1, &pi), -ENOENT);
	assert_int_equal(procfs_read_proc(FIXTURE, 0, &pi), -EINVAL);
}

/* Optional files missing or unreadable: the read still works, with -1s
 * and the stat thread count as the fallback. */
static void test_read_proc_degraded(void **state)
{
	char *root = make_tmp();
	struct proc_info pi;
	char big[5000];

	(void)state;
	mkdirs(root, "4242/task/4242");
	write_str(root, "4242/stat", stat_4242);
	write_str(root, "4242/status", "Name:\tx\nThreads:\tmany\n");	/* garbled */
	write_str(root, "4242/io", "rchar: 1\nwchar: 2\n");		/* truncated */
	/* no fd/, no children file while the thread dir exists */
	assert_int_equal(procfs_read_proc(root, 4242, &pi), 0);
	assert_int_equal(pi.threads, 2);
	assert_int_equal(pi.open_fds, -1);
	assert_int_equal(pi.rchar, -1);
	assert_int_equal(pi.write_bytes, -1);
	assert_int_equal(pi.children, -1);
	assert_near(pi.start_time, 0);	/* no <root>/stat: boot time unknown */

	/* children file present but empty: 0 children */
	write_str(root, "4242/task/4242/children", "");
	assert_int_equal(procfs_read_proc(root, 4242, &pi), 0);
	assert_int_equal(pi.children, 0);

	/* pid in the file is not the one asked for */
	mkdirs(root, "77");
	write_str(root, "77/stat", stat_4242);
	assert_int_equal(procfs_read_proc(root, 77, &pi), -EINVAL);

	/* a stat bigger than its buffer */
	memset(big, '1', sizeof(big));
	write_file(root, "77/stat", big, sizeof(big));
	assert_int_equal(procfs_read_proc(root, 77, &pi), -EFBIG);

	/* empty stat */
	write_str(root, "77/stat", "");
	assert_int_equal(procfs_read_proc(root, 77, &pi), -EINVAL);

	rm_tree(root);
	free(root);
}

static void test_status_io_children(void **state)
{
	struct proc_info pi = { 0 };
	uint64_t n;
	const char *s;

	(void)state;
	s = "Name:\tx\nThreads:\t17\n";
	assert_int_equal(procfs_parse_status(s, strlen(s), &pi), 0);
	assert_int_equal(pi.threads, 17);
	assert_int_equal(procfs_parse_status("", 0, &pi), -EINVAL);
	s = "Threads:\t17";	/* no newline, cut inside the number is still 1 */
	assert_int_equal(procfs_parse_status(s, 10, &pi), 0);
	assert_int_equal(pi.threads, 1);

	pi.rchar = -1;
	s = "rchar: 1\nwchar: 2\nread_bytes: 3\nwrite_bytes: 4\n";
	assert_int_equal(procfs_parse_io(s, strlen(s), &pi), 0);
	assert_int_equal(pi.rchar, 1);
	assert_int_equal(pi.write_bytes, 4);
	assert_int_equal(procfs_parse_io("", 0, &pi), -EINVAL);
	s = "rchar: 1\nwchar: 2\nread_bytes: x\nwrite_bytes: 4\n";
	assert_int_equal(procfs_parse_io(s, strlen(s), &pi), -EINVAL);

	assert_int_equal(procfs_parse_children("", 0, &n), 0);
	assert_int_equal(n, 0);
	s = "10 11 12 ";
	assert_int_equal(procfs_parse_children(s, strlen(s), &n), 0);
	assert_int_equal(n, 3);
	s = "10 1x ";
	assert_int_equal(procfs_parse_children(s, strlen(s), &n), -EINVAL);
}

static void test_read_exe(void **state)
{
	char *root = make_tmp();
	char buf[PATH_MAX], want[PATH_MAX];
	ssize_t n;

	(void)state;
	n = readlink("/proc/self/exe", want, sizeof(want) - 1);
	assert_true(n > 0);
	want[n] = '\0';
	assert_int_equal(procfs_read_exe("/proc", getpid(), buf, sizeof(buf)), 0);
	assert_string_equal(buf, want);
	assert_int_equal(procfs_read_exe("/proc", getpid(), buf, 4), -ENAMETOOLONG);

	mkdirs(root, "77");
	snprintf(buf, sizeof(buf), "%s/77/exe", root);
	assert_int_equal(symlink("/opt/onepanel/bin/onepanel (deleted)", buf), 0);
	assert_int_equal(procfs_read_exe(root, 77, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/opt/onepanel/bin/onepanel");
	assert_int_equal(procfs_read_exe(root, 78, buf, sizeof(buf)), -ENOENT);

	rm_tree(root);
	free(root);
}

/* This process, from the real /proc. */
static void test_read_proc_live(void **state)
{
	struct proc_info pi;
	double btime;
	pid_t child;

	(void)state;
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		pause();
		_exit(0);
	}
	assert_int_equal(procfs_boot_time("/proc", &btime), 0);
	assert_int_equal(procfs_read_proc("/proc", getpid(), &pi), 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);

	assert_int_equal(pi.pid, getpid());
	assert_int_equal(pi.ppid, getppid());
	/* "test_procfs", or the tool's name under valgrind */
	char comm[64] = "";
	FILE *f = fopen("/proc/self/comm", "r");
	assert_non_null(f);
	assert_non_null(fgets(comm, sizeof(comm), f));
	fclose(f);
	comm[strcspn(comm, "\n")] = '\0';
	assert_string_equal(pi.comm, comm);
	assert_int_equal(pi.state, 'R');
	assert_int_equal(pi.threads, 1);
	assert_true(pi.open_fds >= 3);
	assert_true(pi.rss_bytes > 0);
	assert_true(pi.vsize_bytes >= pi.rss_bytes);
	assert_true(pi.start_time >= btime);
	assert_true(pi.start_time <= (double)time(NULL) + 1);
	assert_true(pi.rchar > 0);	/* at least the stat we just read */
	/* -1 on kernels without CONFIG_PROC_CHILDREN */
	assert_true(pi.children == 1 || pi.children == -1);
}

/* ---- host ---- */

static void test_collect_fixture(void **state)
{
	struct metrics *m = metrics_new();
	double t = tck();

	(void)state;
	assert_non_null(m);
	assert_int_equal(procfs_collect_host(m, FIXTURE), 0);

	/* stat */
	assert_near(value_of(m, "node_cpu_seconds_total", "cpu", "0", "mode", "user"), 600 / t);
	assert_near(value_of(m, "node_cpu_seconds_total", "cpu", "0", "mode", "idle"), 36578 / t);
	assert_near(value_of(m, "node_cpu_seconds_total", "cpu", "1", "mode", "iowait"), 375 / t);
	assert_near(value_of(m, "node_cpu_seconds_total", "cpu", "1", "mode", "steal"), 5 / t);
	assert_true(missing(m, "node_cpu_seconds_total", "mode", "guest"));
	assert_true(missing(m, "node_cpu_seconds_total", "cpu", "2"));
	assert_near(value_of(m, "node_context_switches_total"), 284620);
	assert_near(value_of(m, "node_forks_total"), 5070);
	assert_near(value_of(m, "node_intr_total"), 133991);
	assert_near(value_of(m, "node_procs_running"), 2);
	assert_near(value_of(m, "node_procs_blocked"), 0);
	assert_near(value_of(m, "node_boot_time_seconds"), 1795666455);

	/* loadavg, meminfo */
	assert_near(value_of(m, "node_load1"), 0.14);
	assert_near(value_of(m, "node_load5"), 0.09);
	assert_near(value_of(m, "node_load15"), 0.04);
	assert_near(value_of(m, "node_memory_total_bytes"), 24684096.0 * 1024);
	assert_near(value_of(m, "node_memory_available_bytes"), 24319024.0 * 1024);
	assert_near(value_of(m, "node_memory_sreclaimable_bytes"), 60180.0 * 1024);
	assert_near(value_of(m, "node_memory_shmem_bytes"), 8788.0 * 1024);
	assert_near(value_of(m, "node_memory_swap_total_bytes"), 0);

	/* diskstats: vda counted, idle loop devices dropped, idle zram kept */
	assert_near(value_of(m, "node_disk_reads_completed_total", "device", "vda"), 36202);
	assert_near(value_of(m, "node_disk_read_bytes_total", "device", "vda"), 2842818.0 * 512);
	assert_near(value_of(m, "node_disk_read_time_seconds_total", "device", "vda"), 23.894);
	assert_near(value_of(m, "node_disk_writes_completed_total", "device", "vda"), 9912);
	assert_near(value_of(m, "node_disk_written_bytes_total", "device", "vda"), 1304520.0 * 512);
	assert_near(value_of(m, "node_disk_write_time_seconds_total", "device", "vda"), 4.009);
	assert_near(value_of(m, "node_disk_io_time_seconds_total", "device", "vda"), 5.496);
	assert_near(value_of(m, "node_disk_reads_completed_total", "device", "zram0"), 0);
	assert_true(missing(m, "node_disk_reads_completed_total", "device", "loop0"));

	/* net/dev */
	assert_near(value_of(m, "node_network_receive_bytes_total", "device", "eth0"), 51867466);
	assert_near(value_of(m, "node_network_receive_packets_total", "device", "eth0"), 1107);
	assert_near(value_of(m, "node_network_transmit_bytes_total", "device", "eth0"), 48421);
	assert_near(value_of(m, "node_network_transmit_packets_total", "device", "eth0"), 597);
	assert_near(value_of(m, "node_network_receive_bytes_total", "device", "lo"), 3267);
	assert_near(value_of(m, "node_network_transmit_drop_total", "device", "ifb1"), 0);

	/* pressure: µs to s; cpu has no "stalled" */
	assert_near(value_of(m, "node_pressure_cpu_waiting_seconds_total"), 3.603420);
	assert_near(value_of(m, "node_pressure_io_waiting_seconds_total"), 3.501185);
	assert_near(value_of(m, "node_pressure_io_stalled_seconds_total"), 3.372868);
	assert_near(value_of(m, "node_pressure_memory_waiting_seconds_total"), 0);
	assert_near(value_of(m, "node_pressure_memory_stalled_seconds_total"), 0);
	assert_true(missing(m, "node_pressure_cpu_stalled_seconds_total"));

	/* filesystems: only ext4 / is block-backed, and statvfs("/") works
	 * here too; proc, tmpfs, cgroup... are nodev */
	assert_true(value_of(m, "node_filesystem_size_bytes", "mountpoint", "/",
			     "device", "/dev/vda", "fstype", "ext4") > 0);
	assert_true(value_of(m, "node_filesystem_files", "mountpoint", "/") > 0);
	assert_true(missing(m, "node_filesystem_size_bytes", "mountpoint", "/proc"));
	assert_true(missing(m, "node_filesystem_size_bytes", "mountpoint", "/dev/shm"));
	assert_true(missing(m, "node_filesystem_size_bytes", "fstype", "tmpfs"));

	/* collecting twice into a reset snapshot gives the same */
	size_t n = metrics_sample_count(m);
	metrics_reset(m);
	assert_int_equal(procfs_collect_host(m, FIXTURE), 0);
	assert_int_equal(metrics_sample_count(m), n);
	metrics_free(m);
}

static void test_collect_no_pressure(void **state)
{
	static const char *const rels[] = { "stat", "loadavg", "meminfo", "diskstats", "net",
					    "filesystems", "self" };
	char *root = make_tmp();
	struct metrics *m = metrics_new();
	double v;

	(void)state;
	for (size_t i = 0; i < sizeof(rels) / sizeof(rels[0]); i++)
		link_fixture(root, rels[i]);
	assert_int_equal(procfs_collect_host(m, root), 0);
	assert_int_equal(metrics_lookup(m, "node_pressure_cpu_waiting_seconds_total", &v, NULL), -ENOENT);
	assert_int_equal(metrics_lookup(m, "node_pressure_io_stalled_seconds_total", &v, NULL), -ENOENT);
	assert_near(value_of(m, "node_load1"), 0.14);
	assert_near(value_of(m, "node_forks_total"), 5070);
	assert_near(value_of(m, "node_memory_total_bytes"), 24684096.0 * 1024);
	assert_near(value_of(m, "node_disk_reads_completed_total", "device", "vda"), 36202);
	assert_near(value_of(m, "node_network_receive_bytes_total", "device", "eth0"), 51867466);
	assert_true(value_of(m, "node_filesystem_avail_bytes", "mountpoint", "/") >= 0);

	/* nothing at all: still 0, nothing collected */
	metrics_reset(m);
	assert_int_equal(procfs_collect_host(m, "/nonexistent"), 0);
	assert_int_equal(metrics_sample_count(m), 0);

	metrics_free(m);
	rm_tree(root);
	free(root);
}

/* The host's mounts are pid 1's, statvfs()ed through /proc/1/root: a
 * mountpoint that exists only in that namespace is still reported, under
 * its own path; without a pid 1 the agent's own table is used. */
static void test_collect_mounts_of_pid1(void **state)
{
	static const char *const rels[] = { "stat", "loadavg", "meminfo", "diskstats", "net",
					    "filesystems", "self" };
	char *root = make_tmp(), *ns = make_tmp();
	struct metrics *m = metrics_new();
	char text[2 * PATH_MAX], path[PATH_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(rels) / sizeof(rels[0]); i++)
		link_fixture(root, rels[i]);
	mkdirs(ns, "only/in ns");
	mkdirs(root, "1");
	snprintf(path, sizeof(path), "%s/1/root", root);
	assert_int_equal(symlink(ns, path), 0);
	snprintf(text, sizeof(text), "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
		 "60 27 254:5 / /only/in\\040ns rw - xfs /dev/vde rw\n");
	write_str(root, "1/mountinfo", text);
	assert_int_equal(procfs_collect_host(m, root), 0);
	assert_true(value_of(m, "node_filesystem_size_bytes", "mountpoint", "/only/in ns",
			     "device", "/dev/vde", "fstype", "xfs") > 0);
	assert_true(value_of(m, "node_filesystem_size_bytes", "mountpoint", "/", "device", "/dev/vda") > 0);

	/* no pid 1 root to go through: the agent's own table (the fixture's) */
	assert_int_equal(unlink(path), 0);
	metrics_reset(m);
	assert_int_equal(procfs_collect_host(m, root), 0);
	assert_true(missing(m, "node_filesystem_size_bytes", "mountpoint", "/only/in ns"));
	assert_true(value_of(m, "node_filesystem_size_bytes", "mountpoint", "/", "fstype", "ext4") > 0);

	metrics_free(m);
	rm_tree(root);
	rm_tree(ns);
	free(root);
	free(ns);
}

static void fill_root(const char *root, const void *data, size_t len)
{
	static const char *const rels[] = { "stat", "loadavg", "meminfo", "diskstats", "net/dev",
					    "filesystems", "self/mountinfo", "pressure/cpu",
					    "pressure/memory", "pressure/io" };

	mkdirs(root, "net");
	mkdirs(root, "self");
	mkdirs(root, "pressure");
	for (size_t i = 0; i < sizeof(rels) / sizeof(rels[0]); i++)
		write_file(root, rels[i], data, len);
}

static unsigned char *garbage(size_t len, unsigned seed)
{
	unsigned char *g = malloc(len);
	uint32_t x = seed;

	assert_non_null(g);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		g[i] = (unsigned char)(x >> 16);
	}
	return g;
}

static void test_collect_empty_and_garbage(void **state)
{
	char *root = make_tmp();
	struct metrics *m = metrics_new();
	unsigned char *g = garbage(3000, 1);

	(void)state;
	fill_root(root, "", 0);
	assert_int_equal(procfs_collect_host(m, root), 0);
	assert_int_equal(metrics_sample_count(m), 0);

	metrics_reset(m);
	fill_root(root, g, 3000);
	assert_int_equal(procfs_collect_host(m, root), 0);
	assert_int_equal(metrics_sample_count(m), 0);

	metrics_free(m);
	free(g);
	rm_tree(root);
	free(root);
}

static void test_parsers_empty_garbage(void **state)
{
	struct metrics *m = metrics_new();

	(void)state;
	for (size_t i = 0; i < sizeof(mparsers) / sizeof(mparsers[0]); i++) {
		if (run_parser(mparsers[i].fn, "", 0, m) != mparsers[i].empty_result)
			fail_msg("%s: empty", mparsers[i].name);
		for (unsigned seed = 1; seed <= 50; seed++) {
			size_t len = seed * 7;
			unsigned char *g = garbage(len, seed);
			int err = run_parser(mparsers[i].fn, (const char *)g, len, m);
			free(g);
			if (err != -EINVAL)
				fail_msg("%s: garbage seed %u gave %d", mparsers[i].name, seed, err);
		}
		/* text-like garbage */
		static const char *const junk[] = { "\n\n\n", "hello world\n", ":::\n", "\0\0\0\0",
						    "cpu0 1 2\n", "1 2 x 4\n" };
		for (size_t j = 0; j < sizeof(junk) / sizeof(junk[0]); j++) {
			size_t len = j == 3 ? 4 : strlen(junk[j]);
			int err = run_parser(mparsers[i].fn, junk[j], len, m);
			/* blank lines are an empty diskstats */
			if (err != -EINVAL && !(j == 0 && mparsers[i].empty_result == 0))
				fail_msg("%s: junk %zu gave %d", mparsers[i].name, j, err);
		}
	}
	assert_int_equal(metrics_sample_count(m), 0);
	metrics_free(m);
}

static void test_stat_host_edge(void **state)
{
	struct metrics *m = metrics_new();
	const char *s;

	(void)state;
	/* old kernel: only 4 modes; a bad ctxt line is reported but the
	 * rest is kept */
	s = "cpu  1 2 3 4\ncpu7 100 200 300 400\nctxt x\nprocesses 9\nintr 5";
	assert_int_equal(run_parser(procfs_parse_host_stat, s, strlen(s), m), -EINVAL);
	assert_near(value_of(m, "node_cpu_seconds_total", "cpu", "7", "mode", "idle"), 400 / tck());
	assert_true(missing(m, "node_cpu_seconds_total", "mode", "iowait"));
	assert_true(missing(m, "node_context_switches_total"));
	assert_near(value_of(m, "node_forks_total"), 9);
	assert_near(value_of(m, "node_intr_total"), 5);

	/* "cpu" followed by something not a number is not a cpu line */
	metrics_reset(m);
	s = "cpux 1 2 3 4\n";
	assert_int_equal(run_parser(procfs_parse_host_stat, s, strlen(s), m), -EINVAL);
	assert_int_equal(metrics_sample_count(m), 0);
	metrics_free(m);
}

static void test_meminfo_loadavg_edge(void **state)
{
	struct metrics *m = metrics_new();
	const char *s;

	(void)state;
	s = "MemTotal: 100 kB\nHugePages_Total:       0\nSwapFree:    7 kB";
	assert_int_equal(run_parser(procfs_parse_meminfo, s, strlen(s), m), 0);
	assert_near(value_of(m, "node_memory_total_bytes"), 102400);
	assert_near(value_of(m, "node_memory_swap_free_bytes"), 7168);
	assert_true(missing(m, "node_memory_cached_bytes"));

	metrics_reset(m);
	s = "MemFree: 100 kB\n";	/* no MemTotal: not meminfo */
	assert_int_equal(run_parser(procfs_parse_meminfo, s, strlen(s), m), -EINVAL);
	s = "MemTotal: 100 MB\n";
	assert_int_equal(run_parser(procfs_parse_meminfo, s, strlen(s), m), -EINVAL);

	metrics_reset(m);
	s = "12.5 0 100.25 1/2 3";
	assert_int_equal(run_parser(procfs_parse_loadavg, s, strlen(s), m), 0);
	assert_near(value_of(m, "node_load1"), 12.5);
	assert_near(value_of(m, "node_load5"), 0);
	assert_near(value_of(m, "node_load15"), 100.25);
	metrics_reset(m);
	static const char *const bad[] = { "1.0 2.0", "1. 2 3", ".5 1 1", "1,5 1 1", "-1 1 1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(run_parser(procfs_parse_loadavg, bad[i], strlen(bad[i]), m), -EINVAL);
	assert_int_equal(metrics_sample_count(m), 0);
	metrics_free(m);
}

static void test_diskstats_edge(void **state)
{
	struct metrics *m = metrics_new();
	const char *s;

	(void)state;
	s = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	    "   7       1 loop1 5 0 80 1 0 0 0 0 0 1 1\n"		/* used loop: kept */
	    "   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0\n"
	    " 259       0 nvme0n1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"	/* idle disk: kept */
	    "   8       0 sda 1 2 3\n"					/* too short */
	    "   8       1 sda1 10 0 16 2000 20 0 32 3000 0 4000 5000\n";	/* 4.18-: 11 counters */
	assert_int_equal(run_parser(procfs_parse_diskstats, s, strlen(s), m), -EINVAL);
	assert_true(missing(m, "node_disk_reads_completed_total", "device", "loop0"));
	assert_true(missing(m, "node_disk_reads_completed_total", "device", "ram0"));
	assert_true(missing(m, "node_disk_reads_completed_total", "device", "sda"));
	assert_near(value_of(m, "node_disk_read_bytes_total", "device", "loop1"), 80 * 512);
	assert_near(value_of(m, "node_disk_reads_completed_total", "device", "nvme0n1"), 0);
	assert_near(value_of(m, "node_disk_read_time_seconds_total", "device", "sda1"), 2);
	assert_near(value_of(m, "node_disk_written_bytes_total", "device", "sda1"), 32 * 512);
	assert_near(value_of(m, "node_disk_io_time_seconds_total", "device", "sda1"), 4);
	metrics_free(m);
}

static void test_netdev_edge(void **state)
{
	struct metrics *m = metrics_new();
	const char *s;

	(void)state;
	/* old kernels glue big counters to the colon */
	s = "Inter-|   Receive |  Transmit\n"
	    " face |bytes packets|bytes\n"
	    "eth1:4294967296 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"
	    "  br-0\xc3: 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n";	/* invalid UTF-8 in the name */
	assert_int_equal(run_parser(procfs_parse_netdev, s, strlen(s), m), 0);
	assert_near(value_of(m, "node_network_receive_bytes_total", "device", "eth1"), 4294967296.0);
	assert_near(value_of(m, "node_network_receive_drop_total", "device", "eth1"), 4);
	assert_near(value_of(m, "node_network_transmit_bytes_total", "device", "eth1"), 9);
	assert_near(value_of(m, "node_network_transmit_drop_total", "device", "eth1"), 12);
	assert_near(value_of(m, "node_network_receive_bytes_total", "device", "br-0?"), 1);

	metrics_reset(m);
	s = "Inter-|\n face |\n eth0: 1 2 3\n";
	assert_int_equal(run_parser(procfs_parse_netdev, s, strlen(s), m), -EINVAL);
	assert_int_equal(metrics_sample_count(m), 0);
	metrics_free(m);
}

static void test_pressure_edge(void **state)
{
	struct metrics *m = metrics_new();
	const char *s;

	(void)state;
	s = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n"
	    "full avg10=0.00 avg60=0.00 avg300=0.00 total=250\n";
	assert_int_equal(procfs_parse_pressure(s, strlen(s), "memory", m), 0);
	assert_near(value_of(m, "node_pressure_memory_waiting_seconds_total"), 1.5);
	assert_near(value_of(m, "node_pressure_memory_stalled_seconds_total"), 0.00025);
	assert_int_equal(procfs_parse_pressure(s, strlen(s), "disk", m), -EINVAL);
	/* cpu "full" (5.13+) is ignored */
	assert_int_equal(procfs_parse_pressure(s, strlen(s), "cpu", m), 0);
	assert_near(value_of(m, "node_pressure_cpu_waiting_seconds_total"), 1.5);
	assert_true(missing(m, "node_pressure_cpu_stalled_seconds_total"));
	/* before 5.13 cpu has only the "some" line */
	metrics_reset(m);
	assert_int_equal(procfs_parse_pressure(s, (size_t)(strchr(s, '\n') - s + 1), "cpu", m), 0);
	assert_near(value_of(m, "node_pressure_cpu_waiting_seconds_total"), 1.5);

	metrics_reset(m);
	s = "some avg10=0.00 avg60=0.00 avg300=0.00 total=\n";
	assert_int_equal(procfs_parse_pressure(s, strlen(s), "io", m), -EINVAL);
	s = "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n";	/* no some */
	assert_int_equal(procfs_parse_pressure(s, strlen(s), "io", m), -EINVAL);
	metrics_free(m);
}

/* Mountinfo on a temporary directory, so statvfs works on the escaped
 * path: \040 decoding, dedup of mountpoints, nodev and subtypes. */
static void test_mountinfo(void **state)
{
	char *root = make_tmp();
	struct metrics *m = metrics_new();
	char text[4 * PATH_MAX], mp[PATH_MAX];
	double v;

	(void)state;
	mkdirs(root, "a b");
	mkdirs(root, "over");
	mkdirs(root, "c");
	snprintf(mp, sizeof(mp), "%s/a b", root);
	snprintf(text, sizeof(text),
		 "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
		 "50 27 254:1 / %s/a\\040b rw master:2 shared:3 - xfs /dev/my\\040disk rw\n"
		 /* /over: ext4 then tmpfs on top: what is visible is tmpfs */
		 "51 27 254:2 / %s/over rw - ext4 /dev/vdb rw\n"
		 "52 51 0:40 / %s/over rw - tmpfs tmpfs rw\n"
		 /* /c: mounted twice, last wins */
		 "53 27 254:3 / %s/c rw - ext4 /dev/vdc rw\n"
		 "54 53 254:4 / %s/c rw - ext4 /dev/vdd rw\n"
		 "55 27 0:41 / /home/u/remote rw - fuse.sshfs u@h:/ rw\n"
		 "56 27 0:42 / /mnt/x rw - zfs pool/x rw\n"			/* unlisted type */
		 "57 27 8:1 / /nonexistent/mnt rw - ext4 /dev/sdz1 rw\n",	/* statvfs fails */
		 root, root, root, root, root);
	assert_int_equal(mountinfo_fs(text, strlen(text), m), 0);
	assert_true(value_of(m, "node_filesystem_size_bytes", "mountpoint", mp,
			     "device", "/dev/my disk", "fstype", "xfs") > 0);
	assert_true(value_of(m, "node_filesystem_size_bytes", "mountpoint", "/", "device", "/dev/vda") > 0);
	snprintf(mp, sizeof(mp), "%s/over", root);
	assert_int_equal(metrics_lookup(m, "node_filesystem_size_bytes", &v, "mountpoint", mp, NULL), -ENOENT);
	snprintf(mp, sizeof(mp), "%s/c", root);
	assert_true(value_of(m, "node_filesystem_files_free", "mountpoint", mp, "device", "/dev/vdd") >= 0);
	assert_true(missing(m, "node_filesystem_size_bytes", "device", "/dev/vdc"));
	assert_true(missing(m, "node_filesystem_size_bytes", "mountpoint", "/home/u/remote"));
	assert_true(missing(m, "node_filesystem_size_bytes", "mountpoint", "/mnt/x"));
	assert_true(missing(m, "node_filesystem_size_bytes", "mountpoint", "/nonexistent/mnt"));
	assert_int_equal(metrics_sample_count(m), 3 * 5);

	/* malformed lines are reported, the good ones still kept */
	metrics_reset(m);
	const char *s = "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
			"28 1 254:0 / /x rw ext4 /dev/vda rw\n"		/* no separator */
			"29 1 254:0 / /y\\000z rw - ext4 /dev/vda rw\n"	/* escaped NUL */
			"x 1 254:0 / /z rw - ext4 /dev/vda rw\n";
	assert_int_equal(mountinfo_fs(s, strlen(s), m), -EINVAL);
	assert_int_equal(metrics_sample_count(m), 5);
	/* a bad /proc/filesystems */
	size_t first = (size_t)(strchr(s, '\n') - s + 1);
	assert_int_equal(procfs_parse_mountinfo(s, first, "a b c\n", 6, m), -EINVAL);
	assert_int_equal(procfs_parse_mountinfo(s, first, "", 0, m), -EINVAL);

	metrics_free(m);
	rm_tree(root);
	free(root);
}

static void test_collect_live(void **state)
{
	struct metrics *m = metrics_new();

	(void)state;
	assert_int_equal(procfs_collect_host(m, "/proc"), 0);
	assert_true(value_of(m, "node_cpu_seconds_total", "cpu", "0", "mode", "idle") > 0);
	assert_true(value_of(m, "node_memory_total_bytes") > 0);
	assert_true(value_of(m, "node_boot_time_seconds") > 0);
	assert_true(value_of(m, "node_forks_total") > 0);
	assert_true(value_of(m, "node_load1") >= 0);
	assert_true(value_of(m, "node_network_receive_bytes_total", "device", "lo") >= 0);

	/* no descriptor left open by any reader, on success or failure */
	struct proc_info before, after;
	assert_int_equal(procfs_read_proc("/proc", getpid(), &before), 0);
	for (int i = 0; i < 20; i++) {
		struct proc_info pi;
		char exe[PATH_MAX];
		double bt;

		metrics_reset(m);
		assert_int_equal(procfs_collect_host(m, "/proc"), 0);
		assert_int_equal(procfs_collect_host(m, FIXTURE), 0);
		assert_int_equal(procfs_collect_host(m, "/nonexistent"), 0);
		assert_int_equal(procfs_read_proc(FIXTURE, 4242, &pi), 0);
		assert_int_equal(procfs_read_proc("/proc", getpid(), &pi), 0);
		assert_int_equal(procfs_read_proc(FIXTURE, 1, &pi), -ENOENT);
		assert_int_equal(procfs_read_exe("/proc", getpid(), exe, sizeof(exe)), 0);
		assert_int_equal(procfs_boot_time(FIXTURE, &bt), 0);
	}
	assert_int_equal(procfs_read_proc("/proc", getpid(), &after), 0);
	assert_int_equal(after.open_fds, before.open_fds);
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stat_comm_with_parens),
		cmocka_unit_test(test_stat_odd_comms),
		cmocka_unit_test(test_stat_truncated),
		cmocka_unit_test(test_stat_garbage),
		cmocka_unit_test(test_read_proc_fixture),
		cmocka_unit_test(test_read_proc_degraded),
		cmocka_unit_test(test_status_io_children),
		cmocka_unit_test(test_read_exe),
		cmocka_unit_test(test_read_proc_live),
		cmocka_unit_test(test_collect_fixture),
		cmocka_unit_test(test_collect_no_pressure),
		cmocka_unit_test(test_collect_mounts_of_pid1),
		cmocka_unit_test(test_collect_empty_and_garbage),
		cmocka_unit_test(test_parsers_empty_garbage),
		cmocka_unit_test(test_stat_host_edge),
		cmocka_unit_test(test_meminfo_loadavg_edge),
		cmocka_unit_test(test_diskstats_edge),
		cmocka_unit_test(test_netdev_edge),
		cmocka_unit_test(test_pressure_edge),
		cmocka_unit_test(test_mountinfo),
		cmocka_unit_test(test_collect_live),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
