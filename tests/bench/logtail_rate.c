/* How many lines per second one tailer delivers from a pre-written file read
 * from its start (the backlog case: the agent starting beside a big log).
 * One core: the tailer runs in the loop thread, the callback only counts.
 *
 *   make BUILD=build build/obj/logtail.o build/obj/loop.o build/obj/log.o
 *   cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Iuserspace -o build/logtail_rate \
 *       tests/bench/logtail_rate.c build/obj/logtail.o build/obj/loop.o build/obj/log.o
 *   build/logtail_rate [MB=200] [DIR=/tmp]
 *
 * The file is written first, so it is read from the page cache: this is
 * the tailer's own cost (syscalls, line splitting, callback), not the
 * disk's. Lines look like nginx "combined" access log lines, 90-250 bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logtail.h"
#include "loop.h"

struct count {
	uint64_t lines, bytes, sum;
};

static void on_line(void *arg, const char *line, size_t len, bool truncated)
{
	struct count *c = arg;

	(void)truncated;
	c->lines++;
	c->bytes += len;
	c->sum += (unsigned char)line[len / 2]; /* touch the line */
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t write_log(const char *path, uint64_t target, uint64_t *nlines)
{
	static const char *const paths[] = { "/", "/index.html", "/api/v1/items?page=2&sort=desc",
					     "/static/js/app.3f2a9c.js", "/login", "/wp-login.php",
					     "/images/banner-large-2048x1024.png" };
	static const char *const agents[] = {
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
		"curl/8.4.0", "Go-http-client/1.1",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
	};
	char buf[1 << 16];
	size_t bl = 0;
	uint64_t total = 0, n = 0;
	uint32_t x = 12345;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return 0;
	while (total < target) {
		x = x * 1103515245u + 12345u;
		int len = snprintf(buf + bl, sizeof(buf) - bl,
				   "10.%u.%u.%u - - [26/Nov/2026:07:%02u:%02u +0000] \"GET %s HTTP/1.1\" %u %u \"-\" \"%s\"\n",
				   (x >> 8) & 255, (x >> 16) & 255, (x >> 24) & 255, (x >> 3) % 60, (x >> 9) % 60,
				   paths[(x >> 5) % 7], (x >> 7) % 5 ? 200u : 404u, (x >> 11) % 100000,
				   agents[(x >> 13) % 4]);
		bl += (size_t)len;
		n++;
		if (bl > sizeof(buf) - 512) {
			if (write(fd, buf, bl) != (ssize_t)bl)
				return 0;
			total += bl;
			bl = 0;
		}
	}
	if (bl && write(fd, buf, bl) != (ssize_t)bl)
		return 0;
	total += bl;
	close(fd);
	*nlines = n;
	return total;
}

int main(int argc, char **argv)
{
	uint64_t mb = argc > 1 ? strtoull(argv[1], NULL, 10) : 200;
	const char *dir = argc > 2 ? argv[2] : "/tmp";
	char path[4096];
	struct count c = { 0 };
	struct logtail_status st;
	struct logtail *t = NULL;
	struct loop *l = loop_new();
	uint64_t nlines = 0, size;
	int rc;

	snprintf(path, sizeof(path), "%s/logtail_rate.%d.log", dir, (int)getpid());
	size = write_log(path, mb << 20, &nlines);
	if (!l || !size) {
		fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
		return 1;
	}
	struct logtail_opts o = { .path = path, .from_start = true };
	rc = logtail_open(l, &o, on_line, &c, &t);
	if (rc < 0) {
		fprintf(stderr, "logtail_open: %s\n", strerror(-rc));
		return 1;
	}
	double w0 = now_s(), c0 = cpu_s();
	do {
		if (loop_run_once(l, 1000) < 0)
			return 1;
		logtail_get_status(t, &st);
	} while (st.bytes < size);
	double w = now_s() - w0, cpu = cpu_s() - c0;

	printf("file: %.1f MB, %llu lines (avg %.0f bytes)\n", (double)size / 1048576.0, (unsigned long long)nlines,
	       (double)size / (double)nlines);
	printf("delivered: %llu lines in %.3f s wall, %.3f s CPU\n", (unsigned long long)c.lines, w, cpu);
	printf("rate: %.2f M lines/s, %.0f MB/s (wall); %.2f M lines/s per CPU-second\n", (double)c.lines / w / 1e6,
	       (double)size / w / 1048576.0, (double)c.lines / cpu / 1e6);
	logtail_close(t);
	loop_free(l);
	unlink(path);
	return c.lines == nlines ? 0 : 2;
}
