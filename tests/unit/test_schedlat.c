/* Tests for schedlat.c against the running kernel (root with BTF, as in CI):
 * children that alternate busy-spinning and 1 ms sleeps are tracked or not,
 * and the histograms must show their sleeps and only theirs. Each counting
 * test runs once per variant (auto, tp_btf+task storage, tp_btf+hash,
 * raw_tp+hash); a forced variant this kernel lacks is skipped, while a
 * failing schedlat_open() fails the test unless ONESHIELD_ALLOW_NO_BPF=1.
 *
 * Every test opens its own instance (fresh maps), so an agent running on the
 * same host does not disturb the counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "bpftest.h"
#include "metrics.h"
/* -Iinclude comes first and include/schedlat.h is the BPF-shared one. */
#include "../../userspace/schedlat.h"

#define SLEEPS 200
#define LABEL "onepanel"
#define RUNQ "onepanel_runqueue_latency_seconds"
#define OFFCPU "onepanel_offcpu_seconds"

static enum schedlat_variant v_auto = SCHEDLAT_AUTO;
static enum schedlat_variant v_ts = SCHEDLAT_TP_BTF_TASK_STORAGE;
static enum schedlat_variant v_btf_hash = SCHEDLAT_TP_BTF_HASH;
static enum schedlat_variant v_raw = SCHEDLAT_RAW_TP_HASH;

static struct schedlat *open_or_skip(void **state)
{
	enum schedlat_variant v = state && *state ? *(enum schedlat_variant *)*state : SCHEDLAT_AUTO;
	struct schedlat *s = NULL;
	char why[512];
	int err = schedlat_open_variant(&s, v, why, sizeof(why));
	if (err)
		bpftest_open_failed("schedlat_open", (int)v, v != SCHEDLAT_AUTO, err, why);
	assert_non_null(s);
	print_message("schedlat mode: %s\n", schedlat_mode(s));
	return s;
}

/* ---- workload children ---- */

static void spin_us(long us)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000 < us);
}

static void *work(void *arg)
{
	int n = *(int *)arg;
	const struct timespec ms = { 0, 1000000 };
	for (int i = 0; i < n; i++) {
		spin_us(100);
		nanosleep(&ms, NULL);
	}
	return NULL;
}

/* The workload runs as a fresh image of this binary (--workload THREADS
 * ITERS...): go pipe on fd 3, done pipe on fd 4. A fresh image rather than
 * a forked copy, so that valgrind (which does not trace exec'd children)
 * and the inherited heap stay out of the picture. */
static int workload_main(int argc, char **argv)
{
	int threads = atoi(argv[2]);
	if (threads < 1 || threads > 8)
		return 5;
	for (int p = 3; p < argc; p++) {
		char b;
		if (read(3, &b, 1) != 1)
			return 2;
		pthread_t th[8];
		int n = atoi(argv[p]);
		for (int t = 1; t < threads; t++)
			if (pthread_create(&th[t], NULL, work, &n) != 0)
				return 3;
		work(&n);
		for (int t = 1; t < threads; t++)
			pthread_join(th[t], NULL);
		if (write(4, "d", 1) != 1)
			return 4;
	}
	return 0;
}

/* phases: iterations per phase; threads run each phase concurrently. */
static void start_child(struct child *c, int nphases, const int *iters, int threads)
{
	char args[8][16];
	char *argv[12] = { "test_schedlat", "--workload", args[0] };

	assert_true(nphases >= 1 && nphases <= 6);
	snprintf(args[0], sizeof(args[0]), "%d", threads);
	for (int p = 0; p < nphases; p++) {
		snprintf(args[p + 1], sizeof(args[p + 1]), "%d", iters[p]);
		argv[3 + p] = args[p + 1];
	}
	argv[3 + nphases] = NULL;
	child_spawn(c, argv);
}

/* Waits until the child sleeps (in its read() of the go pipe). */
static void wait_blocked(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int tries = 0; tries < 2000; tries++) {
		FILE *f = fopen(path, "r");
		assert_non_null(f);
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		const char *rp = strrchr(buf, ')');
		if (rp && rp[1] == ' ' && rp[2] == 'S')
			return;
		usleep(1000);
	}
	fail_msg("child %d never blocked", (int)pid);
}

static void child_phase(struct child *c)
{
	char b;
	assert_int_equal(write(c->go_w, "g", 1), 1);
	assert_int_equal(read(c->done_r, &b, 1), 1);
}

/* ---- metrics ---- */

struct hist {
	uint64_t count;
	double sum;
	size_t nbuckets;
	double upper[64];
	uint64_t cum[64];
};

static struct metrics *collect(struct schedlat *s)
{
	struct metrics *m = metrics_new();
	assert_non_null(m);
	assert_int_equal(schedlat_collect(s, m, LABEL), 0);
	return m;
}

/* The histogram sample, checked to be well-formed. */
static struct hist get_hist(const struct metrics *m, const char *name)
{
	struct hist h;
	memset(&h, 0, sizeof(h));
	double c = -1;
	assert_int_equal(metrics_lookup(m, name, &c, "process", LABEL, NULL), 0);

	size_t nf = metrics_family_count(m), f;
	struct metric_family_view fv;
	for (f = 0; f < nf; f++) {
		assert_int_equal(metrics_family_at(m, f, &fv), 0);
		if (strcmp(fv.name, name) == 0)
			break;
	}
	assert_true(f < nf);
	assert_int_equal(fv.type, MT_HISTOGRAM);
	assert_int_equal(fv.nsamples, 1);
	struct metric_sample_view sv;
	assert_int_equal(metrics_sample_at(m, f, 0, &sv), 0);
	assert_int_equal(sv.npairs, 1);
	assert_string_equal(sv.labels[0], "process");
	assert_string_equal(sv.labels[1], LABEL);
	assert_int_equal(sv.nbuckets, 30);
	assert_true(sv.nbuckets <= 64);
	/* log2 buckets from 1.024 us to 2^39 ns, doubling, cumulative counts */
	assert_true(fabs(sv.upper[0] - 1.024e-6) < 1e-15);
	for (size_t i = 1; i < sv.nbuckets; i++) {
		assert_true(fabs(sv.upper[i] - 2 * sv.upper[i - 1]) <= 1e-12 * sv.upper[i]);
		if (sv.cumulative[i] < sv.cumulative[i - 1])
			fail_msg("%s: bucket %zu count %llu < previous %llu", name, i,
				 (unsigned long long)sv.cumulative[i], (unsigned long long)sv.cumulative[i - 1]);
	}
	assert_true(sv.cumulative[sv.nbuckets - 1] <= sv.count);
	assert_true((double)sv.count == c);
	assert_true(sv.sum >= 0);
	if (sv.count == 0)
		assert_true(sv.sum == 0);
	h.count = sv.count;
	h.sum = sv.sum;
	h.nbuckets = sv.nbuckets;
	memcpy(h.upper, sv.upper, sv.nbuckets * sizeof(double));
	memcpy(h.cum, sv.cumulative, sv.nbuckets * sizeof(uint64_t));
	return h;
}

/* Count of samples <= le seconds (le must be a bucket bound). */
static uint64_t count_le(const struct hist *h, double le)
{
	for (size_t i = 0; i < h->nbuckets; i++)
		if (fabs(h->upper[i] - le) <= 1e-12 * le)
			return h->cum[i];
	fail_msg("no bucket le=%g", le);
	return 0;
}

static double value_of(const struct metrics *m, const char *name, const char *k, const char *v)
{
	double x = NAN;
	int err = k ? metrics_lookup(m, name, &x, k, v, NULL) : metrics_lookup(m, name, &x, NULL);
	if (err)
		fail_msg("no sample %s{%s=%s}: %d", name, k ? k : "", v ? v : "", err);
	return x;
}

/* ---- tests ---- */

/* A tracked child's 200 sleeps show up as off-CPU time of about 1 ms each,
 * its wakeups as run-queue latency; nothing is dropped. */
static void test_tracked_child_counts(void **state)
{
	struct schedlat *s = open_or_skip(state);
	struct child c;
	int iters = SLEEPS;

	start_child(&c, 1, &iters, 1);
	assert_int_equal(schedlat_add_target(s, c.pid), 0);
	assert_int_equal(schedlat_add_target(s, c.pid), 0);   /* again: no-op */
	child_phase(&c);
	child_reap(&c);

	struct metrics *m = collect(s);
	struct hist off = get_hist(m, OFFCPU), rq = get_hist(m, RUNQ);
	print_message("off-CPU: %llu samples, %.6f s; run queue: %llu samples, %.6f s\n",
		      (unsigned long long)off.count, off.sum, (unsigned long long)rq.count, rq.sum);
	assert_true(off.count >= 150);
	assert_true(rq.count >= 1);
	/* 1 ms sleeps: most off-CPU samples are above 2^19 ns (0.52 ms), and the
	 * exact sum is at least 1 ms per such sample. */
	uint64_t short_ones = count_le(&off, 524288e-9);
	assert_true(short_ones <= off.count / 4);
	assert_true(off.sum >= (double)(off.count - short_ones) * 1e-3 * 0.99);
	assert_true(off.sum < (double)off.count * 1.0);   /* no interval of a second */
	assert_true(rq.sum < (double)rq.count * 0.1);
	assert_true(value_of(m, "oneshield_agent_bpf_schedlat_drops_total", NULL, NULL) == 0);

	/* the exited thread's start entry is gone */
	int n = schedlat_start_entries(s);
	if (n != -EOPNOTSUPP)
		assert_int_equal(n, 0);
	metrics_free(m);
	schedlat_close(s);
}

/* Threads other than the leader are tracked by their tgid, and each one's
 * start entry goes away when it exits. */
static void test_threads(void **state)
{
	struct schedlat *s = open_or_skip(state);
	struct child c;
	int iters = 100;

	start_child(&c, 1, &iters, 3);
	assert_int_equal(schedlat_add_target(s, c.pid), 0);
	child_phase(&c);
	child_reap(&c);

	struct metrics *m = collect(s);
	struct hist off = get_hist(m, OFFCPU);
	print_message("3 threads x 100 sleeps: %llu off-CPU samples\n", (unsigned long long)off.count);
	assert_true(off.count >= 3 * 100 * 3 / 4);
	int n = schedlat_start_entries(s);
	if (n != -EOPNOTSUPP)
		assert_int_equal(n, 0);
	metrics_free(m);
	schedlat_close(s);
}

/* An untracked process produces nothing, while a tracked one sits idle. */
static void test_untracked_child_not_counted(void **state)
{
	struct schedlat *s = open_or_skip(state);
	struct child idle, busy;
	int iters = SLEEPS;

	start_child(&idle, 1, &iters, 1);   /* blocked in read() until reaped */
	start_child(&busy, 1, &iters, 1);
	wait_blocked(idle.pid);   /* else its way into read() is tracked running */
	assert_int_equal(schedlat_add_target(s, idle.pid), 0);

	struct metrics *m1 = collect(s);
	struct hist off1 = get_hist(m1, OFFCPU), rq1 = get_hist(m1, RUNQ);
	child_phase(&busy);
	child_reap(&busy);
	struct metrics *m2 = collect(s);
	struct hist off2 = get_hist(m2, OFFCPU), rq2 = get_hist(m2, RUNQ);
	assert_int_equal(off2.count, off1.count);
	assert_int_equal(rq2.count, rq1.count);
	assert_true(off2.sum == off1.sum);
	assert_int_equal(off2.count, 0);
	assert_int_equal(rq2.count, 0);

	close(idle.go_w);   /* EOF: the idle child exits */
	close(idle.done_r);
	int st;
	assert_int_equal(waitpid(idle.pid, &st, 0), idle.pid);
	metrics_free(m1);
	metrics_free(m2);
	schedlat_close(s);
}

/* After remove_target nothing more is counted, including the interval that
 * was in flight (the child was blocked when it was removed). */
static void test_remove_target_stops_counting(void **state)
{
	struct schedlat *s = open_or_skip(state);
	struct child c;
	const int iters[2] = { 50, 50 };

	start_child(&c, 2, iters, 1);
	assert_int_equal(schedlat_add_target(s, c.pid), 0);
	child_phase(&c);   /* phase 1 tracked; the child then blocks on the pipe */
	assert_int_equal(schedlat_remove_target(s, c.pid), 0);
	assert_int_equal(schedlat_remove_target(s, c.pid), -ENOENT);
	int n = schedlat_start_entries(s);
	if (n != -EOPNOTSUPP)
		assert_int_equal(n, 0);   /* the blocked thread's entry was swept */

	struct metrics *m1 = collect(s);
	struct hist off1 = get_hist(m1, OFFCPU), rq1 = get_hist(m1, RUNQ);
	assert_true(off1.count >= 40);
	child_phase(&c);   /* phase 2 untracked */
	child_reap(&c);
	struct metrics *m2 = collect(s);
	struct hist off2 = get_hist(m2, OFFCPU), rq2 = get_hist(m2, RUNQ);
	assert_int_equal(off2.count, off1.count);
	assert_int_equal(rq2.count, rq1.count);
	assert_int_equal(schedlat_add_target(s, 0), -EINVAL);
	assert_int_equal(schedlat_remove_target(s, -1), -EINVAL);
	metrics_free(m1);
	metrics_free(m2);
	schedlat_close(s);
}

/* Self-cost: with BPF run-time stats on (scoped to an fd the test holds, as
 * an operator's sysctl would), the loaded programs report runs and time. */
static void test_self_cost(void **state)
{
	struct schedlat *s = open_or_skip(state);
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats_fd < 0)
		print_message("bpf_enable_stats: %s; checking presence only\n", strerror(errno));
	struct child c;
	int iters = 20;
	start_child(&c, 1, &iters, 1);
	assert_int_equal(schedlat_add_target(s, c.pid), 0);
	child_phase(&c);
	child_reap(&c);

	struct metrics *m = collect(s);
	bool raw = strncmp(schedlat_mode(s), "raw_tp", 6) == 0;
	const char *progs[] = { "schedlat_switch", "schedlat_wakeup", "schedlat_wakeup_new" };
	for (size_t i = 0; i < 3; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s_%s", progs[i], raw ? "raw" : "btf");
		double runs = value_of(m, "oneshield_agent_bpf_prog_runs_total", "prog", name);
		double secs = value_of(m, "oneshield_agent_bpf_prog_run_seconds_total", "prog", name);
		value_of(m, "oneshield_agent_bpf_prog_recursion_misses_total", "prog", name);
		print_message("%s: %.0f runs, %.0f ns/run\n", name, runs, runs > 0 ? secs * 1e9 / runs : 0.0);
		if (stats_fd >= 0 && strcmp(progs[i], "schedlat_wakeup_new") != 0) {
			assert_true(runs > 0);
			assert_true(secs > 0);
		}
		/* the other variant is not loaded, so it reports nothing */
		snprintf(name, sizeof(name), "%s_%s", progs[i], raw ? "btf" : "raw");
		double x;
		assert_int_equal(metrics_lookup(m, "oneshield_agent_bpf_prog_runs_total", &x, "prog", name, NULL),
				 -ENOENT);
	}
	if (stats_fd >= 0)
		close(stats_fd);
	metrics_free(m);
	schedlat_close(s);
}

/* Our programs, by id: those named schedlat_* that are not in before[]. */
static size_t our_prog_ids(const uint32_t *before, size_t nbefore, uint32_t *out, size_t max)
{
	uint32_t id = 0;
	size_t n = 0;
	while (bpf_prog_get_next_id(id, &id) == 0) {
		bool old = false;
		for (size_t i = 0; i < nbefore; i++)
			old |= before[i] == id;
		if (old)
			continue;
		int fd = bpf_prog_get_fd_by_id(id);
		if (fd < 0)
			continue;
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && strncmp(info.name, "schedlat_", 9) == 0 &&
		    n < max)
			out[n++] = id;
		close(fd);
	}
	return n;
}

/* close detaches: the programs disappear from the kernel. */
static void test_close_detaches(void **state)
{
	uint32_t before[4096], ours[16];
	size_t nbefore = 0;
	uint32_t id = 0;
	while (nbefore < 4096 && bpf_prog_get_next_id(id, &id) == 0)
		before[nbefore++] = id;

	struct schedlat *s = open_or_skip(state);
	size_t n = our_prog_ids(before, nbefore, ours, 16);
	assert_int_equal(n, 3);
	schedlat_close(s);
	schedlat_close(NULL);

	bpftest_wait_unloaded(ours, n, "schedlat");
}

static void test_forced_variant_errors(void **state)
{
	(void)state;
	struct schedlat *s = (struct schedlat *)&s;
	char why[128];
	assert_int_equal(schedlat_open_variant(&s, (enum schedlat_variant)99, why, sizeof(why)), -EINVAL);
	assert_null(s);
	assert_string_equal(why, "unknown schedlat variant 99");
	assert_string_equal(schedlat_mode(NULL), "off");
}


int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "--workload") == 0)
		return workload_main(argc, argv);
	if (bpftest_self_exe())
		return 1;

	const struct CMUnitTest tests[] = {
		PER_VARIANT(test_tracked_child_counts),
		PER_VARIANT(test_threads),
		PER_VARIANT(test_untracked_child_not_counted),
		PER_VARIANT(test_remove_target_stops_counting),
		PER_VARIANT(test_self_cost),
		BPFTEST_WITH(test_close_detaches, &v_auto),
		cmocka_unit_test(test_forced_variant_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
