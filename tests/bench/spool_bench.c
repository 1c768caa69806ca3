/* Spool append cost per fsync policy, and the cost of reading and reopening.
 *
 * For each policy, appends N records of a 300-byte payload (a serialized
 * Event is about that) into a fresh spool and reports appends/s and the
 * mean, median and 99th percentile time of one append, fsyncs included.
 * INTERVAL is driven as the core loop would: spool_tick after every append
 * with a monotonic clock, interval 100 ms. Then, on the spool NEVER left:
 * a cursor reading everything, acking in batches, and a reopen (recovery
 * reads and checks every record).
 *
 *   mkdir -p build/bench && cc -O2 -Iuserspace -o build/bench/spool_bench \
 *       tests/bench/spool_bench.c userspace/spool.c userspace/log.c
 *   build/bench/spool_bench [dir on the disk to measure] [N for ALWAYS]
 *
 * The figures depend on the disk's flush latency (ALWAYS), the page cache
 * (the others) and the CPU's CRC32C instruction. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spool.h"

#define PAYLOAD 300

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void rm_spool(const char *dir)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", dir);
}

static struct spool *open_or_die(const char *dir, const struct spool_opts *o)
{
	struct spool *s;
	char err[512];

	if (spool_open(dir, o, &s, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	return s;
}

static void bench_policy(const char *base, const char *name, enum spool_fsync pol, size_t n, bool keep)
{
	struct spool_opts o = { .max_bytes = 1ull << 30, .segment_bytes = 1 << 20, .fsync = pol,
				.fsync_interval_ms = 100 };
	struct spool_stats st;
	uint8_t payload[PAYLOAD];
	uint64_t *lat, t0, t1, total;
	char dir[4096];
	struct spool *s;
	size_t i;

	snprintf(dir, sizeof(dir), "%s/%s", base, name);
	rm_spool(dir);
	lat = malloc(n * sizeof(*lat));
	if (!lat)
		exit(1);
	for (i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	s = open_or_die(dir, &o);
	total = now_ns();
	for (i = 0; i < n; i++) {
		t0 = now_ns();
		payload[0] = (uint8_t)i;
		if (spool_append(s, 1, payload, sizeof(payload), NULL)) {
			fprintf(stderr, "append: %s\n", spool_error(s));
			exit(1);
		}
		if (pol == SPOOL_FSYNC_INTERVAL)
			spool_tick(s, t0 / 1000000);
		t1 = now_ns();
		lat[i] = t1 - t0;
	}
	total = now_ns() - total;
	spool_stats(s, &st);
	spool_close(s);
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("%-8s %8zu appends  %10.0f appends/s  mean %8.2f us  p50 %8.2f us  p99 %8.2f us  max %9.1f us  fsyncs %" PRIu64 "\n",
	       name, n, (double)n / ((double)total / 1e9), (double)total / 1e3 / (double)n,
	       (double)lat[n / 2] / 1e3, (double)lat[n * 99 / 100] / 1e3, (double)lat[n - 1] / 1e3,
	       st.fsyncs);
	free(lat);
	if (!keep)
		rm_spool(dir);
}

static void bench_read_reopen(const char *base, size_t n)
{
	struct spool_opts o = { .max_bytes = 1ull << 30, .segment_bytes = 1 << 20,
				.fsync = SPOOL_FSYNC_NEVER };
	struct spool_cursor *c;
	struct spool_stats st;
	struct spool_item it;
	char dir[4096];
	struct spool *s;
	uint64_t t, got = 0, bytes = 0;

	snprintf(dir, sizeof(dir), "%s/never", base);
	t = now_ns();
	s = open_or_die(dir, &o);
	t = now_ns() - t;
	spool_stats(s, &st);
	printf("reopen   %" PRIu64 " records, %.1f MB: %.1f ms (every CRC checked)\n", st.records,
	       (double)st.bytes / 1e6, (double)t / 1e6);
	if (spool_cursor_open(s, 0, &c))
		exit(1);
	t = now_ns();
	while (spool_cursor_next(c, &it) == 1) {
		got++;
		bytes += it.len;
		if (got % 1000 == 0 && spool_ack(s, it.seq)) {
			fprintf(stderr, "ack: %s\n", spool_error(s));
			exit(1);
		}
	}
	t = now_ns() - t;
	printf("read+ack %" PRIu64 " records: %.1f ms, %.2f us/record, acks every 1000 (segments deleted as acked)\n",
	       got, (double)t / 1e6, (double)t / 1e3 / (double)(got ? got : 1));
	spool_cursor_close(c);
	spool_close(s);
	rm_spool(dir);
	(void)n;
}

int main(int argc, char **argv)
{
	const char *base = argc > 1 ? argv[1] : "/var/tmp/spool-bench";
	size_t n_always = argc > 2 ? strtoul(argv[2], NULL, 10) : 3000;
	size_t n_fast = 200000;

	if (mkdir(base, 0700) && errno != EEXIST) {
		perror(base);
		return 1;
	}
	printf("spool bench in %s, %d-byte payloads (record %d bytes on disk)\n", base, PAYLOAD,
	       24 + ((PAYLOAD + 7) & ~7));
	bench_policy(base, "always", SPOOL_FSYNC_ALWAYS, n_always, false);
	bench_policy(base, "interval", SPOOL_FSYNC_INTERVAL, n_fast, false);
	bench_policy(base, "never", SPOOL_FSYNC_NEVER, n_fast, true);
	bench_read_reopen(base, n_fast);
	rm_spool(base);
	return 0;
}
