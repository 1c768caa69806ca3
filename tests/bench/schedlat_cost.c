/* Cost of the always-on scheduler probes (userspace/schedlat.c): they run on
 * every wakeup and context switch of the host, so the figure that matters
 * is what a context-switch-heavy process pays per switch.
 *
 * A parent and a child play pipe ping-pong (one byte each way); one round
 * trip is two wakeups and, pinned to one CPU, two context switches (on two
 * CPUs, four: each side switches to and from idle). Three states are
 * measured in the same run, interleaved over several rounds, medians
 * reported:
 *   none       no programs loaded
 *   untracked  programs attached, ping-pong not a target (every other
 *              process on the host)
 *   tracked    programs attached, both ping-pong processes are targets
 *              (onepanel itself)
 *
 *   schedlat_cost [--rounds N] [--trips N] [--cpus same|two] [--variant V]
 *   schedlat_cost --hold [--variant V] [--stats] [--target TGID]...
 *       attach (tracking the given tgids), print "ready MODE", stay attached
 *       until stdin closes, then print the metrics in Prometheus text;
 *       --stats turns on the kernel's BPF run-time stats meanwhile
 * V: auto, tp_btf+task_storage, tp_btf+hash, raw_tp+hash.
 * Built and run by tests/bench/schedlat_cost.sh. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "buf.h"
#include "metrics.h"
#include "schedlat.h"

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		perror("sched_setaffinity");
		exit(1);
	}
}

/* ns per round trip; the child is tracked too when s is given. */
static double pingpong(long trips, int two_cpus, struct schedlat *s)
{
	int a[2], b[2];
	if (pipe(a) || pipe(b)) {
		perror("pipe");
		exit(1);
	}
	pin(0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		char c;
		close(a[1]);   /* else the parent's close never reaches us as EOF */
		close(b[0]);
		pin(two_cpus ? 1 : 0);
		for (;;) {
			if (read(a[0], &c, 1) != 1)
				_exit(0);
			if (write(b[1], &c, 1) != 1)
				_exit(1);
		}
	}
	if (s && (schedlat_add_target(s, getpid()) || schedlat_add_target(s, pid))) {
		fprintf(stderr, "schedlat_add_target failed\n");
		exit(1);
	}
	char c = 'x';
	for (int i = 0; i < 1000; i++)   /* warm up */
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
			exit(1);
	double t0 = now_ns();
	for (long i = 0; i < trips; i++)
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
			exit(1);
	double t1 = now_ns();
	close(a[1]);
	close(b[0]);
	close(a[0]);
	close(b[1]);
	waitpid(pid, NULL, 0);
	if (s) {
		schedlat_remove_target(s, getpid());
		schedlat_remove_target(s, pid);
	}
	return (t1 - t0) / (double)trips;
}

static int cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

struct prog_cost {
	char name[32];
	double runs, ns;
};

/* phase 0: remember the counters; phase 1: keep the difference. */
static void prog_costs(struct schedlat *s, struct prog_cost pc[3], int phase)
{
	static const char *const progs[] = { "schedlat_switch", "schedlat_wakeup", "schedlat_wakeup_new" };
	const char *sfx = strncmp(schedlat_mode(s), "raw_tp", 6) == 0 ? "raw" : "btf";
	struct metrics *m = metrics_new();
	if (!m || schedlat_collect(s, m, NULL) != 0) {
		fprintf(stderr, "schedlat_collect failed\n");
		exit(1);
	}
	for (int i = 0; i < 3; i++) {
		double runs = 0, secs = 0;
		snprintf(pc[i].name, sizeof(pc[i].name), "%s_%s", progs[i], sfx);
		metrics_lookup(m, "oneshield_agent_bpf_prog_runs_total", &runs, "prog", pc[i].name, NULL);
		metrics_lookup(m, "oneshield_agent_bpf_prog_run_seconds_total", &secs, "prog", pc[i].name, NULL);
		if (phase == 0) {
			pc[i].runs = runs;
			pc[i].ns = secs * 1e9;
		} else {
			pc[i].runs = runs - pc[i].runs;
			pc[i].ns = secs * 1e9 - pc[i].ns;
		}
	}
	metrics_free(m);
}

static enum schedlat_variant parse_variant(const char *v)
{
	if (!strcmp(v, "auto"))
		return SCHEDLAT_AUTO;
	if (!strcmp(v, "tp_btf+task_storage"))
		return SCHEDLAT_TP_BTF_TASK_STORAGE;
	if (!strcmp(v, "tp_btf+hash"))
		return SCHEDLAT_TP_BTF_HASH;
	if (!strcmp(v, "raw_tp+hash"))
		return SCHEDLAT_RAW_TP_HASH;
	fprintf(stderr, "unknown variant %s\n", v);
	exit(2);
}

static struct schedlat *open_or_die(enum schedlat_variant v)
{
	struct schedlat *s;
	char why[256];
	int err = schedlat_open_variant(&s, v, why, sizeof(why));
	if (err) {
		fprintf(stderr, "schedlat_open: %s\n", why);
		exit(1);
	}
	return s;
}

int main(int argc, char **argv)
{
	int rounds = 5, two = 0, hold = 0, stats = 0;
	long trips = 200000;
	enum schedlat_variant v = SCHEDLAT_AUTO;
	pid_t targets[64];
	int ntargets = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--trips") && i + 1 < argc)
			trips = atol(argv[++i]);
		else if (!strcmp(argv[i], "--cpus") && i + 1 < argc)
			two = !strcmp(argv[++i], "two");
		else if (!strcmp(argv[i], "--variant") && i + 1 < argc)
			v = parse_variant(argv[++i]);
		else if (!strcmp(argv[i], "--hold"))
			hold = 1;
		else if (!strcmp(argv[i], "--stats"))
			stats = 1;
		else if (!strcmp(argv[i], "--target") && i + 1 < argc && ntargets < 64)
			targets[ntargets++] = (pid_t)atoi(argv[++i]);
		else {
			fprintf(stderr,
				"usage: %s [--rounds N] [--trips N] [--cpus same|two] [--variant V]\n"
				"       %s --hold [--variant V] [--stats] [--target TGID]...\n",
				argv[0], argv[0]);
			return 2;
		}
	}
	if (rounds < 1 || rounds > 100 || trips < 1000) {
		fprintf(stderr, "rounds 1..100, trips >= 1000\n");
		return 2;
	}

	if (hold) {
		int stats_fd = stats ? bpf_enable_stats(BPF_STATS_RUN_TIME) : -1;
		struct schedlat *s = open_or_die(v);
		for (int i = 0; i < ntargets; i++)
			if (schedlat_add_target(s, targets[i]) != 0) {
				fprintf(stderr, "cannot track %d\n", (int)targets[i]);
				return 1;
			}
		printf("ready %s\n", schedlat_mode(s));
		fflush(stdout);
		char c;
		while (read(0, &c, 1) > 0)
			;
		struct metrics *m = metrics_new();
		struct buf b;
		buf_init(&b);
		if (m && schedlat_collect(s, m, NULL) == 0 && metrics_render_prom(m, NULL, &b) == 0)
			fwrite(b.data, 1, b.len, stdout);
		buf_free(&b);
		metrics_free(m);
		schedlat_close(s);
		if (stats_fd >= 0)
			close(stats_fd);
		return 0;
	}

	double none[100], untracked[100], tracked[100];
	const char *mode = "?";
	for (int r = 0; r < rounds; r++) {
		none[r] = pingpong(trips, two, NULL);
		struct schedlat *s = open_or_die(v);
		mode = schedlat_mode(s);
		untracked[r] = pingpong(trips, two, NULL);
		tracked[r] = pingpong(trips, two, s);
		schedlat_close(s);
		fprintf(stderr, "round %d: none %.0f  untracked %.0f  tracked %.0f ns/round trip\n", r + 1, none[r],
			untracked[r], tracked[r]);
	}
	/* In-program time per run from the kernel's BPF stats, enabled only for
	 * this extra pass through an fd (they cost two clock reads per run, so
	 * the timed rounds above run without them). */
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	struct prog_cost pc_u[3], pc_t[3];
	if (stats_fd >= 0) {
		struct schedlat *s = open_or_die(v);
		prog_costs(s, pc_u, 0);
		pingpong(trips, two, NULL);
		prog_costs(s, pc_u, 1);
		prog_costs(s, pc_t, 0);
		pingpong(trips, two, s);
		prog_costs(s, pc_t, 1);
		schedlat_close(s);
		close(stats_fd);
	}
	qsort(none, (size_t)rounds, sizeof(double), cmp);
	qsort(untracked, (size_t)rounds, sizeof(double), cmp);
	qsort(tracked, (size_t)rounds, sizeof(double), cmp);
	double n = none[rounds / 2], u = untracked[rounds / 2], t = tracked[rounds / 2];
	int sw = two ? 4 : 2;   /* context switches per round trip */
	printf("schedlat (%s), pipe ping-pong on %s CPU%s, %ld round trips x %d rounds, medians:\n", mode,
	       two ? "two" : "one", two ? "s" : "", trips, rounds);
	printf("  none       %8.0f ns/round trip\n", n);
	printf("  untracked  %8.0f ns/round trip  %+6.0f ns (%+5.1f %%), %+5.0f ns per context switch\n", u, u - n,
	       100 * (u - n) / n, (u - n) / sw);
	printf("  tracked    %8.0f ns/round trip  %+6.0f ns (%+5.1f %%), %+5.0f ns per context switch\n", t, t - n,
	       100 * (t - n) / n, (t - n) / sw);
	if (stats_fd < 0) {
		printf("  (BPF run-time stats not available: %s)\n", strerror(errno));
		return 0;
	}
	printf("  in-program time (kernel BPF stats, separate pass): ns/run, runs per round trip\n");
	for (int i = 0; i < 3; i++)
		printf("    %-24s untracked %5.0f ns x %4.2f   tracked %5.0f ns x %4.2f\n", pc_u[i].name,
		       pc_u[i].runs ? pc_u[i].ns / pc_u[i].runs : 0, pc_u[i].runs / (double)trips,
		       pc_t[i].runs ? pc_t[i].ns / pc_t[i].runs : 0, pc_t[i].runs / (double)trips);
	return 0;
}
