/* Unit tests for proclife.c against the real kernel: real processes, a real
 * loop driven with loop_run_once until the expected events arrived or a
 * deadline passed (no sleeps).
 *
 * The "onepanel" of these tests is a copy of /bin/sh under a name unique to
 * this run (osaltXXXXXX), so other processes on the host (and other test
 * runs) never match. BPF is required: a proclife_open() failure fails the
 * test unless ONESHIELD_ALLOW_NO_BPF=1, which skips instead (CI has BPF).
 *
 * The event tests run once per transport (ring buffer, perf buffer): both
 * work on this kernel, and the perf buffer is what kernels before 5.8 get. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loop.h"
#include "proclife.h"

#define DEADLINE_MS 10000
#define MAX_EVENTS  1024

struct fx {
	struct loop *l;
	struct proclife *p;
	struct proclife_event ev[MAX_EVENTS];
	int n;
	int overflow;
	bool close_in_cb;
	char dir[64];
	char comm[16];
	char bin[128];   /* dir/comm: a copy of /bin/sh */
};

/* What a failed test leaves behind is cleaned up by teardown(): the fixture
 * and any child still running (a `sleep 1000`). */
static struct fx *cur_fx;
static pid_t kids[32];
static int nkids;

static void on_event(void *arg, const struct proclife_event *e)
{
	struct fx *f = arg;

	if (f->n < MAX_EVENTS)
		f->ev[f->n++] = *e;
	else
		f->overflow++;
	if (f->close_in_cb) {
		proclife_close(f->p);
		f->p = NULL;
	}
}

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	ssize_t n;

	assert_true(in >= 0);
	assert_true(out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	assert_int_equal(close(out), 0);
}

/* A unique comm, a private directory and the copy of /bin/sh. */
static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct timespec ts;

	assert_non_null(f);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(f->comm, sizeof(f->comm), "osalt%06x",
		 (unsigned)(((unsigned)getpid() * 2654435761u) ^ (unsigned)ts.tv_nsec) & 0xffffffu);
	snprintf(f->dir, sizeof(f->dir), "/tmp/osa-proclife-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	chmod(f->dir, 0755);
	snprintf(f->bin, sizeof(f->bin), "%s/%s", f->dir, f->comm);
	copy_file("/bin/sh", f->bin);
	f->l = loop_new();
	assert_non_null(f->l);
	cur_fx = f;
	return f;
}

static void fx_free(struct fx *f)
{
	cur_fx = NULL;
	proclife_close(f->p);
	loop_free(f->l);
	unlink(f->bin);
	rmdir(f->dir);
	free(f);
}

/* Open with o (comm defaulting to ours); false when the test is skipped. */
static bool fx_open(struct fx *f, struct proclife_opts *o)
{
	char why[512] = "";
	int err;

	if (!o->comm && !o->basename_prefix)
		o->comm = f->comm;
	err = proclife_open(f->l, o, on_event, f, &f->p, why, sizeof(why));
	if (err) {
		const char *allow = getenv("ONESHIELD_ALLOW_NO_BPF");

		print_message("proclife_open: %s (%s)\n", why, strerror(-err));
		if (allow && strcmp(allow, "1") == 0) {
			print_message("ONESHIELD_ALLOW_NO_BPF=1: skipping\n");
			return false;
		}
		fail_msg("eBPF unavailable (%s); set ONESHIELD_ALLOW_NO_BPF=1 to skip", why);
	}
	assert_non_null(f->p);
	assert_true(why[0] == '\0');
	return true;
}

/* cpu >= 0: the child (and what it starts) runs on that CPU only, from
 * before its exec. */
static pid_t spawn_on(char *const argv[], int cpu)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		setpgid(0, 0);  /* teardown kills the group: grandchildren too */
		if (cpu >= 0) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			if (sched_setaffinity(0, sizeof(set), &set))
				_exit(126);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	if (nkids < (int)(sizeof(kids) / sizeof(kids[0])))
		kids[nkids++] = pid;
	return pid;
}

static pid_t spawn(char *const argv[])
{
	return spawn_on(argv, -1);
}

/* The n-th CPU (from 0) this process may run on, -1 if there are fewer. */
static int allowed_cpu(int n)
{
	cpu_set_t set;

	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &set) && n-- == 0)
			return c;
	return -1;
}

static void forget_kid(pid_t pid)
{
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = kids[--nkids];
}

static int reap(pid_t pid)
{
	int st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	forget_kid(pid);
	return st;
}

static int teardown(void **state)
{
	(void)state;
	while (nkids > 0) {
		pid_t pid = kids[--nkids];

		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	if (cur_fx)
		fx_free(cur_fx);
	return 0;
}

static const struct proclife_event *find(const struct fx *f, uint32_t type, int tgid)
{
	for (int i = 0; i < f->n; i++)
		if (f->ev[i].type == type && (tgid < 0 || f->ev[i].tgid == (uint32_t)tgid))
			return &f->ev[i];
	return NULL;
}

static int count_ev(const struct fx *f, uint32_t type, int tgid)
{
	int c = 0;

	for (int i = 0; i < f->n; i++)
		if (f->ev[i].type == type && f->ev[i].tgid == (uint32_t)tgid)
			c++;
	return c;
}

static const struct proclife_event *wait_for(struct fx *f, uint32_t type, int tgid)
{
	uint64_t end = loop_now_ms() + DEADLINE_MS;
	const struct proclife_event *e;

	while (!(e = find(f, type, tgid))) {
		if (loop_now_ms() > end)
			fail_msg("no event type %u for tgid %d within %d ms (%d events)", type, tgid, DEADLINE_MS, f->n);
		assert_true(loop_run_once(f->l, 100) >= 0);
	}
	return e;
}

/* The first FORK event after index `from` whose parent is ppid. */
static const struct proclife_event *wait_fork_of(struct fx *f, int ppid, int from)
{
	uint64_t end = loop_now_ms() + DEADLINE_MS;

	for (;;) {
		for (int i = from; i < f->n; i++)
			if (f->ev[i].type == PROCLIFE_FORK && f->ev[i].ppid == (uint32_t)ppid)
				return &f->ev[i];
		if (loop_now_ms() > end)
			fail_msg("no FORK of %d within %d ms", ppid, DEADLINE_MS);
		assert_true(loop_run_once(f->l, 100) >= 0);
	}
}

static uint64_t proc_start_ticks(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long v = 0;
	int fd;
	ssize_t n;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	assert_non_null(p);
	/* after ") ": state is field 3; starttime is field 22 */
	p += 2;
	for (int field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		assert_non_null(p);
		p++;
	}
	v = strtoull(p, NULL, 10);
	return v;
}

static bool have_tracefs(void);

static const char *transport_name(enum proclife_transport t)
{
	return t == PROCLIFE_TRANSPORT_RINGBUF ? "ringbuf" : t == PROCLIFE_TRANSPORT_PERFBUF ? "perfbuf" : "auto";
}

/* A forced transport must be the one in use. */
static void check_transport(struct fx *f, enum proclife_transport t)
{
	const char *got = proclife_transport(f->p);

	if (t != PROCLIFE_TRANSPORT_AUTO)
		assert_string_equal(got, transport_name(t));
	else
		assert_string_equal(got, libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) == 1 ? "ringbuf" : "perfbuf");
}

/* ---- the main scenario: exec, fork, exit code, signal ---- */

static void scenario(enum proclife_variant v, enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .variant = v, .transport = tr };
	struct proclife_counters c0, c1;
	const struct proclife_event *e, *sub, *slp, *x;
	char script[] = "(exit 3)\n/bin/sleep 1000 &\nwait\nexit 7\n";
	char *argv_true[] = { "/bin/true", NULL };
	char *argv_sh[] = { f->bin, "-c", script, NULL };
	pid_t t, sh;
	uint64_t sh_start;
	int st, from;

	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	print_message("variant %s, transport %s, comm %s\n", proclife_variant(f->p), proclife_transport(f->p), f->comm);
	if (v != PROCLIFE_VARIANT_AUTO)
		assert_string_equal(proclife_variant(f->p),
				    v == PROCLIFE_VARIANT_TP_BTF ? "tp_btf" : v == PROCLIFE_VARIANT_RAW_TP ? "raw_tp" : "tp");
	check_transport(f, tr);
	assert_int_equal(proclife_counters(f->p, &c0), 0);

	/* Untracked, not matching: nothing (checked once later events came). */
	t = spawn(argv_true);
	assert_true(WIFEXITED(reap(t)));

	/* The matching exec. */
	sh = spawn(argv_sh);
	e = wait_for(f, PROCLIFE_EXEC, sh);
	assert_int_equal(e->pid, sh);
	assert_int_equal(e->ppid, getpid());
	assert_string_equal(e->filename, f->bin);
	assert_string_equal(e->comm, f->comm);
	assert_true(e->flags & PROCLIFE_F_MATCHED);
	assert_true(e->flags & PROCLIFE_F_AUTOTRACK);
	assert_false(e->flags & PROCLIFE_F_TRACKED);
	assert_true(e->start_ns > 0 && e->ts_ns >= e->start_ns);
	sh_start = e->start_ns;
	assert_null(find(f, PROCLIFE_EXEC, t));
	assert_null(find(f, PROCLIFE_EXIT, t));
	assert_null(find(f, PROCLIFE_FORK, t));
	/* The caller confirms the candidate (it already is tracked). */
	assert_int_equal(proclife_is_tracked(f->p, sh), 1);
	assert_int_equal(proclife_track(f->p, sh), 0);
	assert_int_equal(proclife_ns_to_ticks(sh_start), proc_start_ticks(sh));

	/* (exit 3): a forked subshell exits with 3. */
	sub = wait_fork_of(f, sh, 0);
	assert_int_not_equal(sub->tgid, sh);
	assert_int_equal(sub->pid, sub->tgid);
	assert_int_equal(sub->parent_start_ns, sh_start);
	assert_true(sub->start_ns >= sh_start);
	assert_string_equal(sub->comm, f->comm);
	x = wait_for(f, PROCLIFE_EXIT, (int)sub->tgid);
	assert_int_equal(x->exit_code, 3);
	assert_int_equal(x->exit_signal, 0);
	assert_int_equal(x->exit_status, 3 << 8);
	assert_int_equal(x->start_ns, sub->start_ns);
	assert_int_equal(x->ppid, sh);

	/* /bin/sleep &: fork, then exec of a tracked process. */
	from = (int)(sub - f->ev) + 1;
	slp = wait_fork_of(f, sh, from);
	{
		pid_t sp = (pid_t)slp->tgid;
		uint64_t sp_start = slp->start_ns;

		e = wait_for(f, PROCLIFE_EXEC, sp);
		assert_string_equal(e->filename, "/bin/sleep");
		assert_string_equal(e->comm, "sleep");
		assert_true(e->flags & PROCLIFE_F_TRACKED);
		assert_false(e->flags & PROCLIFE_F_MATCHED);
		assert_int_equal(e->start_ns, sp_start);
		assert_int_equal(e->ppid, sh);

		/* kill -9 */
		assert_int_equal(kill(sp, SIGKILL), 0);
		x = wait_for(f, PROCLIFE_EXIT, sp);
		assert_int_equal(x->exit_signal, SIGKILL);
		assert_int_equal(x->exit_code, -1);
		assert_int_equal(x->start_ns, sp_start);
		assert_int_equal(count_ev(f, PROCLIFE_EXIT, sp), 1);
	}

	/* The shell itself: exit 7. */
	x = wait_for(f, PROCLIFE_EXIT, sh);
	assert_int_equal(x->exit_code, 7);
	assert_int_equal(x->exit_signal, 0);
	assert_int_equal(x->start_ns, sh_start);
	assert_string_equal(x->comm, f->comm);
	st = reap(sh);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 7);
	assert_int_equal(proclife_is_tracked(f->p, sh), 0);

	/* Drain what is left, then the books must balance. */
	assert_true(proclife_consume(f->p) >= 0);
	assert_int_equal(count_ev(f, PROCLIFE_EXIT, sh), 1);
	assert_int_equal(count_ev(f, PROCLIFE_EXEC, sh), 1);
	assert_int_equal(f->overflow, 0);
	assert_int_equal(f->n, 7); /* EXEC sh, FORK+EXIT sub, FORK+EXEC+EXIT sleep, EXIT sh */
	assert_int_equal(proclife_counters(f->p, &c1), 0);
	assert_true(c1.execs - c0.execs >= 3);  /* true, sh, sleep */
	assert_true(c1.forks - c0.forks >= 4);  /* true, sh, subshell, sleep */
	assert_true(c1.exits - c0.exits >= 4);
	assert_int_equal(c1.ringbuf_drops, 0);
	assert_int_equal(c1.perfbuf_lost, 0);
	assert_int_equal(c1.track_full, 0);
	assert_int_equal(c1.events_malformed, 0);
	assert_int_equal(c1.events_delivered, (uint64_t)f->n);
	assert_int_equal(c1.events_emitted, c1.events_delivered);
	fx_free(f);
}

static void test_scenario_auto(void **state)
{
	(void)state;
	scenario(PROCLIFE_VARIANT_AUTO, PROCLIFE_TRANSPORT_AUTO);
}

static void test_scenario_raw_tp(void **state)
{
	(void)state;
	scenario(PROCLIFE_VARIANT_RAW_TP, PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_scenario_tp(void **state)
{
	(void)state;
	if (!have_tracefs()) {
		print_message("tracefs not mounted: the tp flavour cannot attach here\n");
		skip();
	}
	scenario(PROCLIFE_VARIANT_TP, PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_scenario_perfbuf_tp_btf(void **state)
{
	(void)state;
	scenario(PROCLIFE_VARIANT_TP_BTF, PROCLIFE_TRANSPORT_PERFBUF);
}

static void test_scenario_perfbuf_raw_tp(void **state)
{
	(void)state;
	scenario(PROCLIFE_VARIANT_RAW_TP, PROCLIFE_TRANSPORT_PERFBUF);
}

static void test_scenario_perfbuf_tp(void **state)
{
	(void)state;
	if (!have_tracefs()) {
		print_message("tracefs not mounted: the tp flavour cannot attach here\n");
		skip();
	}
	scenario(PROCLIFE_VARIANT_TP, PROCLIFE_TRANSPORT_PERFBUF);
}

/* ---- transports: maps, losses, order ---- */

/* The loaded programs use the map of their transport and no map of the
 * other type: that one was never created (bpf_map__set_autocreate), its
 * references were poisoned by libbpf and removed with the dead branch. */
static void transport_maps(enum proclife_transport tr, uint32_t want, uint32_t other)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .transport = tr };
	struct bpfload_prog_stat ps[16];
	int n;

	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	check_transport(f, tr);
	n = proclife_prog_stats(f->p, ps, 16);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++) {
		struct bpf_prog_info info;
		uint32_t ids[16], len = sizeof(info);
		int fd = bpf_prog_get_fd_by_id(ps[i].id), seen_want = 0;

		assert_true(fd >= 0);
		/* Zeroed: the kernel fills ids through a pointer valgrind does
		 * not follow, and would call them uninitialised otherwise. */
		memset(ids, 0, sizeof(ids));
		memset(&info, 0, sizeof(info));
		info.nr_map_ids = 16;
		info.map_ids = (uint64_t)(uintptr_t)ids;
		assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
		close(fd);
		assert_true(info.nr_map_ids <= 16);
		for (uint32_t k = 0; k < info.nr_map_ids; k++) {
			struct bpf_map_info mi;
			uint32_t mlen = sizeof(mi);
			int mfd = bpf_map_get_fd_by_id(ids[k]);

			assert_true(mfd >= 0);
			memset(&mi, 0, sizeof(mi));
			assert_int_equal(bpf_obj_get_info_by_fd(mfd, &mi, &mlen), 0);
			close(mfd);
			assert_int_not_equal(mi.type, other);
			seen_want += mi.type == want;
		}
		/* Every program emits (the exit one at least): the map is there. */
		assert_int_equal(seen_want, 1);
	}
	fx_free(f);
}

static void test_transport_maps(void **state)
{
	(void)state;
	transport_maps(PROCLIFE_TRANSPORT_RINGBUF, BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	transport_maps(PROCLIFE_TRANSPORT_PERFBUF, BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_RINGBUF);
}

/* A burst into the smallest buffer (one page; per CPU for perf buffers),
 * nobody reading: a matching shell runs NSUB subshells, all on one CPU,
 * while this process waits for it. That is exactly 2 + 2 * NSUB events
 * (EXEC and EXIT of the shell, FORK and EXIT of each subshell); every one
 * must be either delivered or counted as dropped. */
#define NSUB 100

static void losses(enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .transport = tr, .ringbuf_kib = 4, .perfbuf_kib = 4 };
	char script[128];
	char *argv[] = { f->bin, "-c", script, NULL };
	char *argv_exit[] = { f->bin, "-c", "exit 0", NULL };
	struct proclife_counters c0, c1, c2;
	uint64_t emitted, drops;
	int cpu = allowed_cpu(0), st;
	pid_t sh, tail;

	snprintf(script, sizeof(script), "i=0\nwhile [ $i -lt %d ]; do (exit 0); i=$((i+1)); done\nexit 0\n", NSUB);
	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	check_transport(f, tr);
	assert_int_equal(proclife_counters(f->p, &c0), 0);
	sh = spawn_on(argv, cpu);
	st = reap(sh);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* Everything is written: the exit was recorded before the wait
	 * returned. One consume reads until the buffer is empty. */
	assert_true(proclife_consume(f->p) >= 0);
	assert_int_equal(proclife_counters(f->p, &c1), 0);
	emitted = c1.events_emitted - c0.events_emitted;
	drops = c1.ringbuf_drops - c0.ringbuf_drops;
	print_message("%s: %llu events: %llu delivered, %llu dropped\n", proclife_transport(f->p),
		      (unsigned long long)(emitted + drops), (unsigned long long)emitted, (unsigned long long)drops);
	assert_int_equal(emitted + drops, 2 + 2 * NSUB);
	assert_true(drops > 0);
	assert_int_equal(c1.events_delivered - c0.events_delivered, emitted);
	assert_int_equal(f->n, emitted);
	assert_int_equal(c1.events_malformed, 0);

	/* The next event on that CPU gets through (and, with perf buffers,
	 * carries the loss record for what was dropped there). */
	tail = spawn_on(argv_exit, cpu);
	assert_int_equal(reap(tail), 0);
	wait_for(f, PROCLIFE_EXIT, tail);
	assert_true(proclife_consume(f->p) >= 0);
	assert_int_equal(proclife_counters(f->p, &c2), 0);
	assert_int_equal(c2.ringbuf_drops, c1.ringbuf_drops);
	assert_int_equal(c2.events_emitted - c1.events_emitted, 2);
	assert_int_equal(c2.events_delivered, c2.events_emitted - c0.events_emitted);
	if (tr == PROCLIFE_TRANSPORT_PERFBUF)
		assert_int_equal(c2.perfbuf_lost, drops);
	else
		assert_int_equal(c2.perfbuf_lost, 0);
	fx_free(f);
}

static void test_losses(void **state)
{
	(void)state;
	losses(PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_losses_perfbuf(void **state)
{
	(void)state;
	losses(PROCLIFE_TRANSPORT_PERFBUF);
}

/* Three processes, one after the other, on two CPUs: a and c on the
 * higher-numbered one, b on the lower, all queued before one consume. A
 * perf buffer reader visits the CPUs in order and would see b's events
 * first; the batch must come out in time order: a, b, c. */
static void order(enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .transport = tr };
	char *argv[] = { f->bin, "-c", "exit 0", NULL };
	int lo = allowed_cpu(0), hi = allowed_cpu(1);
	pid_t pids[3];

	if (hi < 0) {
		print_message("one CPU only: nothing to order\n");
		fx_free(f);
		skip();
	}
	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	check_transport(f, tr);
	for (int i = 0; i < 3; i++) {
		pids[i] = spawn_on(argv, i == 1 ? lo : hi);
		assert_int_equal(reap(pids[i]), 0);
	}
	assert_int_equal(proclife_consume(f->p), 6);
	assert_int_equal(f->n, 6);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(f->ev[i].tgid, pids[i / 2]);
		assert_int_equal(f->ev[i].type, i % 2 ? PROCLIFE_EXIT : PROCLIFE_EXEC);
		if (i)
			assert_true(f->ev[i].ts_ns >= f->ev[i - 1].ts_ns);
	}
	fx_free(f);
}

static void test_order(void **state)
{
	(void)state;
	order(PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_order_perfbuf(void **state)
{
	(void)state;
	order(PROCLIFE_TRANSPORT_PERFBUF);
}

/* ---- multi-threaded processes: one EXIT, no FORK for threads ---- */

static pthread_t main_thread;

static void *quick(void *arg)
{
	(void)arg;
	return NULL;
}

static void *last(void *arg)
{
	pthread_t *t = arg;

	pthread_join(main_thread, NULL);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	_exit(5);  /* exit_group from a non-leader thread, leader already gone */
}

static void *block(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* Helper process (this binary re-exec'd, so it starts clean and valgrind
 * does not follow it): wait for a byte on fd, start threads, the leader
 * leaves first; the last thread exits the group with 5. */
static int helper_threads_exit5(int rfd)
{
	static pthread_t t[3];
	char c;

	if (read(rfd, &c, 1) != 1)
		_exit(100);
	main_thread = pthread_self();
	if (pthread_create(&t[0], NULL, quick, NULL) || pthread_create(&t[1], NULL, quick, NULL) ||
	    pthread_create(&t[2], NULL, last, t))
		_exit(101);
	pthread_exit(NULL);
}

/* Helper process: start 4 blocking threads, write a byte to fd, wait to be
 * killed. */
static int helper_threads_wait(int wfd)
{
	pthread_t t;

	for (int i = 0; i < 4; i++)
		if (pthread_create(&t, NULL, block, NULL))
			_exit(101);
	if (write(wfd, "r", 1) != 1)
		_exit(102);
	for (;;)
		pause();
}

static char self_path[4096];  /* this binary (not /proc/self/exe: valgrind) */

/* Runs this binary as helper `mode` with fd (inherited) as its argument. */
static pid_t spawn_helper(const char *mode, int fd)
{
	char fdarg[16];
	char *argv[] = { self_path, (char *)mode, fdarg, NULL };

	snprintf(fdarg, sizeof(fdarg), "%d", fd);
	return spawn(argv);
}

static void threads(enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .transport = tr };
	const struct proclife_event *x;
	int go[2], ready[2], st;
	pid_t a, b;
	char c;

	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	check_transport(f, tr);
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);

	/* a: tracked before it starts its threads; leader exits first. */
	a = spawn_helper("--helper-threads-exit5", go[0]);
	close(go[0]);
	assert_int_equal(proclife_track(f->p, a), 0);
	assert_int_equal(proclife_is_tracked(f->p, a), 1);
	assert_int_equal(write(go[1], "g", 1), 1);
	x = wait_for(f, PROCLIFE_EXIT, a);
	assert_int_equal(x->exit_code, 5);
	assert_int_equal(x->exit_signal, 0);
	assert_int_not_equal(x->pid, a);  /* the last thread, not the leader */
	st = reap(a);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 5);
	close(go[1]);

	/* b: multi-threaded, killed with SIGKILL. */
	b = spawn_helper("--helper-threads-wait", ready[1]);
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	assert_int_equal(proclife_track(f->p, b), 0);
	assert_int_equal(kill(b, SIGKILL), 0);
	x = wait_for(f, PROCLIFE_EXIT, b);
	assert_int_equal(x->exit_signal, SIGKILL);
	assert_int_equal(x->exit_code, -1);
	st = reap(b);
	assert_true(WIFSIGNALED(st));

	/* Drain: still exactly one EXIT each, and no FORK (threads). */
	assert_true(proclife_consume(f->p) >= 0);
	assert_int_equal(count_ev(f, PROCLIFE_EXIT, a), 1);
	assert_int_equal(count_ev(f, PROCLIFE_EXIT, b), 1);
	assert_null(find(f, PROCLIFE_FORK, -1));
	/* a may have been tracked before its exec finished: then that exec
	 * is reported too (TRACKED). Nothing else. */
	assert_int_equal(f->n, 2 + count_ev(f, PROCLIFE_EXEC, a));
	fx_free(f);
}

static void test_threads(void **state)
{
	(void)state;
	threads(PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_threads_perfbuf(void **state)
{
	(void)state;
	threads(PROCLIFE_TRANSPORT_PERFBUF);
}

/* ---- options ---- */

static void manual_track(enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .manual_track = true, .transport = tr };
	char *argv[] = { f->bin, "-c", "(exit 2)\nexit 0\n", NULL };
	const struct proclife_event *e;
	pid_t sh;

	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	check_transport(f, tr);
	sh = spawn(argv);
	e = wait_for(f, PROCLIFE_EXEC, sh);
	assert_true(e->flags & PROCLIFE_F_MATCHED);
	assert_false(e->flags & PROCLIFE_F_AUTOTRACK);
	assert_int_equal(reap(sh), 0);
	/* Not tracked: its fork and exit are not reported. A later exec of a
	 * matching process proves the queue was read past them. */
	sh = spawn((char *[]){ f->bin, "-c", "exit 0", NULL });
	wait_for(f, PROCLIFE_EXEC, sh);
	assert_int_equal(reap(sh), 0);
	assert_int_equal(f->n, 2);
	assert_null(find(f, PROCLIFE_FORK, -1));
	assert_null(find(f, PROCLIFE_EXIT, -1));
	fx_free(f);
}

static void test_manual_track(void **state)
{
	(void)state;
	manual_track(PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_manual_track_perfbuf(void **state)
{
	(void)state;
	manual_track(PROCLIFE_TRANSPORT_PERFBUF);
}

static void test_basename_prefix(void **state)
{
	struct fx *f = fx_new();
	char prefix[9];
	struct proclife_opts o = { .basename_prefix = prefix };
	char *argv[] = { f->bin, "-c", "exit 4", NULL };
	const struct proclife_event *e;
	pid_t sh;

	(void)state;
	memcpy(prefix, f->comm, 8);  /* "osaltXXX" */
	prefix[8] = '\0';
	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	sh = spawn(argv);
	e = wait_for(f, PROCLIFE_EXEC, sh);
	assert_true(e->flags & PROCLIFE_F_MATCHED);
	assert_string_equal(e->filename, f->bin);
	e = wait_for(f, PROCLIFE_EXIT, sh);
	assert_int_equal(e->exit_code, 4);
	assert_int_equal(WEXITSTATUS(reap(sh)), 4);
	fx_free(f);
}

static void test_bad_args(void **state)
{
	struct loop *l = loop_new();
	struct proclife *p = (struct proclife *)1;
	struct proclife_opts o = { .comm = "a-name-of-16-chr" };
	char why[256];

	(void)state;
	assert_int_equal(proclife_open(l, &o, on_event, NULL, &p, why, sizeof(why)), -EINVAL);
	assert_null(p);
	assert_non_null(strstr(why, "comm"));
	o.comm = "";
	assert_int_equal(proclife_open(l, &o, on_event, NULL, &p, why, sizeof(why)), -EINVAL);
	o.comm = "x";
	o.variant = (enum proclife_variant)42;
	assert_int_equal(proclife_open(l, &o, on_event, NULL, &p, NULL, 0), -EINVAL);
	o.variant = PROCLIFE_VARIANT_AUTO;
	o.transport = (enum proclife_transport)42;
	assert_int_equal(proclife_open(l, &o, on_event, NULL, &p, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "transport"));
	o.transport = PROCLIFE_TRANSPORT_PERFBUF;
	o.perfbuf_kib = 1u << 30;
	assert_int_equal(proclife_open(l, &o, on_event, NULL, &p, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "perfbuf_kib"));
	assert_null(p);
	proclife_close(NULL);
	loop_free(l);
}

static void test_track_errors(void **state)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { 0 };

	(void)state;
	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	assert_int_equal(proclife_track(f->p, 0), -EINVAL);
	assert_int_equal(proclife_track(f->p, 0x3ffffff0), -ESRCH);
	assert_int_equal(proclife_is_tracked(f->p, 0x3ffffff0), 0);
	assert_int_equal(proclife_untrack(f->p, 0x3ffffff0), -ENOENT);
	assert_int_equal(proclife_track(f->p, getpid()), 0);
	assert_int_equal(proclife_is_tracked(f->p, getpid()), 1);
	assert_int_equal(proclife_untrack(f->p, getpid()), 0);
	assert_int_equal(proclife_is_tracked(f->p, getpid()), 0);
	fx_free(f);
}

/* ---- self-cost and teardown ---- */

static void test_prog_stats(void **state)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { 0 };
	struct bpfload_prog_stat ps[16];
	char *argv[] = { "/bin/true", NULL };
	int stats_fd, n;
	uint64_t exec_runs = 0, exec_ns = 0;

	(void)state;
	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	/* Run-time stats stay on while this fd is open. */
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	assert_true(stats_fd >= 0);
	/* The sysctl shows its own setting only, not this fd's. */
	assert_true(proclife_bpf_stats_enabled() >= 0);
	for (int i = 0; i < 5; i++)
		assert_true(WIFEXITED(reap(spawn(argv))));
	n = proclife_prog_stats(f->p, ps, 16);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++) {
		assert_true(ps[i].id > 0);
		assert_int_equal(ps[i].recursion_misses, 0);
		if (strncmp(ps[i].name, "pl_exec_", 8) == 0) {
			exec_runs = ps[i].run_cnt;
			exec_ns = ps[i].run_time_ns;
		}
	}
	close(stats_fd);
	assert_true(exec_runs >= 5);
	assert_true(exec_ns > 0);
	print_message("exec program: %llu runs, %llu ns total\n", (unsigned long long)exec_runs,
		      (unsigned long long)exec_ns);
	assert_int_equal(proclife_prog_stats(f->p, ps, 1), 1);
	fx_free(f);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;  /* the DIR's own fd */
}

static bool prog_exists(uint32_t id)
{
	int fd = bpf_prog_get_fd_by_id(id);

	if (fd < 0) {
		assert_int_equal(errno, ENOENT);
		return false;
	}
	close(fd);
	return true;
}

/* Does any BPF link in the system point at prog id? */
static bool link_to(uint32_t prog_id)
{
	uint32_t id = 0;

	while (bpf_link_get_next_id(id, &id) == 0) {
		struct bpf_link_info info;
		uint32_t len = sizeof(info);
		int fd = bpf_link_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.prog_id == prog_id) {
			close(fd);
			return true;
		}
		close(fd);
	}
	return false;
}

static bool have_tracefs(void)
{
	return access("/sys/kernel/tracing/events/sched/sched_process_exec/id", R_OK) == 0 ||
	       access("/sys/kernel/debug/tracing/events/sched/sched_process_exec/id", R_OK) == 0;
}

/* Every flavour: programs, links (or perf event fds) and maps go away. */
static void close_detaches(enum proclife_variant v, enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .variant = v, .transport = tr };
	struct bpfload_prog_stat ps[16];
	int fds0, n;
	uint64_t end;
	bool any;

	fds0 = count_fds();
	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	assert_true(count_fds() > fds0);
	n = proclife_prog_stats(f->p, ps, 16);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++) {
		assert_true(prog_exists(ps[i].id));
		if (v != PROCLIFE_VARIANT_TP)
			assert_true(link_to(ps[i].id));  /* tp attaches through perf event fds */
	}
	proclife_close(f->p);
	f->p = NULL;
	assert_int_equal(count_fds(), fds0);
	/* The kernel frees programs after an RCU grace period. */
	end = loop_now_ms() + DEADLINE_MS;
	do {
		any = false;
		for (int i = 0; i < n; i++)
			any |= prog_exists(ps[i].id) || link_to(ps[i].id);
		if (any)
			poll(NULL, 0, 5);
	} while (any && loop_now_ms() < end);
	assert_false(any);
	fx_free(f);
}

static void test_close_detaches(void **state)
{
	(void)state;
	for (int t = PROCLIFE_TRANSPORT_RINGBUF; t <= PROCLIFE_TRANSPORT_PERFBUF; t++) {
		close_detaches(PROCLIFE_VARIANT_TP_BTF, (enum proclife_transport)t);
		close_detaches(PROCLIFE_VARIANT_RAW_TP, (enum proclife_transport)t);
		if (have_tracefs())
			close_detaches(PROCLIFE_VARIANT_TP, (enum proclife_transport)t);
	}
}

static void close_in_callback(enum proclife_transport tr)
{
	struct fx *f = fx_new();
	struct proclife_opts o = { .transport = tr };
	char *argv[] = { f->bin, "-c", "exit 0", NULL };
	pid_t a, b;
	uint64_t end;

	if (!fx_open(f, &o)) {
		fx_free(f);
		skip();
	}
	f->close_in_cb = true;
	/* Two matching execs queued before the loop runs: the close inside
	 * the first callback must drop the second, not crash. */
	a = spawn(argv);
	reap(a);
	b = spawn(argv);
	reap(b);
	end = loop_now_ms() + DEADLINE_MS;
	while (f->p && loop_now_ms() < end)
		assert_true(loop_run_once(f->l, 100) >= 0);
	assert_null(f->p);
	assert_int_equal(f->n, 1);
	assert_int_equal(f->ev[0].tgid, a);
	fx_free(f);
}

static void test_close_in_callback(void **state)
{
	(void)state;
	close_in_callback(PROCLIFE_TRANSPORT_RINGBUF);
}

static void test_close_in_callback_perfbuf(void **state)
{
	(void)state;
	close_in_callback(PROCLIFE_TRANSPORT_PERFBUF);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_bad_args, teardown),
		cmocka_unit_test_teardown(test_scenario_auto, teardown),
		cmocka_unit_test_teardown(test_scenario_raw_tp, teardown),
		cmocka_unit_test_teardown(test_scenario_tp, teardown),
		cmocka_unit_test_teardown(test_scenario_perfbuf_tp_btf, teardown),
		cmocka_unit_test_teardown(test_scenario_perfbuf_raw_tp, teardown),
		cmocka_unit_test_teardown(test_scenario_perfbuf_tp, teardown),
		cmocka_unit_test_teardown(test_transport_maps, teardown),
		cmocka_unit_test_teardown(test_losses, teardown),
		cmocka_unit_test_teardown(test_losses_perfbuf, teardown),
		cmocka_unit_test_teardown(test_order, teardown),
		cmocka_unit_test_teardown(test_order_perfbuf, teardown),
		cmocka_unit_test_teardown(test_threads, teardown),
		cmocka_unit_test_teardown(test_threads_perfbuf, teardown),
		cmocka_unit_test_teardown(test_manual_track, teardown),
		cmocka_unit_test_teardown(test_manual_track_perfbuf, teardown),
		cmocka_unit_test_teardown(test_basename_prefix, teardown),
		cmocka_unit_test_teardown(test_track_errors, teardown),
		cmocka_unit_test_teardown(test_prog_stats, teardown),
		cmocka_unit_test_teardown(test_close_detaches, teardown),
		cmocka_unit_test_teardown(test_close_in_callback, teardown),
		cmocka_unit_test_teardown(test_close_in_callback_perfbuf, teardown),
	};

	if (argc == 3 && strcmp(argv[1], "--helper-threads-exit5") == 0)
		return helper_threads_exit5(atoi(argv[2]));
	if (argc == 3 && strcmp(argv[1], "--helper-threads-wait") == 0)
		return helper_threads_wait(atoi(argv[2]));
	if (!realpath(argv[0], self_path))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
