/* libFuzzer target for the access-log parser and the statistics it feeds.
 *
 * The first byte chooses the format: combined, common, JSON lines with the
 * default map, JSON with a map taken from an escape=json format, a text
 * format holding every known variable, or one with fixed-width adjacent
 * variables and multi-byte literals. The rest is split into lines, each
 * parsed from an exact-size heap copy and accounted in a logstats, which
 * is collected into a metric snapshot at the end when bits 3-5 of the
 * first byte are 001.
 *
 *   make BUILD=build-log build-log/fuzz/fuzz_access
 *   build-log/fuzz/fuzz_access -max_total_time=60 -max_len=8192 tests/fuzz/corpus/fuzz_access */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logfmt.h"
#include "logstats.h"
#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NFMT 6

static const char every[] =
	"$remote_addr|$remote_user|$time_local|$time_iso8601|$msec|$request|$request_method|"
	"$request_uri|$uri|$server_protocol|$status|$body_bytes_sent|$bytes_sent|$request_length|"
	"$request_time|$upstream_response_time|$upstream_connect_time|$upstream_header_time|"
	"$upstream_status|$upstream_addr|$http_referer|$http_user_agent|$http_x_forwarded_for|$host|"
	"$server_name|$scheme";
static const char fixed[] = "[$time_iso8601$status] <<$request_time>> $upstream_status::::::$http_user_agent";
static const char jsonfmt[] = "{\"t\":\"$time_local\",\"s\":$status,\"r\":\"$request\",\"u\":\"$upstream_response_time\","
			      "\"rt\":$request_time,\"ua\":\"$http_user_agent\"}";

static struct logfmt *formats[NFMT];

static void init(void)
{
	struct logfmt_err err;
	const char *c = logfmt_preset("combined"), *k = logfmt_preset("common");

	if (logfmt_compile(c, strlen(c), &formats[0], &err) || logfmt_compile(k, strlen(k), &formats[1], &err) ||
	    logfmt_compile_json(NULL, NULL, 0, &formats[2], &err) ||
	    logfmt_compile_json_format(jsonfmt, strlen(jsonfmt), &formats[3], &err) ||
	    logfmt_compile(every, strlen(every), &formats[4], &err) ||
	    logfmt_compile(fixed, strlen(fixed), &formats[5], &err))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct metrics *m;
	const char *p, *end;
	struct logstats *s;
	struct logfmt *f;
	double now = 1000;

	if (!formats[0])
		init();
	if (!m)
		m = metrics_new();
	if (size < 1 || !m)
		return 0;
	f = formats[data[0] % NFMT];
	s = logstats_new();
	if (!s)
		return 0;
	p = (const char *)data + 1;
	end = (const char *)data + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		size_t n = (size_t)(e - p);
		char *copy = malloc(n ? n : 1);
		if (!copy)
			break;
		memcpy(copy, p, n);
		logstats_feed(s, f, copy, n, now);
		now += n % 7;   /* move the window along */
		free(copy);
		p = e + 1;
	}
	/* collecting costs more than parsing a short input: every 8th format byte */
	if ((data[0] & 0x38) == 0x08) {
		if (logstats_collect(s, NULL, now, m, "fuzz"))
			abort();
		metrics_reset(m);
	}
	logstats_free(s);
	return 0;
}
