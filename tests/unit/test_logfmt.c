/* Unit tests for logfmt.c: the presets on hand-written nginx lines, every
 * variable, upstream lists, $request splitting, JSON lines (default map,
 * explicit map, map from an escape=json format), compile errors with their
 * positions, and malformed input (truncated, garbage, NUL bytes, invalid
 * UTF-8, 10 MB lines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logfmt.h"

static struct logfmt *compile(const char *fmt)
{
	struct logfmt *f = NULL;
	struct logfmt_err err = { 0 };
	int rc = logfmt_compile(fmt, strlen(fmt), &f, &err);

	if (rc)
		fail_msg("compile \"%s\": %d %s", fmt, rc, err.msg);
	return f;
}

static struct logfmt *preset(const char *name)
{
	const char *fmt = logfmt_preset(name);

	assert_non_null(fmt);
	return compile(fmt);
}

static int parse(const struct logfmt *f, const char *line, struct logrec *r)
{
	return logfmt_parse(f, line, strlen(line), r);
}

#define assert_span(r, var, want) do {							\
	const struct logrec *r_ = (r);							\
	const char *w_ = (want);							\
	if (!logrec_has(r_, var))							\
		fail_msg("%s: absent, expected \"%s\"", #var, w_);			\
	if (r_->v[var].len != strlen(w_) || memcmp(r_->v[var].p, w_, strlen(w_)))	\
		fail_msg("%s = \"%.*s\", expected \"%s\"", #var, (int)r_->v[var].len,	\
			 r_->v[var].p, w_);						\
} while (0)

#define assert_absent(r, var) do {							\
	if (logrec_has((r), var))							\
		fail_msg("%s present: \"%.*s\"", #var, (int)(r)->v[var].len, (r)->v[var].p); \
} while (0)

/* ---- presets ---- */

static void test_combined(void **state)
{
	(void)state;
	struct logfmt *f = preset("combined");
	struct logrec r;

	assert_string_equal(logfmt_preset("combined"),
			    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
			    "\"$http_referer\" \"$http_user_agent\"");
	assert_int_equal(parse(f, "203.0.113.7 - - [02/Jan/2024:03:04:05 +0000] \"GET /index.html?x=1 HTTP/1.1\" "
				  "200 612 \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0\"",
			       &r), 0);
	assert_span(&r, LV_REMOTE_ADDR, "203.0.113.7");
	assert_absent(&r, LV_REMOTE_USER);
	assert_span(&r, LV_TIME_LOCAL, "02/Jan/2024:03:04:05 +0000");
	assert_span(&r, LV_REQUEST, "GET /index.html?x=1 HTTP/1.1");
	assert_span(&r, LV_REQUEST_METHOD, "GET");
	assert_span(&r, LV_REQUEST_URI, "/index.html?x=1");
	assert_span(&r, LV_SERVER_PROTOCOL, "HTTP/1.1");
	assert_int_equal(r.method, HM_GET);
	assert_int_equal(r.proto, HP_1_1);
	assert_int_equal(r.status, 200);
	assert_true(logrec_has(&r, LV_BODY_BYTES_SENT));
	assert_int_equal(r.body_bytes_sent, 612);
	assert_span(&r, LV_HTTP_REFERER, "https://example.com/");
	assert_span(&r, LV_HTTP_USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0");
	assert_absent(&r, LV_REQUEST_TIME);
	assert_absent(&r, LV_BYTES_SENT);

	/* IPv6, a user, HTTP/2, nginx escapes in the request and the agent */
	assert_int_equal(parse(f, "2001:db8::1 - alice [31/Dec/2023:23:59:59 +0100] \"POST /api/v1/x?q=\\x22a\\x22 "
				  "HTTP/2.0\" 201 0 \"-\" \"curl \\x22quoted\\x22 \\xE2\\x98\\x83\"", &r), 0);
	assert_span(&r, LV_REMOTE_ADDR, "2001:db8::1");
	assert_span(&r, LV_REMOTE_USER, "alice");
	assert_int_equal(r.method, HM_POST);
	assert_int_equal(r.proto, HP_2_0);
	assert_span(&r, LV_REQUEST_URI, "/api/v1/x?q=\\x22a\\x22");
	assert_int_equal(r.status, 201);
	assert_int_equal(r.body_bytes_sent, 0);
	assert_absent(&r, LV_HTTP_REFERER);
	assert_span(&r, LV_HTTP_USER_AGENT, "curl \\x22quoted\\x22 \\xE2\\x98\\x83");

	/* a TLS handshake on a plain port: binary request line, escaped */
	assert_int_equal(parse(f, "198.51.100.2 - - [02/Jan/2024:03:04:05 +0000] \"\\x16\\x03\\x01\\x00\\xF4\\x01\" "
				  "400 157 \"-\" \"-\"", &r), 0);
	assert_int_equal(r.method, HM_OTHER);
	assert_int_equal(r.proto, HP_NONE);
	assert_absent(&r, LV_REQUEST_URI);
	assert_int_equal(r.status, 400);
	assert_absent(&r, LV_HTTP_USER_AGENT);

	/* no request line at all */
	assert_int_equal(parse(f, "198.51.100.2 - - [02/Jan/2024:03:04:05 +0000] \"-\" 400 0 \"-\" \"-\"", &r), 0);
	assert_absent(&r, LV_REQUEST);
	assert_int_equal(r.method, HM_NONE);
	assert_int_equal(r.proto, HP_NONE);

	/* a user agent with an unescaped quote (not nginx, but the last field
	 * is anchored at the end of the line) and a trailing CR */
	assert_int_equal(parse(f, "10.0.0.1 - - [02/Jan/2024:03:04:05 +0000] \"HEAD / HTTP/1.0\" 304 0 \"-\" "
				  "\"a \" b\"\r", &r), 0);
	assert_span(&r, LV_HTTP_USER_AGENT, "a \" b");
	assert_int_equal(r.method, HM_HEAD);
	assert_int_equal(r.proto, HP_1_0);
	logfmt_free(f);
}

static void test_common(void **state)
{
	(void)state;
	struct logfmt *f = preset("common");
	struct logrec r;

	assert_null(logfmt_preset("main"));
	assert_null(logfmt_preset(NULL));
	assert_int_equal(parse(f, "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" "
				  "200 2326", &r), 0);
	assert_span(&r, LV_REMOTE_USER, "frank");
	assert_span(&r, LV_TIME_LOCAL, "10/Oct/2000:13:55:36 -0700");
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_bytes_sent, 2326);
	assert_int_equal(r.method, HM_GET);
	/* a combined line is not common: trailing text after the size */
	assert_int_equal(parse(f, "127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 2326 \"-\" \"-\"",
			       &r), -EINVAL);
	logfmt_free(f);
}

/* ---- every variable ---- */

static void test_every_variable(void **state)
{
	(void)state;
	struct logfmt *f = compile(
		"$remote_addr|$remote_user|$time_local|$time_iso8601|$msec|$request|$request_method|"
		"$request_uri|$uri|$server_protocol|$status|$body_bytes_sent|$bytes_sent|$request_length|"
		"$request_time|$upstream_response_time|$upstream_connect_time|$upstream_header_time|"
		"$upstream_status|$upstream_addr|$http_referer|$http_user_agent|$http_x_forwarded_for|$host|"
		"$server_name|${scheme}");
	struct logrec r;

	assert_int_equal(parse(f, "10.1.2.3|bob|02/Jan/2024:03:04:05 +0000|2024-01-02T03:04:05+00:00|"
				  "1704164645.123|PUT /a/b?c HTTP/1.1|PATCH|/a/b?c|/a/b|HTTP/3.0|503|100|350|720|"
				  "1.250|0.100, 0.200 : 0.050|0.001, 0.002|0.090|502, 503|10.0.0.1:80, 10.0.0.2:80|"
				  "https://r/|UA/1.0|1.1.1.1, 2.2.2.2|example.com|_|https", &r), 0);
	assert_span(&r, LV_REMOTE_ADDR, "10.1.2.3");
	assert_span(&r, LV_REMOTE_USER, "bob");
	assert_span(&r, LV_TIME_LOCAL, "02/Jan/2024:03:04:05 +0000");
	assert_span(&r, LV_TIME_ISO8601, "2024-01-02T03:04:05+00:00");
	assert_span(&r, LV_MSEC, "1704164645.123");
	assert_span(&r, LV_REQUEST, "PUT /a/b?c HTTP/1.1");
	/* separately logged method and protocol win over the request line */
	assert_span(&r, LV_REQUEST_METHOD, "PATCH");
	assert_int_equal(r.method, HM_PATCH);
	assert_span(&r, LV_REQUEST_URI, "/a/b?c");
	assert_span(&r, LV_URI, "/a/b");
	assert_span(&r, LV_SERVER_PROTOCOL, "HTTP/3.0");
	assert_int_equal(r.proto, HP_3_0);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.body_bytes_sent, 100);
	assert_int_equal(r.bytes_sent, 350);
	assert_int_equal(r.request_length, 720);
	assert_int_equal(r.request_time_us, 1250000);
	assert_int_equal(r.upstream_response_time_us, 350000);
	assert_int_equal(r.upstream_connect_time_us, 3000);
	assert_int_equal(r.upstream_header_time_us, 90000);
	assert_int_equal(r.upstream_status, 503);
	assert_span(&r, LV_UPSTREAM_STATUS, "502, 503");
	assert_span(&r, LV_UPSTREAM_ADDR, "10.0.0.1:80, 10.0.0.2:80");
	assert_span(&r, LV_HTTP_REFERER, "https://r/");
	assert_span(&r, LV_HTTP_USER_AGENT, "UA/1.0");
	assert_span(&r, LV_HTTP_X_FORWARDED_FOR, "1.1.1.1, 2.2.2.2");
	assert_span(&r, LV_HOST, "example.com");
	assert_span(&r, LV_SERVER_NAME, "_");
	assert_span(&r, LV_SCHEME, "https");

	/* every value absent */
	assert_int_equal(parse(f, "-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-|-", &r), 0);
	assert_int_equal(r.has, 0);
	assert_int_equal(r.method, HM_NONE);
	assert_int_equal(r.proto, HP_NONE);
	logfmt_free(f);

	/* names are case-insensitive; ${} next to text */
	f = compile("${STATUS}x${Request_Time}");
	assert_int_equal(parse(f, "404x0.004", &r), 0);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.request_time_us, 4000);
	logfmt_free(f);

	for (int v = 0; v < LV__COUNT; v++) {
		const char *n = logvar_name((enum logvar)v);
		assert_non_null(n);
		assert_int_equal(logvar_lookup(n, strlen(n)), v);
	}
	assert_null(logvar_name(LV__COUNT));
	assert_int_equal(logvar_lookup("nope", 4), LV_UNKNOWN);
}

static void test_upstream_lists(void **state)
{
	(void)state;
	struct logfmt *f = compile("$status $upstream_status [$upstream_response_time] [$upstream_connect_time] "
				   "[$upstream_header_time] $request_time");
	struct logrec r;
	uint64_t us;
	unsigned st;

	assert_int_equal(parse(f, "200 200 [0.010] [0.001] [0.009] 0.011", &r), 0);
	assert_int_equal(r.upstream_status, 200);
	assert_int_equal(r.upstream_response_time_us, 10000);
	assert_int_equal(r.upstream_connect_time_us, 1000);
	assert_int_equal(r.upstream_header_time_us, 9000);
	assert_int_equal(r.request_time_us, 11000);

	/* two servers tried, then an internal redirect to another group */
	assert_int_equal(parse(f, "200 502, 200 : 200 [0.010, 0.020 : 0.005] [-, 0.001 : 0.002] [- : -] 0.040", &r), 0);
	assert_int_equal(r.upstream_status, 200);
	assert_int_equal(r.upstream_response_time_us, 35000);
	assert_int_equal(r.upstream_connect_time_us, 3000);
	assert_absent(&r, LV_UPSTREAM_HEADER_TIME);

	/* no upstream at all */
	assert_int_equal(parse(f, "404 - [-] [-] [-] 0.000", &r), 0);
	assert_absent(&r, LV_UPSTREAM_STATUS);
	assert_absent(&r, LV_UPSTREAM_RESPONSE_TIME);
	assert_true(logrec_has(&r, LV_REQUEST_TIME));
	assert_int_equal(r.request_time_us, 0);

	/* junk in a list is malformed */
	assert_int_equal(parse(f, "200 200 [0.010, abc] [-] [-] 0.011", &r), -EINVAL);
	assert_int_equal(parse(f, "200 2000 [0.010] [-] [-] 0.011", &r), -EINVAL);
	logfmt_free(f);

	assert_int_equal(logfmt_parse_time_us("0.123", 5, &us), 0);
	assert_int_equal(us, 123000);
	assert_int_equal(logfmt_parse_time_us("12", 2, &us), 0);
	assert_int_equal(us, 12000000);
	assert_int_equal(logfmt_parse_time_us("1.2345678", 9, &us), 0);
	assert_int_equal(us, 1234567);
	assert_int_equal(logfmt_parse_time_us("999999999999.5", 14, &us), 0);
	assert_int_equal(logfmt_parse_time_us(".5", 2, &us), -EINVAL);
	assert_int_equal(logfmt_parse_time_us("1.", 2, &us), -EINVAL);
	assert_int_equal(logfmt_parse_time_us("1.x", 3, &us), -EINVAL);
	assert_int_equal(logfmt_parse_time_us("-1", 2, &us), -EINVAL);
	assert_int_equal(logfmt_parse_time_us("1000000000000", 13, &us), -EINVAL);
	assert_int_equal(logfmt_parse_time_us("", 0, &us), -EINVAL);
	assert_int_equal(logfmt_parse_time_list_us("-, -", 4, &us), 1);
	assert_int_equal(logfmt_parse_time_list_us(" , ", 3, &us), -EINVAL);
	assert_int_equal(logfmt_parse_status_list("504 : -", 7, &st), 0);
	assert_int_equal(st, 504);
}

static void test_request_split(void **state)
{
	(void)state;
	struct logfmt *f = compile("\"$request\"");
	struct logrec r;
	static const struct { const char *line; enum http_method m; enum http_proto p; const char *uri; } cases[] = {
		{ "\"GET / HTTP/1.1\"", HM_GET, HP_1_1, "/" },
		{ "\"DELETE /x HTTP/1.0\"", HM_DELETE, HP_1_0, "/x" },
		{ "\"OPTIONS * HTTP/1.1\"", HM_OPTIONS, HP_1_1, "*" },
		{ "\"CONNECT example.com:443 HTTP/1.1\"", HM_CONNECT, HP_1_1, "example.com:443" },
		{ "\"TRACE / HTTP/1.1\"", HM_TRACE, HP_1_1, "/" },
		{ "\"PROPFIND /dav HTTP/1.1\"", HM_OTHER, HP_1_1, "/dav" },
		{ "\"get / HTTP/1.1\"", HM_OTHER, HP_1_1, "/" },
		{ "\"GET /a b HTTP/1.1\"", HM_GET, HP_1_1, "/a b" },
		{ "\"GET /\"", HM_GET, HP_OTHER, "/" },                      /* HTTP/0.9 */
		{ "\"GET / HTTP/9.9\"", HM_GET, HP_OTHER, "/" },
		{ "\"GET / HTTP/1.1x\"", HM_GET, HP_OTHER, "/" },
		{ "\"GET  HTTP/1.1\"", HM_GET, HP_1_1, NULL },
		{ "\"GET\"", HM_GET, HP_NONE, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(f, cases[i].line, &r), 0);
		if (r.method != cases[i].m || r.proto != cases[i].p)
			fail_msg("%s: method %d proto %d", cases[i].line, r.method, r.proto);
		if (cases[i].uri)
			assert_span(&r, LV_REQUEST_URI, cases[i].uri);
		else
			assert_absent(&r, LV_REQUEST_URI);
	}
	for (int m = 0; m < HM__COUNT; m++)
		assert_non_null(http_method_name((enum http_method)m));
	assert_string_equal(http_proto_name(HP_2_0), "HTTP/2.0");
	assert_string_equal(http_method_name(HM_OTHER), "other");
	logfmt_free(f);
}

static void test_unknown_and_fixed(void **state)
{
	(void)state;
	struct logfmt *f = compile("$remote_addr $connection_requests [$time_local]$status \"$sent_http_x\" $gzip_ratio");
	struct logrec r;

	/* unknown variables are matched and skipped */
	assert_int_equal(parse(f, "1.2.3.4 7 [02/Jan/2024:03:04:05 +0000]200 \"x y\" 2.5", &r), 0);
	assert_span(&r, LV_REMOTE_ADDR, "1.2.3.4");
	assert_int_equal(r.status, 200);
	assert_span(&r, LV_TIME_LOCAL, "02/Jan/2024:03:04:05 +0000");
	assert_int_equal(parse(f, "1.2.3.4 [02/Jan/2024:03:04:05 +0000]200 \"x\" 1", &r), -EINVAL);
	logfmt_free(f);

	/* $time_iso8601 and $time_local have a fixed width, so a variable may
	 * follow them directly */

	f = compile("$time_iso8601$status");
	assert_int_equal(parse(f, "2024-01-02T03:04:05+00:00404", &r), 0);
	assert_int_equal(r.status, 404);
	assert_int_equal(parse(f, "2024-01-02T03:04:05+00:0", &r), -EINVAL);
	logfmt_free(f);

	/* a format that ends with a variable: the rest of the line */
	f = compile("s=$status ua=$http_user_agent");
	assert_int_equal(parse(f, "s=200 ua=a b c", &r), 0);
	assert_span(&r, LV_HTTP_USER_AGENT, "a b c");
	assert_int_equal(parse(f, "s=200 ua=", &r), 0);
	assert_absent(&r, LV_HTTP_USER_AGENT);
	logfmt_free(f);

	/* multi-byte literals of every search strategy */
	f = compile("$status<=>$body_bytes_sent::::::$request_length||$request_time");
	assert_int_equal(parse(f, "200<=>5:::::::::::7||0.5", &r), -EINVAL);   /* 5 then ":::" is not a number */
	assert_int_equal(parse(f, "200<=>5::::::7||0.5", &r), 0);
	assert_int_equal(r.body_bytes_sent, 5);
	assert_int_equal(r.request_length, 7);
	assert_int_equal(r.request_time_us, 500000);
	logfmt_free(f);
}

/* ---- compile errors ---- */

static void expect_error(const char *fmt, size_t pos, const char *text)
{
	struct logfmt *f = (struct logfmt *)1;
	struct logfmt_err err;

	memset(&err, 0, sizeof(err));
	assert_int_equal(logfmt_compile(fmt, strlen(fmt), &f, &err), -EINVAL);
	assert_null(f);
	if (err.pos != pos || !strstr(err.msg, text))
		fail_msg("\"%s\": pos %zu msg \"%s\", expected pos %zu and \"%s\"", fmt, err.pos, err.msg, pos, text);
}

static void test_compile_errors(void **state)
{
	(void)state;
	struct logfmt *f;

	expect_error("", 0, "empty log format");
	expect_error("just text", 0, "no variables");
	expect_error("$remote_addr $status$body_bytes_sent", 20,
		     "position 20: $status and $body_bytes_sent are adjacent");
	expect_error("$remote_addr$foo", 12, "$remote_addr and $foo are adjacent");
	expect_error("$foo$bar x", 4, "adjacent");
	expect_error("$status $", 8, "position 8: '$' not followed by a variable name");
	expect_error("$status $-", 8, "not followed by a variable name");
	expect_error("x ${status", 2, "unterminated \"${\"");
	expect_error("x ${}", 2, "empty variable name");
	expect_error("x ${a-b}", 5, "invalid character");
	assert_int_equal(logfmt_compile(NULL, 0, &f, NULL), -EINVAL);
	assert_int_equal(logfmt_compile("$", 1, &f, NULL), -EINVAL);
	/* a NUL byte is literal text like any other */
	assert_int_equal(logfmt_compile("$status\0$request_time", 21, &f, NULL), 0);
	struct logrec r;
	assert_int_equal(logfmt_parse(f, "200\0" "0.1", 7, &r), 0);
	assert_int_equal(r.request_time_us, 100000);
	logfmt_free(f);
	logfmt_free(NULL);
}

/* ---- malformed lines ---- */

static void test_malformed(void **state)
{
	(void)state;
	struct logfmt *f = preset("combined");
	struct logrec r;
	const char *good = "203.0.113.7 - - [02/Jan/2024:03:04:05 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"UA\"";
	size_t n = strlen(good);

	/* every truncation of a good line is malformed */
	for (size_t i = 0; i < n; i++)
		if (logfmt_parse(f, good, i, &r) != -EINVAL)
			fail_msg("prefix of %zu bytes parsed", i);
	assert_int_equal(logfmt_parse(f, good, n, &r), 0);

	assert_int_equal(parse(f, "", &r), -EINVAL);
	assert_int_equal(parse(f, "garbage", &r), -EINVAL);
	assert_int_equal(parse(f, "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 2OO 612 \"-\" \"UA\"", &r), -EINVAL);
	assert_int_equal(parse(f, "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 2000 612 \"-\" \"UA\"", &r), -EINVAL);
	assert_int_equal(parse(f, "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 -612 \"-\" \"UA\"", &r), -EINVAL);
	assert_int_equal(parse(f, "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 99999999999999999999 \"-\" \"UA\"", &r),
			 -EINVAL);
	/* another server's format */
	assert_int_equal(parse(f, "{\"status\":200}", &r), -EINVAL);

	/* NUL bytes and invalid UTF-8 inside values are just bytes */
	char nul[] = "1.2.3.4 - - [x] \"GET /\0\xff\xfe HTTP/1.1\" 200 1 \"-\" \"\xc3\x28\0\"";
	assert_int_equal(logfmt_parse(f, nul, sizeof(nul) - 1, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.v[LV_HTTP_USER_AGENT].len, 3);
	/* a NUL where a delimiter should be */
	char nul2[] = "1.2.3.4 - - [x] \"GET / HTTP/1.1\"\0" "200 1 \"-\" \"UA\"";
	assert_int_equal(logfmt_parse(f, nul2, sizeof(nul2) - 1, &r), -EINVAL);

	/* binary garbage of every byte value */
	char bin[4096];
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof(bin); i++) {
		x = x * 1103515245 + 12345;
		bin[i] = (char)(x >> 16);
	}
	assert_int_equal(logfmt_parse(f, bin, sizeof(bin), &r), -EINVAL);
	logfmt_free(f);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_huge_lines(void **state)
{
	(void)state;
	struct logfmt *f = preset("combined");
	struct logfmt *g = compile("$remote_addr <<<<<$status>>>>> $request_time");
	struct logrec r;
	size_t big = 10u << 20;
	char *line = malloc(big + 256);
	double t0;
	int n;

	assert_non_null(line);
	/* a 10 MB user agent parses */
	n = sprintf(line, "1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"");
	memset(line + n, 'A', big);
	line[n + big] = '"';
	assert_int_equal(logfmt_parse(f, line, n + big + 1, &r), 0);
	assert_int_equal(r.v[LV_HTTP_USER_AGENT].len, big);

	/* 10 MB of delimiters and near-misses: malformed, and linear time */
	t0 = now_s();
	memset(line, '"', big);
	assert_int_equal(logfmt_parse(f, line, big, &r), -EINVAL);
	memset(line, ' ', big);
	assert_int_equal(logfmt_parse(f, line, big, &r), -EINVAL);
	for (size_t i = 0; i < big; i++)
		line[i] = "<<<<>"[i % 5];
	memcpy(line, "1.1.1.1 ", 8);
	assert_int_equal(logfmt_parse(g, line, big, &r), -EINVAL);
	memset(line + 8, '<', big - 8);
	assert_int_equal(logfmt_parse(g, line, big, &r), -EINVAL);
	if (now_s() - t0 > 2.0)
		fail_msg("10 MB hostile lines took %.2f s", now_s() - t0);
	free(line);
	logfmt_free(f);
	logfmt_free(g);
}

/* ---- JSON ---- */

static void test_json_default(void **state)
{
	(void)state;
	struct logfmt *f = NULL;
	struct logrec r;

	assert_int_equal(logfmt_compile_json(NULL, NULL, 0, &f, NULL), 0);
	assert_true(logfmt_is_json(f));
	assert_int_equal(parse(f, "{\"time_iso8601\":\"2024-01-02T03:04:05+00:00\",\"remote_addr\":\"10.0.0.1\","
				  "\"request\":\"GET /a?b=\\\"c\\\" HTTP/2.0\",\"status\":\"200\",\"body_bytes_sent\":512,"
				  "\"request_time\":\"0.020\",\"upstream_response_time\":\"0.010, 0.005\","
				  "\"http_user_agent\":\"a \\\\\\\"b\\\\\",\"http_referer\":\"\",\"extra\":{\"x\":[1,\"]}\"]},"
				  "\"list\":[{},{\"y\":\"}\"}],\"flag\":true,\"n\":null,\"upstream_status\":null}", &r), 0);
	assert_span(&r, LV_TIME_ISO8601, "2024-01-02T03:04:05+00:00");
	assert_span(&r, LV_REMOTE_ADDR, "10.0.0.1");
	assert_span(&r, LV_REQUEST_URI, "/a?b=\\\"c\\\"");
	assert_int_equal(r.method, HM_GET);
	assert_int_equal(r.proto, HP_2_0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_bytes_sent, 512);
	assert_int_equal(r.request_time_us, 20000);
	assert_int_equal(r.upstream_response_time_us, 15000);
	assert_span(&r, LV_HTTP_USER_AGENT, "a \\\\\\\"b\\\\");
	assert_absent(&r, LV_HTTP_REFERER);          /* "" is absent in escape=json */
	assert_absent(&r, LV_UPSTREAM_STATUS);       /* null */

	/* whitespace around everything, an empty object */
	assert_int_equal(parse(f, "  { \"status\" : 404 , \"request_method\" : \"HEAD\" }  ", &r), 0);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.method, HM_HEAD);
	assert_int_equal(parse(f, "{}", &r), 0);
	assert_int_equal(r.has, 0);

	/* malformed */
	static const char *const bad[] = {
		"", "{", "}", "[]", "{\"status\":200", "{\"status\":200,}", "{\"status\" 200}", "{\"status\":}",
		"{\"status\":\"200}", "{\"status\":200}x", "{status:200}", "{\"status\":\"abc\"}",
		"{\"status\":\"2\\u0030\"}", "{\"a\":{\"b\":1}", "{\"a\":[1,2}", "{\"status\":true}",
		"{\"a\":\"x\\\"}", "{\"a\":1 \"b\":2}", "{,}", "{\"a\":1}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(f, bad[i], &r) != -EINVAL)
			fail_msg("accepted %s", bad[i]);
	logfmt_free(f);
}

static void test_json_maps(void **state)
{
	(void)state;
	const char *keys[] = { "st", "rt", "ua", "st" };
	const char *vars[] = { "$upstream_status", "request_time", "${http_user_agent}", "$status" };
	struct logfmt *f = NULL;
	struct logfmt_err err;
	struct logrec r;

	/* a key given twice keeps its last variable */
	assert_int_equal(logfmt_compile_json(keys, vars, 4, &f, &err), 0);
	assert_int_equal(parse(f, "{\"st\":\"301\",\"rt\":0.5,\"ua\":\"x\",\"status\":999}", &r), 0);
	assert_int_equal(r.status, 301);
	assert_absent(&r, LV_UPSTREAM_STATUS);
	assert_int_equal(r.request_time_us, 500000);
	assert_span(&r, LV_HTTP_USER_AGENT, "x");
	logfmt_free(f);

	const char *badv[] = { "$nope" };
	assert_int_equal(logfmt_compile_json(keys, badv, 1, &f, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unknown variable \"nope\""));
	const char *emptyk[] = { "" };
	assert_int_equal(logfmt_compile_json(emptyk, vars, 1, &f, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "empty key"));

	/* map from an escape=json log_format */
	const char *jf = "{ \"ts\": \"$time_iso8601\", \"addr\":\"$remote_addr\", \"req\":\"$request\", "
			 "\"code\": $status, \"rt\":$request_time, \"both\":\"$host $uri\", \"u\":\"${upstream_status}\","
			 "\"zz\":\"$no_such_var\" }";
	assert_int_equal(logfmt_compile_json_format(jf, strlen(jf), &f, &err), 0);
	assert_int_equal(parse(f, "{ \"ts\": \"2024-01-02T03:04:05+00:00\", \"addr\":\"::1\", \"req\":\"GET / HTTP/1.1\", "
				  "\"code\": 200, \"rt\":0.003, \"both\":\"h /\", \"u\":\"200\", \"zz\":\"q\" }", &r), 0);
	assert_span(&r, LV_TIME_ISO8601, "2024-01-02T03:04:05+00:00");
	assert_span(&r, LV_REMOTE_ADDR, "::1");
	assert_int_equal(r.method, HM_GET);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.request_time_us, 3000);
	assert_int_equal(r.upstream_status, 200);
	assert_absent(&r, LV_HOST);
	assert_absent(&r, LV_URI);
	logfmt_free(f);

	assert_int_equal(logfmt_compile_json_format("$status", 7, &f, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "must be a JSON object"));
	assert_int_equal(logfmt_compile_json_format("{\"a\":\"$x $y\"}", 13, &f, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no \"key\":$variable"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_combined),
		cmocka_unit_test(test_common),
		cmocka_unit_test(test_every_variable),
		cmocka_unit_test(test_upstream_lists),
		cmocka_unit_test(test_request_split),
		cmocka_unit_test(test_unknown_and_fixed),
		cmocka_unit_test(test_compile_errors),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_huge_lines),
		cmocka_unit_test(test_json_default),
		cmocka_unit_test(test_json_maps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
