/* Unit tests for errlog.c: line parsing, counts by level, critical and
 * pattern records with their continuation lines, a Go panic with its
 * goroutine stacks assembled into one record (ended by the next line, by
 * flush, by the idle timeout, by blank lines), the text bounds, and the
 * rate limit with its suppressed count. Time is simulated throughout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errlog.h"

#define MAXREC 16

struct got {
	int n;
	struct errlog_record r[MAXREC];
	char text[MAXREC][8192];
};

static void on_record(const struct errlog_record *r, void *arg)
{
	struct got *g = arg;

	assert_true(g->n < MAXREC);
	assert_int_equal(strlen(r->text), r->len);
	g->r[g->n] = *r;
	memcpy(g->text[g->n], r->text, r->len + 1);
	g->r[g->n].text = g->text[g->n];
	g->n++;
}

static struct errlog *new_errlog(struct errlog_config *c, struct got *g)
{
	struct errlog *e = NULL;

	memset(g, 0, sizeof(*g));
	assert_int_equal(errlog_new(c, on_record, g, &e), 0);
	return e;
}

static enum errlog_level feed(struct errlog *e, const char *line, double now)
{
	return errlog_feed(e, line, strlen(line), now);
}

/* ---- parsing ---- */

static void test_parse_line(void **state)
{
	(void)state;
	struct errlog_line l;
	const char *s = "2024/01/02 03:04:05 [error] 1234#5678: *99 open() \"/x\" failed (2: No such file)";

	assert_int_equal(errlog_parse_line(s, strlen(s), &l), 0);
	assert_int_equal(l.year, 2024);
	assert_int_equal(l.mon, 1);
	assert_int_equal(l.day, 2);
	assert_int_equal(l.hour, 3);
	assert_int_equal(l.min, 4);
	assert_int_equal(l.sec, 5);
	assert_int_equal(l.level, ERL_ERROR);
	assert_int_equal(l.pid, 1234);
	assert_int_equal(l.tid, 5678);
	assert_int_equal(l.cid, 99);
	assert_int_equal(l.msg_len, strlen("open() \"/x\" failed (2: No such file)"));
	assert_memory_equal(l.msg, "open() \"/x\" failed", 18);

	s = "2024/01/02 03:04:05 [notice] 1#1: signal process started";
	assert_int_equal(errlog_parse_line(s, strlen(s), &l), 0);
	assert_int_equal(l.level, ERL_NOTICE);
	assert_int_equal(l.cid, -1);
	assert_memory_equal(l.msg, "signal process started", l.msg_len);

	s = "2024/01/02 03:04:05 [emerg] no pid here";
	assert_int_equal(errlog_parse_line(s, strlen(s), &l), 0);
	assert_int_equal(l.level, ERL_EMERG);
	assert_int_equal(l.pid, -1);
	assert_memory_equal(l.msg, "no pid here", l.msg_len);

	s = "2024/01/02 03:04:05 [warn]";
	assert_int_equal(errlog_parse_line(s, strlen(s), &l), 0);
	assert_int_equal(l.msg_len, 0);

	static const char *const levels[] = { "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg" };
	for (int i = 0; i < 8; i++) {
		char b[128];
		int n = snprintf(b, sizeof(b), "2024/01/02 03:04:05 [%s] 1#2: m", levels[i]);
		assert_int_equal(errlog_parse_line(b, (size_t)n, &l), 0);
		assert_int_equal(l.level, i);
		assert_string_equal(errlog_level_name((enum errlog_level)i), levels[i]);
	}
	static const char *const cont[] = {
		"", "goroutine 1 [running]:", "2024/01/02 03:04:05 [fatal] 1#2: m", "2024/01/02 03:04:05 error",
		"2024-01-02 03:04:05 [error] 1#2: m", "2024/01/02 03:04:5x [error] m", "2024/01/02 03:04:05 [error",
		"2024/01/02 03:04:05 [errorerrorerror] m",
	};
	for (size_t i = 0; i < sizeof(cont) / sizeof(cont[0]); i++)
		if (errlog_parse_line(cont[i], strlen(cont[i]), &l) != -EINVAL)
			fail_msg("parsed %s", cont[i]);
	assert_string_equal(errlog_level_name(ERL_NONE), "none");
}

/* ---- counts and critical records ---- */

static const char *const nginx_lines[] = {
	"2024/01/02 03:04:05 [error] 1234#1234: *5678 open() \"/usr/share/nginx/html/favicon.ico\" failed "
	"(2: No such file or directory), client: 203.0.113.7, server: localhost, request: \"GET /favicon.ico "
	"HTTP/1.1\", host: \"example.com\"",
	"2024/01/02 03:04:06 [notice] 1234#1234: signal process started",
	"2024/01/02 03:04:07 [warn] 1234#1234: *9 an upstream response is buffered to a temporary file "
	"/var/cache/nginx/proxy_temp/1/00/0000000001 while reading upstream",
	"2024/01/02 03:04:08 [crit] 1234#1234: *10 SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad "
	"key share) while SSL handshaking, client: 198.51.100.9, server: 0.0.0.0:443",
	"2024/01/02 03:04:09 [info] 1234#1234: *11 client closed connection while waiting for request",
	"2024/01/02 03:04:10 [alert] 1233#1233: worker process 1240 exited on signal 11 (core dumped)",
	"2024/01/02 03:04:11 [debug] 1234#1234: *12 http cleanup add: 0000560F3E8A1B20",
	"2024/01/02 03:04:12 [emerg] 1233#1233: bind() to 0.0.0.0:80 failed (98: Address already in use)",
	"  continuation text of the emerg",
	"2024/01/02 03:04:13 [error] 1234#1234: *13 upstream timed out (110: Connection timed out)",
};

static void test_levels_and_critical(void **state)
{
	(void)state;
	struct errlog_config c;
	struct got g;
	struct errlog *e;

	errlog_config_default(&c);
	c.rate_per_min = 0;
	e = new_errlog(&c, &g);
	for (size_t i = 0; i < sizeof(nginx_lines) / sizeof(nginx_lines[0]); i++)
		feed(e, nginx_lines[i], 100 + (double)i);
	assert_false(errlog_pending(e));
	const struct errlog_counts *k = errlog_counts(e);
	assert_int_equal(k->lines[ERL_DEBUG], 1);
	assert_int_equal(k->lines[ERL_INFO], 1);
	assert_int_equal(k->lines[ERL_NOTICE], 1);
	assert_int_equal(k->lines[ERL_WARN], 1);
	assert_int_equal(k->lines[ERL_ERROR], 2);
	assert_int_equal(k->lines[ERL_CRIT], 1);
	assert_int_equal(k->lines[ERL_ALERT], 1);
	assert_int_equal(k->lines[ERL_EMERG], 1);
	assert_int_equal(k->continuation, 1);
	assert_int_equal(k->critical, 3);
	assert_int_equal(k->records[ERK_CRITICAL], 3);
	assert_int_equal(k->delivered, 3);

	/* each critical record ends at the next timestamped line */
	assert_int_equal(g.n, 3);
	assert_int_equal(g.r[0].kind, ERK_CRITICAL);
	assert_int_equal(g.r[0].level, ERL_CRIT);
	assert_int_equal(g.r[0].pattern, -1);
	assert_string_equal(g.r[0].text, nginx_lines[3]);
	assert_int_equal(g.r[0].lines, 1);
	assert_int_equal(g.r[0].start, 103);
	assert_int_equal(g.r[1].level, ERL_ALERT);
	assert_int_equal(g.r[2].level, ERL_EMERG);
	assert_int_equal(g.r[2].lines, 2);
	assert_int_equal(g.r[2].total_lines, 2);
	assert_false(g.r[2].truncated);
	char want[512];
	snprintf(want, sizeof(want), "%s\n%s", nginx_lines[7], nginx_lines[8]);
	assert_string_equal(g.r[2].text, want);
	errlog_free(e);

	/* crit_level lowered to error */
	c.crit_level = ERL_ERROR;
	e = new_errlog(&c, &g);
	feed(e, nginx_lines[0], 1);
	errlog_flush(e, 2);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].level, ERL_ERROR);
	assert_int_equal(errlog_counts(e)->critical, 1);
	errlog_flush(e, 3);     /* nothing pending: nothing happens */
	assert_int_equal(g.n, 1);
	errlog_free(e);
}

/* ---- panics ---- */

static const char *const go_panic[] = {
	"panic: runtime error: invalid memory address or nil pointer dereference",
	"[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a1b2c]",
	"",
	"goroutine 1 [running]:",
	"main.(*Server).handle(0x0, {0x5d3e80, 0xc000123456})",
	"\t/src/server.go:42 +0x2c",
	"main.main()",
	"\t/src/main.go:17 +0x65",
	"",
	"goroutine 18 [select]:",
	"net/http.(*persistConn).writeLoop(0xc0001b2000)",
	"\t/usr/local/go/src/net/http/transport.go:2421 +0xe5",
	"created by net/http.(*Transport).dialConn in goroutine 17",
	"\t/usr/local/go/src/net/http/transport.go:1777 +0x16f1",
	"exit status 2",
};
#define NPANIC (sizeof(go_panic) / sizeof(go_panic[0]))

static void panic_text(char *out, size_t n)
{
	size_t used = 0;

	out[0] = 0;
	for (size_t i = 0; i < NPANIC; i++)
		used += (size_t)snprintf(out + used, n - used, "%s%s", i ? "\n" : "", go_panic[i]);
}

static void test_go_panic(void **state)
{
	(void)state;
	struct errlog_config c;
	struct got g;
	struct errlog *e;
	char want[4096];

	errlog_config_default(&c);
	panic_text(want, sizeof(want));

	/* ended by the next timestamped line */
	e = new_errlog(&c, &g);
	feed(e, "2024/01/02 03:04:05 [notice] 1#1: start worker process 7", 10);
	for (size_t i = 0; i < NPANIC; i++)
		assert_int_equal(feed(e, go_panic[i], 11), ERL_NONE);
	assert_true(errlog_pending(e));
	assert_int_equal(g.n, 0);
	assert_int_equal(feed(e, "2024/01/02 03:04:06 [notice] 1#1: signal 17 (SIGCHLD) received", 12), ERL_NOTICE);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].kind, ERK_PANIC);
	assert_int_equal(g.r[0].level, ERL_NONE);
	assert_string_equal(g.r[0].text, want);
	assert_int_equal(g.r[0].lines, NPANIC);
	assert_int_equal(g.r[0].total_lines, NPANIC);
	assert_false(g.r[0].truncated);
	assert_int_equal(errlog_counts(e)->panics, 1);
	assert_int_equal(errlog_counts(e)->records[ERK_PANIC], 1);
	assert_int_equal(errlog_counts(e)->continuation, NPANIC);
	errlog_free(e);

	/* ended by flush; trailing blank lines are not part of the text */
	e = new_errlog(&c, &g);
	for (size_t i = 0; i < NPANIC; i++)
		feed(e, go_panic[i], 11);
	feed(e, "", 11);
	errlog_flush(e, 12);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.r[0].text, want);
	errlog_free(e);

	/* ended by the idle timeout */
	e = new_errlog(&c, &g);
	for (size_t i = 0; i < NPANIC; i++)
		feed(e, go_panic[i], 20);
	errlog_tick(e, 21.9);
	assert_int_equal(g.n, 0);
	errlog_tick(e, 22.0);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.r[0].text, want);
	errlog_free(e);

	/* two blank lines end it; a blank line and then a line that is not a
	 * traceback end it too, and that line is handled on its own */
	e = new_errlog(&c, &g);
	feed(e, "panic: first", 1);
	feed(e, "", 1);
	feed(e, "goroutine 1 [running]:", 1);
	feed(e, "", 1);
	feed(e, "", 1);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.r[0].text, "panic: first\n\ngoroutine 1 [running]:");
	feed(e, "fatal error: concurrent map writes", 2);
	feed(e, "", 2);
	feed(e, "some unrelated output", 2);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.r[1].text, "fatal error: concurrent map writes");
	assert_false(errlog_pending(e));
	/* a panic in a timestamped line, and a panic ending another panic */
	feed(e, "2024/01/02 03:04:05 [error] 1#1: panic: oops", 3);
	feed(e, "goroutine 7 [running]:", 3);
	feed(e, "panic: second", 3);
	assert_int_equal(g.n, 3);
	assert_int_equal(g.r[2].level, ERL_ERROR);
	assert_string_equal(g.r[2].text, "2024/01/02 03:04:05 [error] 1#1: panic: oops\ngoroutine 7 [running]:");
	errlog_flush(e, 4);
	assert_int_equal(g.n, 4);
	assert_string_equal(g.r[3].text, "panic: second");
	assert_int_equal(errlog_counts(e)->panics, 4);
	errlog_free(e);
}

static void test_bounds(void **state)
{
	(void)state;
	struct errlog_config c;
	struct got g;
	struct errlog *e;
	char line[64];

	errlog_config_default(&c);
	c.max_lines = 3;
	c.max_bytes = 40;
	c.max_record_lines = 10;
	e = new_errlog(&c, &g);
	feed(e, "panic: aaaaaaaaaaaaaaaaaaaa", 1);   /* 27 bytes */
	feed(e, "\tbbbbbbbbbbbbbbbbbbbb", 1);        /* cut to 12 */
	for (int i = 0; i < 7; i++) {
		snprintf(line, sizeof(line), "\tline %d", i);
		feed(e, line, 1);
	}
	/* 9 lines so far; the 10th ends the record at max_record_lines */
	assert_int_equal(g.n, 0);
	feed(e, "\tthe tenth", 1);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].len, 40);
	assert_int_equal(g.r[0].lines, 2);
	assert_int_equal(g.r[0].total_lines, 10);
	assert_true(g.r[0].truncated);
	assert_string_equal(g.r[0].text, "panic: aaaaaaaaaaaaaaaaaaaa\n\tbbbbbbbbbbb");
	/* the eleventh is a plain continuation line */
	feed(e, "\televenth", 1);
	assert_false(errlog_pending(e));
	errlog_free(e);

	/* held-back blank lines count: the line after them would be the
	 * 11th, so it is not part of the record */
	e = new_errlog(&c, &g);
	for (int i = 0; i < 9; i++)
		feed(e, i ? "\tx" : "panic: p", 1);
	feed(e, "", 1);
	feed(e, "goroutine 2 [running]:", 1);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].total_lines, 10);
	assert_false(errlog_pending(e));
	errlog_free(e);

	/* max_lines */
	c.max_bytes = 4096;
	e = new_errlog(&c, &g);
	feed(e, "2024/01/02 03:04:05 [alert] 1#1: a", 1);
	feed(e, "b", 1);
	feed(e, "c", 1);
	feed(e, "d", 1);
	errlog_flush(e, 1);
	assert_string_equal(g.r[0].text, "2024/01/02 03:04:05 [alert] 1#1: a\nb\nc");
	assert_int_equal(g.r[0].total_lines, 4);
	assert_true(g.r[0].truncated);
	errlog_free(e);

	/* a 10 MB continuation line costs max_bytes */
	size_t big = 10u << 20;
	char *huge = malloc(big);
	assert_non_null(huge);
	memset(huge, 'x', big);
	errlog_config_default(&c);
	e = new_errlog(&c, &g);
	feed(e, "2024/01/02 03:04:05 [crit] 1#1: big", 1);
	errlog_feed(e, huge, big, 1);
	memcpy(huge, "2024/01/02 03:04:05 [crit] 1#1: ", 32);
	errlog_feed(e, huge, big, 2);
	errlog_flush(e, 3);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.r[0].len, 4096);
	assert_true(g.r[0].truncated);
	assert_int_equal(g.r[1].len, 4096);
	free(huge);
	errlog_free(e);

	/* NUL bytes and invalid UTF-8 become '?'; valid UTF-8 is kept; a
	 * sequence cut by max_bytes is invalid too */
	errlog_config_default(&c);
	c.max_bytes = 21;
	e = new_errlog(&c, &g);
	static const char bad[] = "panic: \0\xff\xc3\x28\xc3\xa9\xe2\x82";
	errlog_feed(e, bad, sizeof(bad) - 1, 1);
	static const char cut[] = "\t\xe2\x98\x83\xe2\x98\x83";   /* tab, two snowmen: cut in the 2nd */
	errlog_feed(e, cut, sizeof(cut) - 1, 1);
	errlog_flush(e, 1);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].len, 21);
	assert_string_equal(g.r[0].text, "panic: ?" "?" "?(\xc3\xa9?" "?\n\t\xe2\x98\x83?");
	errlog_free(e);

	/* a blank line ends a non-panic record; max_record_lines 1 */
	errlog_config_default(&c);
	e = new_errlog(&c, &g);
	feed(e, "2024/01/02 03:04:05 [crit] 1#1: x", 1);
	feed(e, "  ", 1);
	assert_int_equal(g.n, 1);
	errlog_free(e);
	c.max_record_lines = 1;
	e = new_errlog(&c, &g);
	feed(e, "2024/01/02 03:04:05 [crit] 1#1: x", 1);
	assert_int_equal(g.n, 1);
	feed(e, "y", 1);
	assert_int_equal(g.n, 1);
	errlog_free(e);
}

static void test_patterns(void **state)
{
	(void)state;
	const char *pats[] = { "segfault", "worker process * exited on signal", "*a*b*" };
	struct errlog_config c;
	struct got g;
	struct errlog *e;

	assert_int_equal(errlog_pattern_match("worker process * exited on signal", "worker process 12 exited on signal 9",
					      36), 1);
	assert_int_equal(errlog_pattern_match("worker process * exited on signal", "worker process exited on signal", 31),
			 0);
	assert_int_equal(errlog_pattern_match("a*b", "ba", 2), 0);
	assert_int_equal(errlog_pattern_match("a**b", "xaxxbx", 6), 1);
	assert_int_equal(errlog_pattern_match("**", "x", 1), -EINVAL);
	assert_int_equal(errlog_pattern_match("", "x", 1), -EINVAL);

	errlog_config_default(&c);
	c.patterns = pats;
	c.npatterns = 2;
	e = new_errlog(&c, &g);
	feed(e, "2024/01/02 03:04:09 [alert] 1233#1233: worker process 1240 exited on signal 11 (core dumped)", 1);
	feed(e, "2024/01/02 03:04:10 [error] 1234#1234: *1 child segfault at 0 ip 00007f", 2);
	/* a continuation line belongs to the pending record even if it matches */
	feed(e, "\tsegfault again", 2);
	feed(e, "2024/01/02 03:04:10 [info] 1234#1234: *1 client closed connection", 2);
	feed(e, "kernel: onepanel[1240]: segfault at 0 ip 000055d0 sp 00007ffd error 4", 3);
	feed(e, "more about it", 3);
	errlog_flush(e, 4);
	assert_int_equal(g.n, 3);
	assert_int_equal(g.r[0].kind, ERK_CRITICAL);
	assert_int_equal(g.r[0].pattern, 1);
	assert_int_equal(g.r[1].kind, ERK_PATTERN);
	assert_int_equal(g.r[1].level, ERL_ERROR);
	assert_int_equal(g.r[1].pattern, 0);
	assert_int_equal(g.r[1].lines, 2);
	assert_int_equal(g.r[2].kind, ERK_PATTERN);
	assert_int_equal(g.r[2].level, ERL_NONE);
	assert_string_equal(g.r[2].text, "kernel: onepanel[1240]: segfault at 0 ip 000055d0 sp 00007ffd error 4\nmore about it");
	assert_int_equal(errlog_counts(e)->pattern_matches, 4);
	errlog_free(e);

	/* invalid configurations */
	const char *bad[] = { "ok", "***" };
	c.patterns = bad;
	c.npatterns = 2;
	assert_int_equal(errlog_new(&c, NULL, NULL, &e), -EINVAL);
	assert_null(e);
	errlog_config_default(&c);
	c.max_bytes = 0;
	assert_int_equal(errlog_new(&c, NULL, NULL, &e), -EINVAL);
	errlog_config_default(&c);
	c.crit_level = ERL__COUNT;
	assert_int_equal(errlog_new(&c, NULL, NULL, &e), -EINVAL);
	errlog_config_default(&c);
	c.rate_per_min = -1;
	assert_int_equal(errlog_new(&c, NULL, NULL, &e), -EINVAL);
	/* NULL config: defaults; NULL callback: counting only */
	assert_int_equal(errlog_new(NULL, NULL, NULL, &e), 0);
	feed(e, "panic: x", 1);
	errlog_flush(e, 1);
	assert_int_equal(errlog_counts(e)->delivered, 1);
	errlog_free(e);
	errlog_free(NULL);
}

static void test_rate_limit(void **state)
{
	(void)state;
	struct errlog_config c;
	struct got g;
	struct errlog *e;

	errlog_config_default(&c);
	c.rate_per_min = 2;       /* one token every 30 s */
	c.burst = 2;
	e = new_errlog(&c, &g);
	for (int i = 0; i < 5; i++)
		feed(e, "2024/01/02 03:04:05 [emerg] 1#1: boom", 100);
	errlog_flush(e, 100);
	/* 5 records at t=100: the burst of 2 delivered, 3 suppressed */
	assert_int_equal(g.n, 2);
	assert_int_equal(g.r[0].suppressed, 0);
	assert_int_equal(g.r[1].suppressed, 0);
	assert_int_equal(errlog_counts(e)->suppressed, 3);
	assert_int_equal(errlog_counts(e)->records[ERK_CRITICAL], 5);
	/* 29 s later the bucket still lacks a whole token */
	feed(e, "panic: a", 129);
	errlog_flush(e, 129);
	assert_int_equal(g.n, 2);
	assert_int_equal(errlog_counts(e)->suppressed, 4);
	/* at 30 s one token is back: delivered, reporting the 4 suppressed */
	feed(e, "panic: b", 130.5);
	errlog_flush(e, 130.5);
	assert_int_equal(g.n, 3);
	assert_int_equal(g.r[2].suppressed, 4);
	assert_string_equal(g.r[2].text, "panic: b");
	/* the bucket is capped at burst: after an hour, 2 then suppression */
	for (int i = 0; i < 3; i++) {
		feed(e, "panic: c", 4000);
		errlog_flush(e, 4000);
	}
	assert_int_equal(g.n, 5);
	assert_int_equal(g.r[3].suppressed, 0);
	assert_int_equal(errlog_counts(e)->suppressed, 5);
	assert_int_equal(errlog_counts(e)->delivered, 5);
	/* time going backwards neither refills nor breaks anything */
	feed(e, "panic: d", 10);
	errlog_flush(e, 10);
	assert_int_equal(g.n, 5);
	errlog_free(e);

	/* burst 0 defaults to the rate */
	c.rate_per_min = 3;
	c.burst = 0;
	e = new_errlog(&c, &g);
	for (int i = 0; i < 5; i++) {
		feed(e, "panic: x", 1);
		errlog_flush(e, 1);
	}
	assert_int_equal(g.n, 3);
	errlog_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_line),
		cmocka_unit_test(test_levels_and_critical),
		cmocka_unit_test(test_go_panic),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_patterns),
		cmocka_unit_test(test_rate_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
