/* Cost of the syscall investigation (userspace/sysprobe.c) on syscalls.
 *
 * While attached, programs on raw_syscalls:sys_enter/sys_exit run on every
 * syscall of the host and every thread takes the slow syscall path, so the
 * figure that matters is ns per syscall of a cheap syscall: getpid(), made
 * with syscall(SYS_getpid) (never cached by libc) CALLS times in a row by
 * this process. Cells measured in the same run, interleaved over several
 * rounds, medians reported:
 *   state: nothing loaded / sysprobe loaded but not attached / attached /
 *   attached without the fork/exit programs (SYSPROBE_NO_FOLLOW; only
 *   when the variant follows forks: the difference to "attached" is what
 *   following descendants costs syscalls, expected nil)
 *   this process: not a target (every other process on the host while an
 *   investigation runs) / a target (onepanel during an investigation)
 * With nothing loaded the two columns are the same situation (run twice:
 * the difference is the noise). Then, in a separate pass with the kernel's
 * BPF run-time stats on (they cost two clock reads per run), the
 * in-program ns per run of each program (the fork/exit ones over FORKS
 * fork+exit+wait of a child that exits at once, made by this process as a
 * non-target and as a target, plus whatever else the host forks), and a
 * check that the target's getpid count equals the calls made.
 *
 *   sysprobe_cost [--rounds N] [--calls N] [--variant V] [--no-follow]
 * V: auto, tp_btf+task_storage, tp_btf+hash, raw_tp+hash. --no-follow: the
 * variant without the fork/exit programs throughout (SYSPROBE_NO_FOLLOW).
 * Built and run by tests/bench/sysprobe_cost.sh. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "sysprobe.h"

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static double getpid_ns(long calls)
{
	for (int i = 0; i < 10000; i++)   /* warm up */
		syscall(SYS_getpid);
	double t0 = now_ns();
	for (long i = 0; i < calls; i++)
		syscall(SYS_getpid);
	return (now_ns() - t0) / (double)calls;
}

static int cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define FORKS 200

static void fork_children(int n)
{
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0) {
			perror("fork");
			exit(1);
		}
		if (p == 0)
			_exit(0);
		waitpid(p, NULL, 0);
	}
}

static enum sysprobe_variant parse_variant(const char *v)
{
	if (!strcmp(v, "auto"))
		return SYSPROBE_AUTO;
	if (!strcmp(v, "tp_btf+task_storage"))
		return SYSPROBE_TP_BTF_TASK_STORAGE;
	if (!strcmp(v, "tp_btf+hash"))
		return SYSPROBE_TP_BTF_HASH;
	if (!strcmp(v, "raw_tp+hash"))
		return SYSPROBE_RAW_TP_HASH;
	fprintf(stderr, "unknown variant %s\n", v);
	exit(2);
}

static struct sysprobe *open_or_die(enum sysprobe_variant v)
{
	struct sysprobe *s;
	char why[256];
	int err = sysprobe_open_variant(&s, v, why, sizeof(why));
	if (err) {
		fprintf(stderr, "sysprobe_open: %s\n", why);
		exit(1);
	}
	return s;
}

static void must(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "%s: %s\n", what, strerror(-err));
		exit(1);
	}
}

enum { NONE, LOADED, ATTACHED, NOFOLLOW, NSTATES };
static const char *const state_names[NSTATES] = { "nothing loaded", "loaded, not attached", "attached",
						  "attached, no fork/exit" };

/* getpid() ns/call attached, this process a target or not: [0], [1]. */
static void attached_ns(enum sysprobe_variant v, long calls, pid_t self, double *out)
{
	struct sysprobe *s = open_or_die(v);
	must(sysprobe_attach(s), "sysprobe_attach");
	out[0] = getpid_ns(calls);
	must(sysprobe_add_target(s, self), "sysprobe_add_target");
	out[1] = getpid_ns(calls);
	must(sysprobe_detach(s), "sysprobe_detach");
	sysprobe_close(s);
}

int main(int argc, char **argv)
{
	int rounds = 5;
	long calls = 5000000;
	enum sysprobe_variant v = SYSPROBE_AUTO;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--calls") && i + 1 < argc)
			calls = atol(argv[++i]);
		else if (!strcmp(argv[i], "--variant") && i + 1 < argc)
			v = (enum sysprobe_variant)(((unsigned int)v & SYSPROBE_NO_FOLLOW) | (unsigned int)parse_variant(argv[++i]));
		else if (!strcmp(argv[i], "--no-follow"))
			v = (enum sysprobe_variant)((unsigned int)v | SYSPROBE_NO_FOLLOW);
		else {
			fprintf(stderr, "usage: %s [--rounds N] [--calls N] [--variant V] [--no-follow]\n", argv[0]);
			return 2;
		}
	}
	if (rounds < 1 || rounds > 100 || calls < 10000) {
		fprintf(stderr, "rounds 1..100, calls >= 10000\n");
		return 2;
	}

	double ns[NSTATES][2][100];   /* [state][target?][round] */
	const char *mode = "?";
	pid_t self = getpid();
	bool follows = false;
	for (int r = 0; r < rounds; r++) {
		ns[NONE][0][r] = getpid_ns(calls);
		ns[NONE][1][r] = getpid_ns(calls);
		struct sysprobe *s = open_or_die(v);
		mode = sysprobe_mode(s);
		follows = sysprobe_follows_forks(s);
		ns[LOADED][0][r] = getpid_ns(calls);
		must(sysprobe_add_target(s, self), "sysprobe_add_target");
		ns[LOADED][1][r] = getpid_ns(calls);
		must(sysprobe_remove_target(s, self), "sysprobe_remove_target");
		must(sysprobe_attach(s), "sysprobe_attach");
		ns[ATTACHED][0][r] = getpid_ns(calls);
		must(sysprobe_add_target(s, self), "sysprobe_add_target");
		ns[ATTACHED][1][r] = getpid_ns(calls);
		must(sysprobe_detach(s), "sysprobe_detach");
		sysprobe_close(s);
		double nf[2] = { 0, 0 };
		if (follows)
			attached_ns((enum sysprobe_variant)((unsigned int)v | SYSPROBE_NO_FOLLOW), calls, self, nf);
		ns[NOFOLLOW][0][r] = nf[0];
		ns[NOFOLLOW][1][r] = nf[1];
		fprintf(stderr,
			"round %d: none %.1f/%.1f  loaded %.1f/%.1f  attached %.1f/%.1f  no fork/exit %.1f/%.1f ns/call\n",
			r + 1, ns[NONE][0][r], ns[NONE][1][r], ns[LOADED][0][r], ns[LOADED][1][r], ns[ATTACHED][0][r],
			ns[ATTACHED][1][r], nf[0], nf[1]);
	}
	int nstates = follows ? NSTATES : NOFOLLOW;
	double med[NSTATES][2];
	for (int st = 0; st < nstates; st++)
		for (int t = 0; t < 2; t++)
			med[st][t] = median(ns[st][t], rounds);
	double base = (med[NONE][0] + med[NONE][1]) / 2;
	printf("sysprobe (%s%s): syscall(SYS_getpid) x %ld, median of %d rounds, ns/call (change vs nothing loaded)\n",
	       mode, follows ? ", follows forks" : ", forks not followed", calls, rounds);
	printf("  %-22s %22s %22s\n", "state", "not a target", "target");
	for (int st = 0; st < nstates; st++) {
		char a[2][40];
		for (int t = 0; t < 2; t++)
			snprintf(a[t], sizeof(a[t]), "%7.1f (%+6.1f %%)", med[st][t], 100 * (med[st][t] - base) / base);
		printf("  %-22s %22s %22s\n", state_names[st], a[0], a[1]);
	}

	/* In-program time per run, with the kernel's BPF stats on for this pass
	 * only; and the target's getpid count. */
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats_fd < 0) {
		printf("  (BPF run-time stats not available: %s)\n", strerror(errno));
		return 0;
	}
	struct sysprobe *s = open_or_die(v);
	struct bpfload_prog_stat p0[4], p1[4], p2[4];
	long n2 = calls / 5;
	must(sysprobe_attach(s), "sysprobe_attach");
	int np = sysprobe_prog_stats(s, p0, 4);
	if (np < 2)
		return 1;
	getpid_ns(n2);
	fork_children(FORKS);
	if (sysprobe_prog_stats(s, p1, 4) != np)
		return 1;
	must(sysprobe_add_target(s, self), "sysprobe_add_target");
	getpid_ns(n2);
	fork_children(FORKS);   /* followed: each child's bit set at fork, cleared at exit */
	if (sysprobe_prog_stats(s, p2, 4) != np)
		return 1;
	must(sysprobe_detach(s), "sysprobe_detach");
	close(stats_fd);
	printf("  in-program time (kernel BPF stats, separate pass of %ld calls and %d forks): ns/run (runs)\n", n2,
	       FORKS);
	for (int i = 0; i < np; i++) {
		double ru = (double)(p1[i].run_cnt - p0[i].run_cnt), tu = (double)(p1[i].run_time_ns - p0[i].run_time_ns);
		double rt = (double)(p2[i].run_cnt - p1[i].run_cnt), tt = (double)(p2[i].run_time_ns - p1[i].run_time_ns);
		printf("    %-20s not a target %6.1f ns (%7.0f)   target %6.1f ns (%7.0f)\n", p0[i].name, ru ? tu / ru : 0, ru,
		       rt ? tt / rt : 0, rt);
	}
	struct sysprobe_result *r;
	size_t n;
	must(sysprobe_read(s, &r, &n), "sysprobe_read");
	for (size_t i = 0; i < n; i++)
		if (r[i].nr == SYS_getpid)
			printf("  target's getpid counted: %llu (made %ld), p50 %.0f ns, p99 %.0f ns in the kernel\n",
			       (unsigned long long)r[i].count, n2 + 10000, r[i].p50_ns, r[i].p99_ns);
	sysprobe_results_free(r);
	sysprobe_close(s);
	return 0;
}
