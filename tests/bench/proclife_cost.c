/* Cost and latency of the always-on process lifecycle probes
 * (userspace/proclife.c): they run on every exec, fork and exit of the host.
 *
 * cost: a loop of fork + exec(/bin/true) + wait, timed per iteration, in
 * three states measured in the same run, interleaved over several rounds,
 * medians reported:
 *   none       no programs loaded
 *   untracked  programs attached, /bin/true neither matching nor tracked
 *              (what every other process on the host pays)
 *   tracked    programs attached with comm "true": every exec is a match,
 *              so each iteration emits EXEC and EXIT records, consumed by
 *              this process between iterations (the worst case, and more
 *              than onepanel's workers ever cost)
 * then the in-program time per run from the kernel's BPF stats, enabled
 * through a scoped fd for that pass only.
 *
 * latency: a child execs /bin/true every ms; the loop here receives the
 * events and reports CLOCK_BOOTTIME at delivery minus the event's ts_ns
 * (kernel hook -> callback), p50/p90/p99/max. With --transport both, the
 * ring buffer and the perf buffer are measured in alternating rounds of
 * the same run (the machine drifts; compare within one run).
 *
 *   proclife_cost [--rounds N] [--iters N] [--variant V] [--transport T] [--latency N]
 *   proclife_cost --hold [--comm C] [--variant V] [--transport T]
 *                     attach, print "ready V", stay attached until stdin closes
 * V: auto, tp_btf, raw_tp, tp. T: auto, ringbuf, perfbuf (both: --latency
 * only). Built and run by tests/bench/proclife_cost.sh. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "loop.h"
#include "proclife.h"

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static enum proclife_transport transport = PROCLIFE_TRANSPORT_AUTO;

static enum proclife_variant parse_variant(const char *s)
{
	if (!strcmp(s, "tp_btf"))
		return PROCLIFE_VARIANT_TP_BTF;
	if (!strcmp(s, "raw_tp"))
		return PROCLIFE_VARIANT_RAW_TP;
	if (!strcmp(s, "tp"))
		return PROCLIFE_VARIANT_TP;
	return PROCLIFE_VARIANT_AUTO;
}

struct sink {
	uint64_t events;
	uint64_t exits;
	uint64_t *lat;   /* latency samples (ns), NULL when not collecting */
	size_t nlat, maxlat;
};

static void on_event(void *arg, const struct proclife_event *e)
{
	struct sink *s = arg;

	s->events++;
	if (e->type == PROCLIFE_EXIT)
		s->exits++;
	if (s->lat && s->nlat < s->maxlat)
		s->lat[s->nlat++] = now_ns(CLOCK_BOOTTIME) - e->ts_ns;
}

static struct proclife *open_or_die(struct loop *l, const char *comm, enum proclife_variant v, struct sink *s)
{
	struct proclife_opts o = { .comm = comm, .variant = v, .transport = transport };
	struct proclife *p;
	char why[512];
	int err = proclife_open(l, &o, on_event, s, &p, why, sizeof(why));

	if (err) {
		fprintf(stderr, "proclife_open: %s\n", why);
		exit(1);
	}
	return p;
}

static void run_true(void)
{
	char *argv[] = { "/bin/true", NULL };
	pid_t pid = fork();
	int st;

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "/bin/true failed\n");
		exit(1);
	}
}

/* us per fork+exec+wait, averaged over iters. */
static double exec_loop(int iters)
{
	uint64_t t0 = now_ns(CLOCK_MONOTONIC);

	for (int i = 0; i < iters; i++)
		run_true();
	return (double)(now_ns(CLOCK_MONOTONIC) - t0) / iters / 1000.0;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void on_ctl(void *arg, int fd, uint32_t events)
{
	char buf[64];

	(void)events;
	if (read(fd, buf, sizeof(buf)) <= 0)
		loop_stop(arg);
}

/* Attach in this process and serve events on a loop until ctl_fd reaches
 * EOF; then print the program stats when asked. The measuring process never
 * loads anything itself: a process that loaded BPF objects is bigger, and
 * its own fork() gets slower, which is not what other processes pay. */
static void serve(const char *comm, enum proclife_variant v, int ctl_fd, int ready_fd, bool stats)
{
	struct loop *l = loop_new();
	struct sink s = { 0 };
	struct proclife *p = open_or_die(l, comm, v, &s);
	struct loop_io *in = loop_io_add(l, ctl_fd, EPOLLIN, on_ctl, l);
	char msg[32];
	int n;

	if (!in) {
		perror("loop_io_add");
		exit(1);
	}
	n = snprintf(msg, sizeof(msg), "ready %s/%s\n", proclife_variant(p), proclife_transport(p));
	if (write(ready_fd, msg, (size_t)n) != n)
		exit(1);
	loop_run(l);
	proclife_consume(p);
	if (stats) {
		struct bpfload_prog_stat ps[8];
		int np = proclife_prog_stats(p, ps, 8);

		printf("  in-program time, %s:", strcmp(comm, "true") ? "untracked" : "tracked (every exec matches)");
		for (int i = 0; i < np; i++)
			printf("  %s %.0f ns x%llu", ps[i].name,
			       ps[i].run_cnt ? (double)ps[i].run_time_ns / (double)ps[i].run_cnt : 0.0,
			       (unsigned long long)ps[i].run_cnt);
		printf("  (events %llu)\n", (unsigned long long)s.events);
		fflush(stdout);
	}
	loop_io_del(l, in);
	proclife_close(p);
	loop_free(l);
}

struct holder {
	pid_t pid;
	int ctl;     /* write end: close to stop it */
	char variant[24];  /* "flavour/transport" */
};

static struct holder holder_start(const char *comm, enum proclife_variant v, bool stats)
{
	struct holder h = { 0 };
	int ctl[2], ready[2];
	char buf[64] = "";
	ssize_t n;

	if (pipe(ctl) || pipe(ready))
		exit(1);
	fflush(stdout);
	h.pid = fork();
	if (h.pid < 0)
		exit(1);
	if (h.pid == 0) {
		close(ctl[1]);
		close(ready[0]);
		serve(comm, v, ctl[0], ready[1], stats);
		_exit(0);
	}
	close(ctl[0]);
	close(ready[1]);
	n = read(ready[0], buf, sizeof(buf) - 1);
	close(ready[0]);
	if (n <= 0 || strncmp(buf, "ready ", 6)) {
		fprintf(stderr, "holder failed to attach\n");
		exit(1);
	}
	buf[n] = '\0';
	sscanf(buf + 6, "%23s", h.variant);
	h.ctl = ctl[1];
	return h;
}

static void holder_stop(struct holder *h)
{
	close(h->ctl);
	waitpid(h->pid, NULL, 0);
}

static void cost(int rounds, int iters, enum proclife_variant v)
{
	double none[64], untracked[64], tracked[64];
	char variant[24] = "?";

	if (rounds > 64)
		rounds = 64;
	run_true();  /* warm the page cache */
	/* The order of the three states rotates from round to round, so no
	 * state always runs first (or right after a program load). */
	for (int r = 0; r < rounds; r++) {
		for (int k = 0; k < 3; k++) {
			int state = (r + k) % 3;
			struct holder h = { 0 };

			if (state) {
				h = holder_start(state == 1 ? "osa-nomatch" : "true", v, false);
				memcpy(variant, h.variant, sizeof(variant));
			}
			(state == 0 ? none : state == 1 ? untracked : tracked)[r] = exec_loop(iters);
			if (state)
				holder_stop(&h);
		}
	}
	printf("variant %s, %d rounds of %d fork+exec(/bin/true)+wait, median us per iteration:\n",
	       variant, rounds, iters);
	{
		double n = median(none, rounds), u = median(untracked, rounds), t = median(tracked, rounds);

		printf("  none       %8.1f us\n", n);
		printf("  untracked  %8.1f us  (%+.2f%%)\n", u, (u - n) / n * 100);
		printf("  tracked    %8.1f us  (%+.2f%%)  (every exec and exit an event)\n", t, (t - n) / n * 100);
	}
	fflush(stdout);

	/* In-program time: BPF stats on for this pass only. */
	{
		int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);

		if (fd < 0) {
			printf("  (BPF stats unavailable: %s)\n", strerror(errno));
			return;
		}
		for (int k = 0; k < 2; k++) {
			struct holder h = holder_start(k ? "true" : "osa-nomatch", v, true);

			exec_loop(iters);
			holder_stop(&h);
		}
		close(fd);
	}
}

/* n execs of /bin/true, one per ms, received on a loop here; the samples
 * are appended to s->lat. */
static void latency_run(int n, enum proclife_variant v, struct sink *s, struct proclife_counters *c,
			char *name, size_t namelen)
{
	struct loop *l = loop_new();
	struct proclife *p = open_or_die(l, "true", v, s);
	uint64_t end;
	pid_t driver;

	snprintf(name, namelen, "%s/%s", proclife_variant(p), proclife_transport(p));
	s->exits = 0;
	driver = fork();
	if (driver == 0) {
		struct timespec ms = { 0, 1000000 };

		for (int i = 0; i < n; i++) {
			run_true();
			nanosleep(&ms, NULL);  /* pacing of the load, not synchronisation */
		}
		_exit(0);
	}
	end = loop_now_ms() + 120000;
	while (s->exits < (uint64_t)n && loop_now_ms() < end)
		loop_run_once(l, 100);
	waitpid(driver, NULL, 0);
	if (proclife_counters(p, c))
		memset(c, 0, sizeof(*c));
	proclife_close(p);
	loop_free(l);
}

static void latency_report(const char *name, struct sink *s, const struct proclife_counters *c, int n)
{
	qsort(s->lat, s->nlat, sizeof(uint64_t), cmp_u64);
	if (s->nlat) {
		printf("latency, %s, %zu events (EXEC+EXIT of %d execs), kernel hook -> callback:\n", name, s->nlat, n);
		printf("  p50 %.1f us  p90 %.1f us  p99 %.1f us  max %.1f us\n", s->lat[s->nlat / 2] / 1e3,
		       s->lat[s->nlat * 9 / 10] / 1e3, s->lat[s->nlat * 99 / 100] / 1e3, s->lat[s->nlat - 1] / 1e3);
	}
	printf("  drops %llu, emitted %llu, delivered %llu, perf buffer lost records %llu\n",
	       (unsigned long long)c->ringbuf_drops, (unsigned long long)c->events_emitted,
	       (unsigned long long)c->events_delivered, (unsigned long long)c->perfbuf_lost);
}

/* both: ROUNDS alternating rounds of n/ROUNDS execs per transport. */
static void latency(int n, enum proclife_variant v, bool both)
{
	enum { ROUNDS = 4 };
	static const enum proclife_transport ts[2] = { PROCLIFE_TRANSPORT_RINGBUF, PROCLIFE_TRANSPORT_PERFBUF };
	int nt = both ? 2 : 1, per = both ? (n + ROUNDS - 1) / ROUNDS : n, rounds = both ? ROUNDS : 1;
	struct sink s[2] = { { 0 }, { 0 } };
	struct proclife_counters c[2] = { { 0 } }, one;
	char name[2][48] = { "?", "?" };

	for (int t = 0; t < nt; t++) {
		s[t].maxlat = (size_t)per * rounds * 2;
		s[t].lat = calloc(s[t].maxlat, sizeof(uint64_t));
	}
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < nt; k++) {
			int t = (r + k) % nt;  /* neither always goes first */

			if (both)
				transport = ts[t];
			latency_run(per, v, &s[t], &one, name[t], sizeof(name[t]));
			c[t].ringbuf_drops += one.ringbuf_drops;
			c[t].events_emitted += one.events_emitted;
			c[t].events_delivered += one.events_delivered;
			c[t].perfbuf_lost += one.perfbuf_lost;
		}
	for (int t = 0; t < nt; t++) {
		latency_report(name[t], &s[t], &c[t], per * rounds);
		free(s[t].lat);
	}
}

static void hold(const char *comm, enum proclife_variant v)
{
	serve(comm, v, 0, 1, false);
}

int main(int argc, char **argv)
{
	int rounds = 5, iters = 500, lat = 0;
	bool do_hold = false, both = false;
	const char *comm = "osa-nomatch";
	enum proclife_variant v = PROCLIFE_VARIANT_AUTO;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
			iters = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--latency") && i + 1 < argc)
			lat = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--variant") && i + 1 < argc)
			v = parse_variant(argv[++i]);
		else if (!strcmp(argv[i], "--comm") && i + 1 < argc)
			comm = argv[++i];
		else if (!strcmp(argv[i], "--transport") && i + 1 < argc) {
			const char *t = argv[++i];

			both = !strcmp(t, "both");
			transport = !strcmp(t, "ringbuf")   ? PROCLIFE_TRANSPORT_RINGBUF
				    : !strcmp(t, "perfbuf") ? PROCLIFE_TRANSPORT_PERFBUF
							    : PROCLIFE_TRANSPORT_AUTO;
		}
		else if (!strcmp(argv[i], "--hold"))
			do_hold = true;
		else {
			fprintf(stderr, "usage: %s [--rounds N] [--iters N] [--latency N] [--variant V] [--transport T] | --hold [--comm C]\n",
				argv[0]);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (do_hold)
		hold(comm, v);
	else if (lat > 0)
		latency(lat, v, both);
	else
		cost(rounds < 1 ? 1 : rounds, iters < 1 ? 1 : iters, v);
	return 0;
}
