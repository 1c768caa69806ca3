/* libFuzzer target for the log_format compilers (text and escape=json).
 *
 * Input: the first line is a format; every following line is parsed with
 * what it compiled to (each in an exact-size heap copy, so ASan sees any
 * read past the line). The whole input is also given to the escape=json
 * map builder. A failed compile must leave *out NULL and a one-line,
 * NUL-terminated message; a successful one must parse anything.
 *
 *   make BUILD=build-log build-log/fuzz/fuzz_logfmt
 *   build-log/fuzz/fuzz_logfmt -max_total_time=60 -max_len=4096 tests/fuzz/corpus/fuzz_logfmt */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logfmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_err(int rc, const struct logfmt *f, const struct logfmt_err *err)
{
	if (rc == 0) {
		if (!f)
			abort();
		return;
	}
	if (f || !err->msg[0] || memchr(err->msg, 0, sizeof(err->msg)) == NULL || strchr(err->msg, '\n'))
		abort();
}

static void parse_lines(const struct logfmt *f, const char *p, const char *end)
{
	struct logrec r;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		size_t n = (size_t)(e - p);
		char *copy = malloc(n ? n : 1);
		if (!copy)
			return;
		memcpy(copy, p, n);
		if (logfmt_parse(f, copy, n, &r) == 0) {
			/* every span must lie inside the line */
			for (int v = 0; v < LV__COUNT; v++)
				if (logrec_has(&r, (enum logvar)v) &&
				    (r.v[v].p < copy || r.v[v].p + r.v[v].len > copy + n))
					abort();
		}
		free(copy);
		p = e + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	const char *nl = memchr(p, '\n', size);
	size_t flen = nl ? (size_t)(nl - p) : size;
	struct logfmt *f = (struct logfmt *)&f;
	struct logfmt_err err;
	char *fmt = malloc(flen ? flen : 1);
	int rc;

	if (!fmt)
		return 0;
	memcpy(fmt, p, flen);
	memset(&err, 0, sizeof(err));
	rc = logfmt_compile(fmt, flen, &f, &err);
	check_err(rc, f, &err);
	if (f)
		parse_lines(f, nl ? nl + 1 : end, end);
	logfmt_free(f);

	f = (struct logfmt *)&f;
	memset(&err, 0, sizeof(err));
	rc = logfmt_compile_json_format(fmt, flen, &f, &err);
	check_err(rc, f, &err);
	if (f)
		parse_lines(f, nl ? nl + 1 : end, end);
	logfmt_free(f);
	free(fmt);
	return 0;
}
