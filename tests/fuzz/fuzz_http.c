/* libFuzzer target for the REST request paths (userspace/rest.c) through the
 * real libmicrohttpd daemon: each input is the raw bytes a client sends on
 * one connection (request line, query string, headers, body, pipelined
 * requests), fed through a socketpair handed to the daemon with
 * rest_add_connection, and the core loop is run until the daemon has
 * answered and closed the connection.
 *
 * The agent behind it is built once: journal, core loop, metric snapshot,
 * syscall investigations (procfs mode: a start is refused), and a onepanel
 * section whose allowed directory is a fresh directory under /dev/shm with
 * one file in it, so GET /v1/config, /v1/config/file?path= and the path
 * checks of POST /v1/config/apply run for real. The directory has a fixed
 * name (MANAGED_DIR, emptied at start) so that seeds can name its file. Its validate_command is
 * /bin/false: an apply that gets that far writes, fails validation and is
 * rolled back, so the directory never changes.
 *
 * Properties, besides ASan/UBSan cleanliness and no leak:
 * - the connection is closed by the server within a deadline (no request
 *   can wedge a connection or the loop);
 * - whatever the server sends starts with "HTTP/1.";
 * - a JSON answer with a Content-Length parses as JSON;
 * - the managed file is unchanged afterwards.
 *
 * FUZZ_HTTP_VERBOSE=1 in the environment turns on the agent's debug log.
 * Under ASan the RSS grows to ~500 MiB: that is its quarantine of freed
 * memory (ASAN_OPTIONS=quarantine_size_mb=1 keeps it flat), not a leak.
 *
 *   make BUILD=build-fuzz build-fuzz/fuzz/fuzz_http
 *   build-fuzz/fuzz/fuzz_http -max_total_time=60 -max_len=8192 tests/fuzz/corpus/fuzz_http */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "cfgapply.h"
#include "config.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "onepanel.h"
#include "probes.h"
#include "rest.h"

#include "fuzzdir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEADLINE_MS 10000
#define MANAGED_DIR "/dev/shm/oneshield-fuzz-http"
#define MANAGED_CONTENT "listen 127.0.0.1:8080;\n"

static struct agent A;
static struct rest *R;
static char managed[256];

static void die(const char *what)
{
	fprintf(stderr, "fuzz_http: %s\n", what);
	abort();
}

static uint16_t free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || getsockname(fd, (struct sockaddr *)&sin, &len))
		die("no free port");
	close(fd);
	return ntohs(sin.sin_port);
}

static void setup(void)
{
	const char *dir = MANAGED_DIR;
	char yaml[1024], err[512], listen[32];
	log_init(getenv("FUZZ_HTTP_VERBOSE") != NULL);
	fuzz_empty_dir(dir);	/* leftovers of an earlier run */
	if (mkdir(dir, 0700) && errno != EEXIST)
		die("mkdir " MANAGED_DIR);
	snprintf(managed, sizeof(managed), "%s/onepanel.conf", dir);
	FILE *f = fopen(managed, "w");
	if (!f || fputs(MANAGED_CONTENT, f) < 0 || fclose(f))
		die("writing the managed file");
	snprintf(yaml, sizeof(yaml),
		 "onepanel:\n  binary: /nonexistent/onepanel\n  config_file: %s\n  allowed_dirs: [%s]\n"
		 "  validate_command: /bin/false\n"
		 "api:\n  grpc_listen: off\n  max_sse_clients: 4\nebpf:\n  enabled: false\n",
		 managed, dir);
	if (config_parse(yaml, strlen(yaml), "fuzz_http", &A.cfg, err, sizeof(err)))
		die(err);
	A.mode = "procfs";
	A.loop = loop_new();
	A.journal = journal_new(256);
	if (!A.loop || !A.journal)
		die("loop/journal");
	A.onepanel = onepanel_new(A.loop, A.journal, &A.cfg->onepanel);
	A.cfgapply = cfgapply_new(&A);
	A.probes = probes_new(A.loop, A.onepanel, &A.cfg->ebpf);
	if (!A.onepanel || !A.cfgapply || !A.probes || agent_collect(&A))
		die("agent");
	for (int i = 0; i < 20 && !R; i++) {
		snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
		rest_start(&A, listen, NULL, 0600, A.cfg->api.max_sse_clients, NULL, &A.cfg->api.limits, &R, err,
			   sizeof(err));
	}
	if (!R)
		die(err);
}

/* The first response: status line, and a JSON body that parses. */
static void check_response(const struct buf *out, const uint8_t *req, size_t reqlen)
{
	if (out->len == 0)
		return; /* closed without an answer: MHD's choice for some garbage */
	if (out->len < 7 || memcmp(out->data, "HTTP/1.", 7) != 0)
		die("answer does not start with HTTP/1.");
	const char *hdr_end = memmem(out->data, out->len, "\r\n\r\n", 4);
	if (!hdr_end)
		return;
	/* A HEAD answer has the GET's Content-Length and no body. Which method
	 * libmicrohttpd parsed is not for this harness to guess from the raw
	 * bytes (it skips empty lines before the request line, and a line cut
	 * short by a NUL counts as empty), so an answer with nothing after its
	 * headers but the next answer (of a pipelined request), to an input
	 * that says HEAD anywhere, is taken as HEAD's. */
	const char *after = hdr_end + 4;
	size_t rest = (size_t)(out->data + out->len - after);
	if ((rest == 0 || (rest >= 7 && memcmp(after, "HTTP/1.", 7) == 0)) && memmem(req, reqlen, "HEAD", 4))
		return;
	size_t hlen = (size_t)(hdr_end - out->data);
	const char *ct = memmem(out->data, hlen, "\r\nContent-Type: application/json", 32);
	const char *cl = memmem(out->data, hlen, "\r\nContent-Length: ", 18);
	if (!ct || !cl)
		return;
	size_t n = strtoul(cl + 18, NULL, 10);
	const char *body = hdr_end + 4;
	if ((size_t)(out->data + out->len - body) < n)
		die("JSON body shorter than its Content-Length");
	cJSON *j = cJSON_ParseWithLength(body, n);
	if (!j)
		die("JSON answer does not parse");
	cJSON_Delete(j);
}

static void check_managed(void)
{
	char buf[256];
	FILE *f = fopen(managed, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	if (n != strlen(MANAGED_CONTENT) || memcmp(buf, MANAGED_CONTENT, n) != 0)
		die("the managed file changed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	struct buf out;
	char rbuf[16384];
	size_t off = 0;
	bool shut = false, eof = false, written_before_run = false;

	if (!R)
		setup();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv))
		die("socketpair");
	if (rest_add_connection(R, sv[1]))
		die("rest_add_connection");
	buf_init(&out);
	uint64_t deadline = loop_now_ms() + DEADLINE_MS;
	while (!eof) {
		if (loop_now_ms() > deadline)
			die("the server did not close the connection within the deadline");
		/* The half-close comes only after the daemon has run once on the
		 * last bytes: it watches its sockets edge-triggered and, having
		 * read less than a buffer's worth, waits for the next edge, so an
		 * EOF that arrived together with the data would only be noticed at
		 * its connection timeout (60 s; a real client that half-closes
		 * right after a partial request is held that long too). */
		if (off == size && !shut && written_before_run) {
			shutdown(sv[0], SHUT_WR);
			shut = true;
		}
		written_before_run = off == size;
		while (off < size) {
			ssize_t w = write(sv[0], data + off, size - off);
			if (w <= 0)
				break; /* full, or the server closed: the rest is not read */
			off += (size_t)w;
		}
		loop_run_once(A.loop, shut ? 5 : 0);
		for (;;) {
			ssize_t r = read(sv[0], rbuf, sizeof(rbuf));
			if (r > 0) {
				if (out.len < (1u << 20))
					buf_append(&out, rbuf, (size_t)r);
				continue;
			}
			if (r == 0 || (errno != EAGAIN && errno != EINTR))
				eof = true;
			break;
		}
		if (eof && !shut)
			break; /* closed before reading everything: fine */
	}
	close(sv[0]);
	/* let an apply that is still running (validator) finish and restore */
	while (cfgapply_busy(A.cfgapply)) {
		if (loop_now_ms() > deadline)
			die("a config apply did not finish within the deadline");
		loop_run_once(A.loop, 5);
	}
	check_response(&out, data, size);
	buf_free(&out);
	check_managed();
	return 0;
}
