/* libFuzzer target for the error-log parser and record assembly.
 *
 * The first byte picks limits (small text bounds, rate limit on or off,
 * max_record_lines 1); the rest is fed line by line (exact-size copies),
 * with the caller clock advanced by a byte of each line and errlog_tick()
 * called in between, then flushed. The callback checks the record
 * invariants: text NUL-terminated of len bytes within max_bytes, at most
 * max_lines lines, lines <= total_lines <= max_record_lines.
 *
 *   make BUILD=build-log build-log/fuzz/fuzz_errlog
 *   build-log/fuzz/fuzz_errlog -max_total_time=60 -max_len=8192 tests/fuzz/corpus/fuzz_errlog */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "errlog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct errlog_config cfg;

static void on_record(const struct errlog_record *r, void *arg)
{
	(void)arg;
	if (r->len > cfg.max_bytes || strlen(r->text) != r->len || r->lines > cfg.max_lines ||
	    r->lines > r->total_lines || r->total_lines > cfg.max_record_lines || r->total_lines == 0 ||
	    (unsigned)r->kind >= ERK__COUNT || r->pattern >= (int)cfg.npatterns)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const pats[] = { "segfault", "worker process * exited on signal", "a*b*c" };
	const char *p, *end;
	struct errlog *e;
	double now = 0;
	uint8_t mode;

	if (size < 1)
		return 0;
	mode = data[0];
	errlog_config_default(&cfg);
	cfg.patterns = pats;
	cfg.npatterns = 3;
	if (mode & 1) {
		cfg.max_lines = 3;
		cfg.max_bytes = 64;
		cfg.max_record_lines = 8;
	}
	if (mode & 2)
		cfg.rate_per_min = 0;
	if (mode & 4)
		cfg.max_record_lines = 1;
	cfg.crit_level = (enum errlog_level)((mode >> 3) % ERL__COUNT);
	if (errlog_new(&cfg, on_record, NULL, &e))
		abort();
	p = (const char *)data + 1;
	end = (const char *)data + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *l = nl ? nl : end;
		size_t n = (size_t)(l - p);
		char *copy = malloc(n ? n : 1);
		if (!copy)
			break;
		memcpy(copy, p, n);
		enum errlog_level lv = errlog_feed(e, copy, n, now);
		if (lv != ERL_NONE && (unsigned)lv >= ERL__COUNT)
			abort();
		now += n ? (unsigned char)copy[0] % 5 : 3;
		errlog_tick(e, now);
		free(copy);
		p = l + 1;
	}
	errlog_flush(e, now);
	if (errlog_pending(e))
		abort();
	errlog_free(e);
	return 0;
}
