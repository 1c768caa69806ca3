/* Throughput of the access-log parser with statistics, on one core.
 *
 *   logs_bench FILE [FORMAT|combined|common|json] [ROUNDS]
 *
 * The file is mapped (MAP_POPULATE; mapping and unmapping are part of the
 * timed work, and their share is printed),
 * split into lines with memchr, and every line goes through logstats_feed()
 * (logfmt_parse + logstats_add, or the malformed counter), as the agent
 * does. ROUNDS runs (default 3) each with a fresh logstats; prints the
 * best and median in MB/s (1 MB = 10^6 bytes) and lines/s, then the status
 * class counts of the last round so the totals can be compared with awk,
 * and one machine-readable line:
 *   RESULT bytes=B lines=L malformed=M best_s=S median_s=S */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logfmt.h"
#include "logstats.h"
#include "metrics.h"

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *path, *spec = "combined";
	struct logfmt *f = NULL;
	struct logfmt_err err;
	int rounds = 3, fd, rc;
	struct stat st;
	double t[32], tmap[32];
	uint64_t lines = 0;
	struct logstats *s = NULL;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE [FORMAT|combined|common|json] [ROUNDS]\n", argv[0]);
		return 2;
	}
	path = argv[1];
	if (argc > 2)
		spec = argv[2];
	if (argc > 3)
		rounds = atoi(argv[3]);
	if (rounds < 1 || rounds > 32)
		rounds = 3;
	if (!strcmp(spec, "json"))
		rc = logfmt_compile_json(NULL, NULL, 0, &f, &err);
	else {
		const char *fmt = logfmt_preset(spec) ? logfmt_preset(spec) : spec;
		rc = logfmt_compile(fmt, strlen(fmt), &f, &err);
	}
	if (rc) {
		fprintf(stderr, "format: %s\n", err.msg);
		return 1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	for (int r = 0; r < rounds; r++) {
		logstats_free(s);
		s = logstats_new();
		lines = 0;
		double t0 = mono();
		const char *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (base == MAP_FAILED) {
			fprintf(stderr, "mmap: %s\n", strerror(errno));
			return 1;
		}
		double t1 = mono();
		const char *p = base, *end = base + st.st_size;
		double now = 1000.0;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			const char *e = nl ? nl : end;
			logstats_feed(s, f, p, (size_t)(e - p), now);
			lines++;
			if (!(lines & 0xffff))
				now += 0.5;   /* the caller's clock, advanced per batch */
			p = e + 1;
		}
		double t2 = mono();
		munmap((void *)base, (size_t)st.st_size);
		t[r] = mono() - t0;
		tmap[r] = t[r] - (t2 - t1);
	}
	int bi = 0;
	for (int r = 1; r < rounds; r++)
		if (t[r] < t[bi])
			bi = r;
	double best_map = tmap[bi];
	qsort(t, (size_t)rounds, sizeof(t[0]), cmp);
	double mb = (double)st.st_size / 1e6;
	printf("parsed %.0f MB, %llu lines: best %.3f s = %.0f MB/s, %.2f M lines/s (of which mmap+munmap %.3f s); "
	       "median %.3f s = %.0f MB/s\n",
	       mb, (unsigned long long)lines, t[0], mb / t[0], (double)lines / t[0] / 1e6, best_map, t[rounds / 2],
	       mb / t[rounds / 2]);

	struct metrics *m = metrics_new();
	double v, mal = 0;
	logstats_collect(s, NULL, 1000.0, m, "bench");
	printf("status classes:");
	const char *cls[] = { "1xx", "2xx", "3xx", "4xx", "5xx", "other" };
	for (int i = 0; i < 6; i++)
		if (!metrics_lookup(m, "onepanel_http_requests_total", &v, "status_class", cls[i], NULL))
			printf(" %s=%.0f", cls[i], v);
	metrics_lookup(m, "onepanel_log_lines_malformed_total", &mal, NULL);
	printf(" malformed=%.0f\n", mal);
	printf("RESULT bytes=%lld lines=%llu malformed=%.0f best_s=%.6f median_s=%.6f\n", (long long)st.st_size,
	       (unsigned long long)lines, mal, t[0], t[rounds / 2]);
	metrics_free(m);
	logstats_free(s);
	logfmt_free(f);
	close(fd);
	return 0;
}
