/* Tests for sysprobe.c against the running kernel (root with BTF, as in CI)
 * plus the pure parts (percentiles, names).
 *
 * The workload is a fresh image of this binary (--workload ...) that makes
 * an exact number of known syscalls per phase: getppid() (success), close(-1)
 * (EBADF), syscall(500) (unassigned: ENOSYS, named "syscall_500") and
 * syscall(1000) (beyond the table: "other"). It synchronises with the parent
 * through two pipes, so the parent attaches and detaches only while the
 * child is between phases: the counts are exact, with no sleeps and no
 * timing thresholds. The pipe syscalls are counted too, but not exactly
 * (the child's 'd' write may return after the parent detached), which is
 * why the assertions are on getppid/close/... only.
 *
 * Following forks: a second workload (--forker) forks, on each command, a
 * child that at once makes K getppid() (no add_target for it: only the
 * kernel can have made it a target), reports its pid and, at the chosen
 * depth, waits for a release byte before exiting (so the test can look at
 * its bit while it lives); at a lower depth it forks the next generation
 * and waits for it. After the forker's 'd' (it reaped the child, whose
 * sched_process_exit ran before its parent could reap it) the bits of the
 * dead generation must be clear. Again no sleeps: pipes only.
 *
 * Each counting test runs once per variant (auto, tp_btf+task storage,
 * tp_btf+hash, raw_tp+hash); a forced variant this kernel lacks is skipped,
 * while a failing sysprobe_open() fails the test unless
 * ONESHIELD_ALLOW_NO_BPF=1 (which also lets the fork tests skip on a kernel
 * where the fork/exit programs do not load). Some run again with
 * SYSPROBE_NO_FOLLOW (the fallback: no fork/exit programs, bitmap kept with
 * map syscalls). Every test opens its own instance (fresh maps), so an
 * agent or other tests running on the host do not disturb the counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <cjson/cJSON.h>

#include "bpftest.h"
#include "metrics.h"
#include "sysprobe.h"   /* include/sysprobe.h, which includes the API */

static enum sysprobe_variant v_auto = SYSPROBE_AUTO;
static enum sysprobe_variant v_ts = SYSPROBE_TP_BTF_TASK_STORAGE;
static enum sysprobe_variant v_btf_hash = SYSPROBE_TP_BTF_HASH;
static enum sysprobe_variant v_raw = SYSPROBE_RAW_TP_HASH;
static enum sysprobe_variant v_nofollow = (enum sysprobe_variant)(SYSPROBE_AUTO | SYSPROBE_NO_FOLLOW);

#define K_GETPPID 1000
#define K_CLOSE   100
#define K_NR500   7
#define K_NR1000  5
#define K_FORK    300   /* getppid() of each forked child, as in the e2e test */

static struct sysprobe *open_or_skip(void **state)
{
	enum sysprobe_variant v = state && *state ? *(enum sysprobe_variant *)*state : SYSPROBE_AUTO;
	struct sysprobe *s = NULL;
	char why[512];
	int err = sysprobe_open_variant(&s, v, why, sizeof(why));
	if (err)
		bpftest_open_failed("sysprobe_open", (int)v, v != SYSPROBE_AUTO, err, why);
	assert_non_null(s);
	assert_string_equal(why, sysprobe_mode(s));
	assert_false(sysprobe_attached(s));
	if ((unsigned int)v & SYSPROBE_NO_FOLLOW)
		assert_false(sysprobe_follows_forks(s));
	return s;
}

/* The fork tests need the fork/exit programs: on this kernel they load. */
static void require_follow(struct sysprobe *s)
{
	if (sysprobe_follows_forks(s))
		return;
	const char *allow = getenv("ONESHIELD_ALLOW_NO_BPF");
	print_message("%s: the fork/exit programs are not loaded\n", sysprobe_mode(s));
	if (allow && strcmp(allow, "1") == 0) {
		sysprobe_close(s);
		skip();
	}
	fail_msg("sysprobe does not follow forks on this kernel");
}

/* Programs loaded: sys_enter, sys_exit, and fork + process exit. */
static size_t nprogs(const struct sysprobe *s)
{
	return sysprobe_follows_forks(s) ? 4 : 2;
}

static int bit(const struct sysprobe *s, pid_t tgid)
{
	int b = sysprobe_is_target_bit(s, tgid);
	assert_true(b == 0 || b == 1);
	return b;
}

/* ---- workload ---- */

struct work {
	long getppid, close_fail, nr500, nr1000;
};

static void *getppid_loop(void *arg)
{
	long n = *(long *)arg;
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	return NULL;
}

/* argv: --workload THREADS GETPPID CLOSE NR500 NR1000; go pipe on fd 3,
 * done pipe on fd 4. Says 'r' once started, then runs one phase per byte
 * read from fd 3 and answers 'd'; exits at EOF. Every thread does GETPPID
 * getppid(); the main thread also the failing ones. A fresh image rather
 * than a forked copy: valgrind does not follow it, and under valgrind a
 * forked child's close(-1) would never reach the kernel. */
static int workload_main(int argc, char **argv)
{
	if (argc != 7)
		return 5;
	int threads = atoi(argv[2]);
	struct work w = { atol(argv[3]), atol(argv[4]), atol(argv[5]), atol(argv[6]) };
	if (threads < 1 || threads > 8)
		return 5;
	if (write(4, "r", 1) != 1)
		return 4;
	for (;;) {
		char b;
		ssize_t r = read(3, &b, 1);
		if (r == 0)
			return 0;
		if (r != 1)
			return 2;
		pthread_t th[8];
		for (int t = 1; t < threads; t++)
			if (pthread_create(&th[t], NULL, getppid_loop, &w.getppid) != 0)
				return 3;
		getppid_loop(&w.getppid);
		for (long i = 0; i < w.close_fail; i++)
			if (close(-1) != -1 || errno != EBADF)
				return 6;
		for (long i = 0; i < w.nr500; i++)
			syscall(500);
		for (long i = 0; i < w.nr1000; i++)
			syscall(1000);
		for (int t = 1; t < threads; t++)
			pthread_join(th[t], NULL);
		if (write(4, "d", 1) != 1)
			return 4;
	}
}

/* --forker records on fd 4: 'r' once started, 'c' + pid from each forked
 * generation once its getppid()s are done, 'd' + the child's pid once the
 * child is reaped. One write each (atomic on a pipe). */
struct rec {
	char tag;
	char pad[3];
	int32_t pid;
};

static void send_rec(char tag, pid_t pid)
{
	struct rec r = { tag, { 0 }, pid };
	if (write(4, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(4);
}

/* Generation 1 of depth, in a new process: never returns. Each generation
 * makes its getppid()s, reports, then forks the next one and reaps it; the
 * last waits for the release byte. */
static void forker_gen(int depth, long k)
{
	for (int gen = 1;; gen++) {
		for (long i = 0; i < k; i++)
			syscall(SYS_getppid);
		send_rec('c', getpid());
		if (gen == depth) {
			char b;
			if (read(3, &b, 1) != 1)   /* the others wait in waitpid */
				_exit(2);
			_exit(0);
		}
		pid_t p = fork();
		if (p < 0)
			_exit(3);
		if (p == 0)
			continue;   /* the next generation */
		int st;
		if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			_exit(8);
		_exit(0);
	}
}

/* argv: --forker DEPTH K; go pipe on fd 3, done pipe on fd 4. Per byte read
 * from fd 3: fork generation 1 (which forks 2, ... up to DEPTH), reap it,
 * say 'd'. Makes no getppid() itself. Exits at EOF. */
static int forker_main(int argc, char **argv)
{
	if (argc != 4)
		return 5;
	int depth = atoi(argv[2]);
	long k = atol(argv[3]);
	if (depth < 1 || depth > 8 || k < 0)
		return 5;
	send_rec('r', getpid());
	for (;;) {
		char b;
		ssize_t r = read(3, &b, 1);
		if (r == 0)
			return 0;
		if (r != 1)
			return 2;
		pid_t p = fork();
		if (p < 0)
			return 3;
		if (p == 0)
			forker_gen(depth, k);
		int st;
		if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return 8;
		send_rec('d', p);
	}
}

/* Starts the workload and waits for its 'r': its startup syscalls are over. */
static void start_child(struct child *c, int threads, const struct work *w)
{
	char a[5][24];
	char *argv[] = { "test_sysprobe", "--workload", a[0], a[1], a[2], a[3], a[4], NULL };
	snprintf(a[0], sizeof(a[0]), "%d", threads);
	snprintf(a[1], sizeof(a[1]), "%ld", w->getppid);
	snprintf(a[2], sizeof(a[2]), "%ld", w->close_fail);
	snprintf(a[3], sizeof(a[3]), "%ld", w->nr500);
	snprintf(a[4], sizeof(a[4]), "%ld", w->nr1000);
	child_spawn(c, argv);
	char b;
	assert_int_equal(read(c->done_r, &b, 1), 1);
	assert_int_equal(b, 'r');
}

/* The forker, as a fresh image; waits for its 'r'. */
static void start_forker(struct child *c, int depth, long k)
{
	char a[2][24];
	char *argv[] = { "test_sysprobe", "--forker", a[0], a[1], NULL };
	snprintf(a[0], sizeof(a[0]), "%d", depth);
	snprintf(a[1], sizeof(a[1]), "%ld", k);
	child_spawn(c, argv);
	struct rec r;
	assert_int_equal(read(c->done_r, &r, sizeof(r)), sizeof(r));
	assert_int_equal(r.tag, 'r');
	assert_int_equal(r.pid, c->pid);
}

static pid_t read_rec(struct child *c, char tag)
{
	struct rec r;
	assert_int_equal(read(c->done_r, &r, sizeof(r)), sizeof(r));
	assert_int_equal(r.tag, tag);
	assert_true(r.pid > 0);
	return r.pid;
}

/* One command: the forker forks; pids[0..depth-1] get the generations,
 * all of which have made their getppid()s; the last one waits. */
static void forker_fork(struct child *c, int depth, pid_t *pids)
{
	assert_int_equal(write(c->go_w, "g", 1), 1);
	for (int i = 0; i < depth; i++)
		pids[i] = read_rec(c, 'c');
}

/* Release the last generation; returns once the forker reaped the first
 * (so every generation has exited). */
static void forker_release(struct child *c, pid_t first)
{
	assert_int_equal(write(c->go_w, "x", 1), 1);
	assert_int_equal(read_rec(c, 'd'), first);
}

static void child_phase(struct child *c)
{
	char b;
	assert_int_equal(write(c->go_w, "g", 1), 1);
	assert_int_equal(read(c->done_r, &b, 1), 1);
	assert_int_equal(b, 'd');
}

/* ---- results ---- */

struct res {
	struct sysprobe_result *r;
	size_t n;
};

static struct res read_res(struct sysprobe *s)
{
	struct res x;
	assert_int_equal(sysprobe_read(s, &x.r, &x.n), 0);
	/* sorted by count, descending; each well formed */
	for (size_t i = 0; i < x.n; i++) {
		const struct sysprobe_result *e = &x.r[i];
		uint64_t sum = 0;
		for (int k = 0; k < SYSPROBE_SLOTS; k++)
			sum += e->slots[k];
		assert_true(e->count > 0);
		assert_int_equal(sum, e->count);
		assert_true(e->errors <= e->count);
		assert_true(e->p50_ns <= e->p90_ns && e->p90_ns <= e->p99_ns);
		if (i > 0)
			assert_true(x.r[i - 1].count >= e->count);
	}
	return x;
}

static const struct sysprobe_result *find(const struct res *x, const char *name)
{
	for (size_t i = 0; i < x->n; i++)
		if (strcmp(x->r[i].name, name) == 0)
			return &x->r[i];
	return NULL;
}

static uint64_t count_of(const struct res *x, const char *name)
{
	const struct sysprobe_result *e = find(x, name);
	return e ? e->count : 0;
}

static void print_res(const struct res *x)
{
	for (size_t i = 0; i < x->n; i++)
		print_message("  %-16s nr %4d count %6llu errors %6llu p50 %.0f ns p99 %.0f ns\n", x->r[i].name,
			      x->r[i].nr, (unsigned long long)x->r[i].count, (unsigned long long)x->r[i].errors,
			      x->r[i].p50_ns, x->r[i].p99_ns);
}

static void assert_no_drops(struct sysprobe *s, uint64_t nr_out_of_range)
{
	struct sysprobe_drops d;
	assert_int_equal(sysprobe_drops(s, &d), 0);
	assert_int_equal(d.no_start, 0);
	assert_int_equal(d.nr_out_of_range, nr_out_of_range);
}

/* Links in the kernel pointing at any of ids: the test's own scan, beside
 * sysprobe_kernel_links(). */
static int links_to(const uint32_t *ids, size_t nids)
{
	uint32_t id = 0;
	int n = 0;
	while (bpf_link_get_next_id(id, &id) == 0) {
		int fd = bpf_link_get_fd_by_id(id);
		if (fd < 0)
			continue;
		struct bpf_link_info info;
		uint32_t len = sizeof(info);
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			for (size_t i = 0; i < nids; i++)
				n += info.prog_id == ids[i];
		close(fd);
	}
	return n;
}

static size_t prog_ids(struct sysprobe *s, uint32_t *ids)
{
	struct bpfload_prog_stat ps[4];
	int n = sysprobe_prog_stats(s, ps, 4);
	assert_int_equal(n, nprogs(s));
	for (int i = 0; i < n; i++)
		ids[i] = ps[i].id;
	return (size_t)n;
}

/* ---- tests ---- */

/* The exact counts of a target's known syscalls, with their errors. */
static void test_counts(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	struct child c;
	struct work w = { K_GETPPID, K_CLOSE, K_NR500, K_NR1000 };

	start_child(&c, 1, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);   /* again: no-op */
	assert_int_equal(sysprobe_target_count(s), 1);
	assert_int_equal(sysprobe_attach(s), 0);
	assert_true(sysprobe_attached(s));
	child_phase(&c);
	assert_int_equal(sysprobe_detach(s), 0);

	struct res x = read_res(s);
	print_message("%s:\n", sysprobe_mode(s));
	print_res(&x);
	const struct sysprobe_result *e = find(&x, "getppid");
	assert_non_null(e);
	assert_int_equal(e->nr, SYS_getppid);
	assert_int_equal(e->count, K_GETPPID);
	assert_int_equal(e->errors, 0);
	assert_true(e->sum_ns > 0);
	assert_true(e->p50_ns > 0);
	e = find(&x, "close");
	assert_non_null(e);
	assert_int_equal(e->nr, SYS_close);
	assert_int_equal(e->count, K_CLOSE);
	assert_int_equal(e->errors, K_CLOSE);
	e = find(&x, "syscall_500");
	assert_non_null(e);
	assert_int_equal(e->nr, 500);
	assert_int_equal(e->count, K_NR500);
	assert_int_equal(e->errors, K_NR500);
	e = find(&x, "other");
	assert_non_null(e);
	assert_int_equal(e->nr, -1);
	assert_int_equal(e->count, K_NR1000);
	assert_int_equal(e->errors, K_NR1000);
	assert_string_equal(x.r[0].name, "getppid");   /* the most frequent */
	assert_no_drops(s, K_NR1000);
	sysprobe_results_free(x.r);

	child_reap(&c);
	sysprobe_close(s);
}

/* Threads are counted by their tgid. A thread's creation is a fork event
 * and its exit an exit event, neither of which changes the group's bit: the
 * threads of a second phase are counted as well. */
static void test_threads(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	struct child c;
	struct work w = { 500, 0, 0, 0 };

	start_child(&c, 4, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	child_phase(&c);
	assert_int_equal(bit(s, c.pid), 1);   /* 3 threads came and went */
	child_phase(&c);
	assert_int_equal(bit(s, c.pid), 1);
	assert_int_equal(sysprobe_target_count(s), 1);
	assert_int_equal(sysprobe_detach(s), 0);
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), 2 * 4 * 500);
	assert_no_drops(s, 0);
	sysprobe_results_free(x.r);
	child_reap(&c);
	sysprobe_close(s);
}

/* A process that is not a target adds nothing (nor does this test process). */
static void test_non_target(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	struct child tgt, other;
	struct work mine = { K_GETPPID, 0, 0, 0 };
	struct work busy = { K_GETPPID, K_CLOSE, K_NR500, K_NR1000 };

	start_child(&tgt, 1, &mine);
	start_child(&other, 2, &busy);
	assert_int_equal(sysprobe_add_target(s, tgt.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	child_phase(&other);
	child_phase(&tgt);
	for (int i = 0; i < 10; i++) {
		syscall(SYS_getppid);
		close(-1);
	}
	assert_int_equal(sysprobe_detach(s), 0);

	struct res x = read_res(s);
	print_res(&x);
	assert_int_equal(count_of(&x, "getppid"), K_GETPPID);   /* the target's only */
	assert_null(find(&x, "close"));
	assert_null(find(&x, "syscall_500"));
	assert_null(find(&x, "other"));
	assert_no_drops(s, 0);
	sysprobe_results_free(x.r);
	child_reap(&tgt);
	child_reap(&other);
	sysprobe_close(s);
}

/* Detach stops counting and removes the attach points; a new attach starts
 * from zero. The check that the attach points are gone: no BPF link in the
 * kernel (scanned by id) refers to one of our programs, which are still
 * loaded. */
static void test_detach_reattach(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	struct child c;
	struct work w = { K_GETPPID, K_CLOSE, 0, 0 };
	uint32_t ids[4];
	size_t nids = prog_ids(s, ids);

	assert_int_equal(sysprobe_kernel_links(s), 0);   /* loaded, not attached */
	assert_int_equal(links_to(ids, nids), 0);
	assert_int_equal(sysprobe_detach(s), 0);          /* not attached: no-op */

	start_child(&c, 1, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	assert_int_equal(sysprobe_attach(s), -EALREADY);
	assert_int_equal(sysprobe_kernel_links(s), (int)nids);
	assert_int_equal(links_to(ids, nids), (int)nids);
	child_phase(&c);
	assert_int_equal(sysprobe_detach(s), 0);
	assert_false(sysprobe_attached(s));
	assert_int_equal(sysprobe_kernel_links(s), 0);
	assert_int_equal(links_to(ids, nids), 0);
	assert_int_equal(prog_ids(s, ids), nids);   /* still loaded */

	child_phase(&c);   /* detached: not counted */
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), K_GETPPID);
	assert_int_equal(count_of(&x, "close"), K_CLOSE);
	sysprobe_results_free(x.r);
	assert_int_equal(sysprobe_detach(s), 0);   /* again: no-op */

	/* re-attach: zeroed. The child is blocked in read(), entered before the
	 * attach: it is not counted when it returns. */
	assert_int_equal(sysprobe_attach(s), 0);
	x = read_res(s);
	assert_int_equal(x.n, 0);
	assert_null(x.r);
	child_phase(&c);
	assert_int_equal(sysprobe_detach(s), 0);
	sysprobe_results_free(x.r);
	x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), K_GETPPID);
	assert_int_equal(count_of(&x, "close"), K_CLOSE);
	assert_int_equal(count_of(&x, "read"), 0);   /* the read in flight at attach */
	assert_no_drops(s, 0);
	sysprobe_results_free(x.r);

	child_reap(&c);
	sysprobe_close(s);
}

/* After remove_target its syscalls are no longer counted. */
static void test_remove_target(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	struct child c;
	struct work w = { K_GETPPID, 0, 0, 0 };

	start_child(&c, 1, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	child_phase(&c);
	assert_int_equal(sysprobe_remove_target(s, c.pid), 0);
	assert_int_equal(sysprobe_remove_target(s, c.pid), -ENOENT);
	assert_int_equal(sysprobe_target_count(s), 0);
	child_phase(&c);
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), K_GETPPID);
	sysprobe_results_free(x.r);
	assert_int_equal(sysprobe_detach(s), 0);
	child_reap(&c);
	sysprobe_close(s);
}

/* Prometheus families and the REST JSON of a real investigation. */
static void test_collect_and_json(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	struct child c;
	struct work w = { K_GETPPID, K_CLOSE, 0, K_NR1000 };

	start_child(&c, 1, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	child_phase(&c);
	assert_int_equal(sysprobe_detach(s), 0);
	child_reap(&c);

	struct metrics *m = metrics_new();
	assert_non_null(m);
	assert_int_equal(sysprobe_collect(s, m), 0);
	double v = -1;
	assert_int_equal(metrics_lookup(m, "onepanel_syscall_latency_seconds", &v, "syscall", "getppid", NULL), 0);
	assert_true(v == K_GETPPID);   /* a histogram's value is its count */
	assert_int_equal(metrics_lookup(m, "onepanel_syscall_errors_total", &v, "syscall", "close", NULL), 0);
	assert_true(v == K_CLOSE);
	assert_int_equal(metrics_lookup(m, "onepanel_syscall_errors_total", &v, "syscall", "getppid", NULL), 0);
	assert_true(v == 0);
	assert_int_equal(metrics_lookup(m, "onepanel_syscall_errors_total", &v, "syscall", "other", NULL), 0);
	assert_true(v == K_NR1000);
	assert_int_equal(metrics_lookup(m, "onepanel_syscall_latency_seconds", &v, "syscall", "getpid", NULL),
			 -ENOENT);   /* only syscalls seen */
	assert_int_equal(
		metrics_lookup(m, "oneshield_agent_bpf_sysprobe_drops_total", &v, "reason", "no_start", NULL), 0);
	assert_true(v == 0);
	assert_int_equal(metrics_lookup(m, "oneshield_agent_bpf_sysprobe_drops_total", &v, "reason",
					"nr_out_of_range", NULL),
			 0);
	assert_true(v == K_NR1000);
	bool raw = strncmp(sysprobe_mode(s), "raw_tp", 6) == 0;
	assert_int_equal(metrics_lookup(m, "oneshield_agent_bpf_prog_recursion_misses_total", &v, "prog",
					raw ? "sysprobe_enter_raw" : "sysprobe_enter_btf", NULL),
			 0);

	/* the histogram: 32 doubling buckets from 256 ns, cumulative */
	size_t nf = metrics_family_count(m), f;
	struct metric_family_view fv;
	for (f = 0; f < nf; f++) {
		assert_int_equal(metrics_family_at(m, f, &fv), 0);
		if (strcmp(fv.name, "onepanel_syscall_latency_seconds") == 0)
			break;
	}
	assert_true(f < nf);
	assert_int_equal(fv.type, MT_HISTOGRAM);
	for (size_t i = 0; i < fv.nsamples; i++) {
		struct metric_sample_view sv;
		assert_int_equal(metrics_sample_at(m, f, i, &sv), 0);
		assert_int_equal(sv.npairs, 1);
		assert_string_equal(sv.labels[0], "syscall");
		assert_int_equal(sv.nbuckets, 32);
		assert_true(fabs(sv.upper[0] - 256e-9) < 1e-18);
		for (size_t b = 1; b < sv.nbuckets; b++) {
			assert_true(fabs(sv.upper[b] - 2 * sv.upper[b - 1]) <= 1e-12 * sv.upper[b]);
			assert_true(sv.cumulative[b] >= sv.cumulative[b - 1]);
		}
		assert_true(sv.cumulative[sv.nbuckets - 1] <= sv.count);
		assert_true(sv.sum > 0);
	}
	metrics_free(m);

	int err = 1;
	cJSON *j = sysprobe_to_json(s, &err);
	assert_non_null(j);
	assert_int_equal(err, 0);
	char *txt = cJSON_PrintUnformatted(j);
	print_message("%.300s...\n", txt);
	free(txt);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "attached")));
	assert_true(cJSON_GetObjectItem(j, "drops")->valuedouble == K_NR1000);
	cJSON *dr = cJSON_GetObjectItem(j, "drops_by_reason");
	assert_true(cJSON_GetObjectItem(dr, "no_start")->valuedouble == 0);
	assert_true(cJSON_GetObjectItem(dr, "nr_out_of_range")->valuedouble == K_NR1000);
	cJSON *a = cJSON_GetObjectItem(j, "syscalls");
	assert_true(cJSON_IsArray(a));
	assert_true(cJSON_GetArraySize(a) >= 4);
	double prev = INFINITY;
	bool seen_getppid = false;
	cJSON *e;
	cJSON_ArrayForEach(e, a) {
		double cnt = cJSON_GetObjectItem(e, "count")->valuedouble;
		assert_true(cnt <= prev);
		prev = cnt;
		assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "name")));
		assert_true(cJSON_IsNumber(cJSON_GetObjectItem(e, "nr")));
		assert_true(cJSON_IsNumber(cJSON_GetObjectItem(e, "errors")));
		assert_true(cJSON_IsNumber(cJSON_GetObjectItem(e, "sum_us")));
		double p50 = cJSON_GetObjectItem(e, "p50_us")->valuedouble;
		double p90 = cJSON_GetObjectItem(e, "p90_us")->valuedouble;
		double p99 = cJSON_GetObjectItem(e, "p99_us")->valuedouble;
		assert_true(p50 <= p90 && p90 <= p99);
		double bsum = 0, le_prev = 0;
		cJSON *b;
		cJSON_ArrayForEach(b, cJSON_GetObjectItem(e, "buckets")) {
			cJSON *le = cJSON_GetObjectItem(b, "le_us");
			if (cJSON_IsNumber(le)) {
				assert_true(le->valuedouble > le_prev);
				le_prev = le->valuedouble;
			} else {
				assert_string_equal(le->valuestring, "+Inf");
			}
			bsum += cJSON_GetObjectItem(b, "count")->valuedouble;
		}
		assert_true(bsum == cnt);
		if (strcmp(cJSON_GetObjectItem(e, "name")->valuestring, "getppid") == 0) {
			seen_getppid = true;
			assert_true(cnt == K_GETPPID);
			assert_true(cJSON_GetObjectItem(e, "nr")->valuedouble == SYS_getppid);
		}
	}
	assert_true(seen_getppid);
	cJSON_Delete(j);
	sysprobe_close(s);
}

/* Self-cost: with BPF run-time stats on (scoped to an fd the test holds),
 * the programs report runs. */
static void test_prog_stats(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	struct child c;
	struct work w = { 100, 0, 0, 0 };
	start_child(&c, 1, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	child_phase(&c);
	assert_int_equal(sysprobe_detach(s), 0);
	child_reap(&c);

	struct bpfload_prog_stat ps[4];
	assert_int_equal(sysprobe_prog_stats(s, ps, 0), 0);
	int n = sysprobe_prog_stats(s, ps, 4);
	assert_int_equal(n, nprogs(s));
	for (int i = 0; i < n; i++) {
		bool on_syscalls = strstr(ps[i].name, "_enter_") || strstr(ps[i].name, "_exit_");
		print_message("%s (id %u): %llu runs, %llu ns, %llu recursion misses\n", ps[i].name, ps[i].id,
			      (unsigned long long)ps[i].run_cnt, (unsigned long long)ps[i].run_time_ns,
			      (unsigned long long)ps[i].recursion_misses);
		assert_true(strncmp(ps[i].name, "sysprobe_", 9) == 0);
		assert_true(ps[i].id > 0);
		if (stats_fd >= 0 && on_syscalls)
			assert_true(ps[i].run_cnt >= 100);   /* fork/pexit: whatever the host did */
	}
	if (stats_fd >= 0)
		close(stats_fd);
	sysprobe_close(s);
}

/* Close detaches and unloads. */
static void test_close_detaches(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	uint32_t ids[4];
	size_t n = prog_ids(s, ids);
	assert_int_equal(sysprobe_attach(s), 0);
	assert_int_equal(links_to(ids, n), (int)n);
	sysprobe_close(s);
	sysprobe_close(NULL);
	assert_int_equal(links_to(ids, n), 0);
	bpftest_wait_unloaded(ids, n, "sysprobe");
}

static void test_api_errors(void **state)
{
	(void)state;
	struct sysprobe *s = (struct sysprobe *)&s;
	char why[128];
	assert_int_equal(sysprobe_open_variant(&s, (enum sysprobe_variant)99, why, sizeof(why)), -EINVAL);
	assert_null(s);
	assert_string_equal(why, "unknown sysprobe variant 99");
	assert_string_equal(sysprobe_mode(NULL), "off");
	assert_false(sysprobe_attached(NULL));
	assert_int_equal(sysprobe_attach(NULL), -EINVAL);
	assert_int_equal(sysprobe_detach(NULL), -EINVAL);
	assert_int_equal(sysprobe_add_target(NULL, 1), -EINVAL);
	assert_int_equal(sysprobe_target_count(NULL), 0);
	assert_int_equal(sysprobe_is_target_bit(NULL, 1), -EINVAL);
	assert_false(sysprobe_follows_forks(NULL));
	s = (struct sysprobe *)&s;
	assert_int_equal(sysprobe_open_variant(&s, (enum sysprobe_variant)(99 | SYSPROBE_NO_FOLLOW), why, sizeof(why)),
			 -EINVAL);
	assert_null(s);
	assert_int_equal(sysprobe_open_variant(&s, (enum sysprobe_variant)0x200, why, sizeof(why)), -EINVAL);
	int err = 0;
	assert_null(sysprobe_to_json(NULL, &err));
	assert_int_equal(err, -EINVAL);
	sysprobe_results_free(NULL);
	sysprobe_close(NULL);
}

static void test_target_errors(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	assert_int_equal(sysprobe_add_target(s, 0), -EINVAL);
	assert_int_equal(sysprobe_add_target(s, -1), -EINVAL);
	assert_int_equal(sysprobe_add_target(s, 1 << 22), -EINVAL);
	assert_int_equal(sysprobe_remove_target(s, 0), -EINVAL);
	assert_int_equal(sysprobe_remove_target(s, 12345), -ENOENT);
	/* neighbours in one bitmap word are independent */
	assert_int_equal(sysprobe_add_target(s, 64), 0);
	assert_int_equal(sysprobe_add_target(s, 65), 0);
	assert_int_equal(sysprobe_target_count(s), 2);
	assert_int_equal(bit(s, 63), 0);
	assert_int_equal(bit(s, 64), 1);
	assert_int_equal(bit(s, 65), 1);
	assert_int_equal(sysprobe_is_target_bit(s, 0), -EINVAL);
	assert_int_equal(sysprobe_is_target_bit(s, 1 << 22), -EINVAL);
	assert_int_equal(sysprobe_remove_target(s, 64), 0);
	assert_int_equal(bit(s, 64), 0);
	assert_int_equal(bit(s, 65), 1);
	assert_int_equal(sysprobe_remove_target(s, 64), -ENOENT);
	assert_int_equal(sysprobe_remove_target(s, 65), 0);
	assert_int_equal(sysprobe_target_count(s), 0);
	/* never attached: empty results */
	struct res x = read_res(s);
	assert_int_equal(x.n, 0);
	sysprobe_close(s);
}

/* ---- following forks ---- */

/* A target's child runs K getppid() at once, with no add_target: all are
 * counted, its bit is set by the kernel (not counted as an added target)
 * and cleared at its exit; again for a second child. */
static void test_follow_fork(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	require_follow(s);
	struct child f;
	pid_t c1, c2;

	start_forker(&f, 1, K_FORK);
	assert_int_equal(sysprobe_add_target(s, f.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);

	forker_fork(&f, 1, &c1);
	assert_int_equal(bit(s, c1), 1);
	assert_int_equal(sysprobe_target_count(s), 1);
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), K_FORK);   /* all, before anyone could react */
	sysprobe_results_free(x.r);
	forker_release(&f, c1);
	assert_int_equal(bit(s, c1), 0);   /* its exit cleared it */
	assert_int_equal(bit(s, f.pid), 1);

	/* as the agent does: it adds the worker when it hears of it; the
	 * kernel still clears the bit at the exit, the list keeps the pid
	 * until it is removed */
	forker_fork(&f, 1, &c2);
	assert_true(c2 != c1);
	assert_int_equal(bit(s, c2), 1);
	assert_int_equal(sysprobe_add_target(s, c2), 0);
	assert_int_equal(sysprobe_target_count(s), 2);
	forker_release(&f, c2);
	assert_int_equal(bit(s, c2), 0);
	assert_int_equal(sysprobe_target_count(s), 2);
	assert_int_equal(sysprobe_remove_target(s, c2), 0);
	assert_int_equal(sysprobe_remove_target(s, c2), -ENOENT);
	assert_int_equal(sysprobe_target_count(s), 1);

	assert_int_equal(sysprobe_detach(s), 0);
	x = read_res(s);
	print_res(&x);
	assert_int_equal(count_of(&x, "getppid"), 2 * K_FORK);
	assert_no_drops(s, 0);
	sysprobe_results_free(x.r);
	child_reap(&f);
	sysprobe_close(s);
}

/* Grandchildren and their children too; every generation's bit is clear
 * once it exited. */
static void test_follow_grandchildren(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	require_follow(s);
	struct child f;
	pid_t g[3];

	start_forker(&f, 3, K_FORK);
	assert_int_equal(sysprobe_add_target(s, f.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	forker_fork(&f, 3, g);
	for (int i = 0; i < 3; i++)
		assert_int_equal(bit(s, g[i]), 1);
	forker_release(&f, g[0]);
	for (int i = 0; i < 3; i++)
		assert_int_equal(bit(s, g[i]), 0);
	assert_int_equal(sysprobe_target_count(s), 1);
	assert_int_equal(sysprobe_detach(s), 0);
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), 3 * K_FORK);
	assert_no_drops(s, 0);
	sysprobe_results_free(x.r);
	child_reap(&f);
	sysprobe_close(s);
}

/* A process forked by a process that is not a target is not traced, while
 * a target's syscalls are. */
static void test_follow_not_from_non_target(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	require_follow(s);
	struct child f, t;
	struct work w = { K_GETPPID, 0, 0, 0 };
	pid_t g[2];

	start_forker(&f, 2, K_FORK);
	start_child(&t, 1, &w);
	assert_int_equal(sysprobe_add_target(s, t.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	forker_fork(&f, 2, g);
	assert_int_equal(bit(s, f.pid), 0);
	assert_int_equal(bit(s, g[0]), 0);
	assert_int_equal(bit(s, g[1]), 0);
	forker_release(&f, g[0]);
	child_phase(&t);
	assert_int_equal(bit(s, t.pid), 1);
	assert_int_equal(sysprobe_detach(s), 0);
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), K_GETPPID);   /* the target's only */
	sysprobe_results_free(x.r);
	child_reap(&f);
	child_reap(&t);
	sysprobe_close(s);
}

/* At attach the bitmap is rebuilt from the added targets: a descendant the
 * kernel followed in the last investigation (still alive) is not a target
 * of the next one. remove_target also stops a followed descendant. */
static void test_follow_rebuilt_at_attach(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	require_follow(s);
	struct child f;
	pid_t c1, c2;

	start_forker(&f, 1, K_FORK);
	assert_int_equal(sysprobe_add_target(s, f.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	forker_fork(&f, 1, &c1);   /* it waits, alive */
	assert_int_equal(bit(s, c1), 1);
	assert_int_equal(sysprobe_detach(s), 0);
	assert_int_equal(bit(s, c1), 1);   /* detached: nothing changes it... */
	assert_int_equal(sysprobe_attach(s), 0);
	assert_int_equal(bit(s, c1), 0);   /* ...until the next attach */
	assert_int_equal(bit(s, f.pid), 1);
	assert_int_equal(sysprobe_target_count(s), 1);
	forker_release(&f, c1);

	forker_fork(&f, 1, &c2);
	assert_int_equal(bit(s, c2), 1);
	assert_int_equal(sysprobe_remove_target(s, c2), 0);   /* followed, not added: still removable */
	assert_int_equal(bit(s, c2), 0);
	assert_int_equal(sysprobe_remove_target(s, c2), -ENOENT);
	assert_int_equal(sysprobe_target_count(s), 1);
	forker_release(&f, c2);
	assert_int_equal(sysprobe_detach(s), 0);

	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), K_FORK);   /* c2's, since the second attach */
	sysprobe_results_free(x.r);
	child_reap(&f);
	sysprobe_close(s);
}

/* An added target's bit is cleared by the kernel when it exits; it stays in
 * the added list (count) until removed, and a new attach sets it again. */
static void test_follow_exit_clears_added(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	require_follow(s);
	struct child c;
	struct work w = { 10, 0, 0, 0 };

	start_child(&c, 1, &w);
	assert_int_equal(sysprobe_add_target(s, c.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	child_phase(&c);
	assert_int_equal(bit(s, c.pid), 1);
	child_reap(&c);
	assert_int_equal(bit(s, c.pid), 0);
	assert_int_equal(sysprobe_target_count(s), 1);
	assert_int_equal(sysprobe_detach(s), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	assert_int_equal(bit(s, c.pid), 1);   /* the list is the owner's to prune */
	assert_int_equal(sysprobe_remove_target(s, c.pid), 0);
	assert_int_equal(bit(s, c.pid), 0);
	assert_int_equal(sysprobe_target_count(s), 0);
	assert_int_equal(sysprobe_detach(s), 0);
	sysprobe_close(s);
}

/* Without the fork/exit programs (SYSPROBE_NO_FOLLOW, as on an old kernel):
 * 2 programs, a target's child is not traced unless added. */
static void test_no_follow(void **state)
{
	struct sysprobe *s = open_or_skip(state);
	assert_false(sysprobe_follows_forks(s));
	struct child f;
	pid_t c;
	uint32_t ids[4];
	size_t n = prog_ids(s, ids);
	assert_int_equal(n, 2);

	start_forker(&f, 1, K_FORK);
	assert_int_equal(sysprobe_add_target(s, f.pid), 0);
	assert_int_equal(sysprobe_attach(s), 0);
	assert_int_equal(sysprobe_kernel_links(s), 2);
	forker_fork(&f, 1, &c);
	assert_int_equal(bit(s, c), 0);
	forker_release(&f, c);
	assert_int_equal(sysprobe_detach(s), 0);
	struct res x = read_res(s);
	assert_int_equal(count_of(&x, "getppid"), 0);
	sysprobe_results_free(x.r);
	child_reap(&f);
	sysprobe_close(s);
}

/* ---- pure functions ---- */

static void test_percentile_synthetic(void **state)
{
	(void)state;
	uint64_t h[SYSPROBE_SLOTS];

	memset(h, 0, sizeof(h));
	assert_true(sysprobe_percentile(h, 0.5) == 0);   /* empty */

	h[10] = 100;   /* all in [1024, 2048) */
	assert_true(fabs(sysprobe_percentile(h, 0.5) - 1536) < 1e-9);
	assert_true(fabs(sysprobe_percentile(h, 0.99) - (1024 + 1024 * 0.99)) < 1e-9);
	assert_true(sysprobe_percentile(h, 0) == 1024);    /* the slot's lower bound */
	assert_true(sysprobe_percentile(h, 1) == 2048);
	assert_true(sysprobe_percentile(h, -3) == 1024);   /* clamped */
	assert_true(sysprobe_percentile(h, 7) == 2048);
	assert_true(sysprobe_percentile(h, NAN) == 1024);

	memset(h, 0, sizeof(h));
	h[3] = 50;   /* [8, 16) */
	h[5] = 50;   /* [32, 64) */
	assert_true(fabs(sysprobe_percentile(h, 0.5) - 16) < 1e-9);     /* rank 50 ends slot 3 */
	assert_true(fabs(sysprobe_percentile(h, 0.51) - 32.64) < 1e-9); /* 32 + 32 * 1/50 */
	assert_true(fabs(sysprobe_percentile(h, 0.9) - 57.6) < 1e-9);   /* 32 + 32 * 40/50 */
	assert_true(fabs(sysprobe_percentile(h, 0.25) - 12) < 1e-9);

	memset(h, 0, sizeof(h));
	h[0] = 10;   /* [0, 2) */
	assert_true(fabs(sysprobe_percentile(h, 0.5) - 1) < 1e-9);

	memset(h, 0, sizeof(h));
	h[2] = 1;
	h[SYSPROBE_SLOTS - 1] = 99;   /* open-ended: its lower bound */
	assert_true(sysprobe_percentile(h, 0.5) == (double)(1ULL << (SYSPROBE_SLOTS - 1)));
	assert_true(fabs(sysprobe_percentile(h, 0.005) - 6) < 1e-9);   /* 4 + 4 * 0.5 */
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int slot_of(uint64_t d)
{
	int s = 0;
	while (d >= 2 && s < SYSPROBE_SLOTS - 1) {
		d >>= 1;
		s++;
	}
	return s;
}

/* The documented bound: the estimate lies in the slot of the true quantile
 * (the sample of rank max(1, ceil(q n))), hence within a factor of 2. */
static void test_percentile_bound(void **state)
{
	(void)state;
	enum { N = 5000 };
	static uint64_t v[N];
	uint64_t h[SYSPROBE_SLOTS];
	uint64_t x = 88172645463325252ULL;   /* xorshift64: deterministic */
	for (int dist = 0; dist < 3; dist++) {
		memset(h, 0, sizeof(h));
		for (int i = 0; i < N; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			uint64_t d = dist == 0 ? 200 + x % 800            /* narrow */
				   : dist == 1 ? 1ULL << (x % 30)          /* wide, on bounds */
				   : (x % 1000) * (x % 1000) * (x % 50);   /* skewed */
			v[i] = d;
			h[slot_of(d)]++;
		}
		qsort(v, N, sizeof(v[0]), cmp_u64);
		const double qs[] = { 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0 };
		for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
			size_t rank = (size_t)ceil(qs[k] * N);
			uint64_t truth = v[(rank ? rank : 1) - 1];
			double est = sysprobe_percentile(h, qs[k]);
			int s = slot_of(truth);
			double lo = s == 0 ? 0 : (double)(1ULL << s), hi = (double)(1ULL << (s + 1));
			if (!(est >= lo && est <= hi))
				fail_msg("dist %d q %g: estimate %.1f outside the slot [%.0f, %.0f) of the truth %llu", dist,
					 qs[k], est, lo, hi, (unsigned long long)truth);
			assert_true(fabs(est - (double)truth) < hi - lo || est == hi);
		}
	}
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(sysprobe_syscall_name(0), "read");
	assert_string_equal(sysprobe_syscall_name(SYS_getppid), "getppid");
	assert_string_equal(sysprobe_syscall_name(SYS_close), "close");
	assert_string_equal(sysprobe_syscall_name(SYS_exit_group), "exit_group");
	assert_null(sysprobe_syscall_name(-1));
	assert_null(sysprobe_syscall_name(500));
	assert_null(sysprobe_syscall_name(100000));
}

#define AUTO(fn) BPFTEST_WITH(fn, &v_auto)
#define NOFOLLOW(fn) BPFTEST_WITH(fn, &v_nofollow)

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "--workload") == 0)
		return workload_main(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "--forker") == 0)
		return forker_main(argc, argv);
	if (bpftest_self_exe())
		return 1;

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percentile_synthetic),
		cmocka_unit_test(test_percentile_bound),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_api_errors),
		PER_VARIANT(test_counts),
		PER_VARIANT(test_threads),
		PER_VARIANT(test_detach_reattach),
		PER_VARIANT(test_follow_fork),
		PER_VARIANT(test_follow_grandchildren),
		AUTO(test_follow_not_from_non_target),
		AUTO(test_follow_rebuilt_at_attach),
		AUTO(test_follow_exit_clears_added),
		AUTO(test_non_target),
		AUTO(test_remove_target),
		AUTO(test_collect_and_json),
		AUTO(test_prog_stats),
		AUTO(test_close_detaches),
		AUTO(test_target_errors),
		NOFOLLOW(test_no_follow),
		NOFOLLOW(test_counts),
		NOFOLLOW(test_remove_target),
		NOFOLLOW(test_target_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
