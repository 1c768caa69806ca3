/* Error-log parser and multi-line record assembly.
 *
 * Design: a push parser with one pending record. Each line is classified
 * once (timestamped with a level, or continuation; blank; starts a panic;
 * matches a pattern) and then a small state machine decides whether it
 * continues the pending record, ends it, or starts a new one. The record
 * text lives in one buffer of max_bytes allocated at creation, so nothing
 * is allocated per line and a flood of continuation lines (a 10 MB line, a
 * traceback of a million goroutines) costs bounded memory. Delivery goes
 * through a token bucket driven by the caller's clock, so tests control
 * time and the tailer decides what "now" is. See errlog.h for the rules. */
#include "errlog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct piece {
	const char *p;
	size_t len;
};

struct pattern {
	struct piece *pieces;
	size_t npieces;
};

struct errlog {
	struct errlog_config cfg;
	struct pattern *pats;
	size_t npats;
	char *patbuf;
	errlog_cb cb;
	void *arg;
	struct errlog_counts counts;

	/* pending record */
	bool pending;
	enum errlog_kind kind;
	enum errlog_level level;
	int pattern;
	unsigned lines, total, blanks;
	bool truncated;
	double start, last;
	char *text;
	size_t len;

	/* rate limit */
	double tokens, refilled;
	bool bucket_init;
	uint64_t unreported;
};

static const char *const level_names[ERL__COUNT] = {
	"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
};

const char *errlog_level_name(enum errlog_level l)
{
	return (unsigned)l < ERL__COUNT ? level_names[l] : "none";
}

const char *errlog_kind_name(enum errlog_kind k)
{
	static const char *const n[ERK__COUNT] = { "critical", "panic", "pattern" };

	return (unsigned)k < ERK__COUNT ? n[k] : "unknown";
}

void errlog_config_default(struct errlog_config *c)
{
	memset(c, 0, sizeof(*c));
	c->crit_level = ERL_CRIT;
	c->max_lines = 40;
	c->max_bytes = 4096;
	c->max_record_lines = 1000;
	c->flush_after = 2.0;
	c->rate_per_min = 10;
	c->burst = 10;
}

/* ---- line parsing ---- */

static inline bool is_digit(char c)
{
	return (unsigned)(c - '0') < 10;
}

static bool digits(const char *p, size_t n, int *out)
{
	int v = 0;

	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return false;
		v = v * 10 + (p[i] - '0');
	}
	*out = v;
	return true;
}

/* Unsigned decimal of at most 18 digits at *pp; advances. */
static bool number(const char **pp, const char *end, long long *out)
{
	const char *p = *pp;
	long long v = 0;

	while (p < end && is_digit(*p) && p - *pp < 18)
		v = v * 10 + (*p++ - '0');
	if (p == *pp || (p < end && is_digit(*p)))
		return false;
	*out = v;
	*pp = p;
	return true;
}

static enum errlog_level level_of(const char *p, size_t n)
{
	for (int i = 0; i < ERL__COUNT; i++)
		if (strlen(level_names[i]) == n && !memcmp(level_names[i], p, n))
			return (enum errlog_level)i;
	return ERL_NONE;
}

/* "2024/01/02 03:04:05 [error] 123#4: *5 message" */
int errlog_parse_line(const char *line, size_t len, struct errlog_line *out)
{
	const char *p = line, *end = line + len, *rb;
	long long v;

	if (len < 22 || p[4] != '/' || p[7] != '/' || p[10] != ' ' || p[13] != ':' || p[16] != ':' ||
	    p[19] != ' ' || p[20] != '[')
		return -EINVAL;
	if (!digits(p, 4, &out->year) || !digits(p + 5, 2, &out->mon) || !digits(p + 8, 2, &out->day) ||
	    !digits(p + 11, 2, &out->hour) || !digits(p + 14, 2, &out->min) || !digits(p + 17, 2, &out->sec))
		return -EINVAL;
	p += 21;
	rb = memchr(p, ']', (size_t)(end - p) < 8 ? (size_t)(end - p) : 8);
	if (!rb)
		return -EINVAL;
	out->level = level_of(p, (size_t)(rb - p));
	if (out->level == ERL_NONE)
		return -EINVAL;
	p = rb + 1;
	if (p < end && *p == ' ')
		p++;
	out->pid = out->tid = -1;
	out->cid = -1;
	/* "pid#tid: " */
	const char *q = p;
	long long pid, tid;
	if (number(&q, end, &pid) && q < end && *q == '#') {
		q++;
		if (number(&q, end, &tid) && end - q >= 1 && *q == ':') {
			q++;
			if (q < end && *q == ' ')
				q++;
			out->pid = (long)pid;
			out->tid = (long)tid;
			p = q;
			/* "*cid " */
			if (p < end && *p == '*') {
				q = p + 1;
				if (number(&q, end, &v) && (q == end || *q == ' ')) {
					out->cid = v;
					p = q < end ? q + 1 : q;
				}
			}
		}
	}
	out->msg = p;
	out->msg_len = (size_t)(end - p);
	return 0;
}

/* ---- patterns ---- */

static int compile_patterns(struct errlog *e, const char *const *pats, size_t n)
{
	size_t bytes = 0, npieces = 0;

	for (size_t i = 0; i < n; i++) {
		if (!pats[i] || !*pats[i] || strspn(pats[i], "*") == strlen(pats[i]))
			return -EINVAL;
		bytes += strlen(pats[i]) + 1;
		npieces += strlen(pats[i]) / 2 + 1;
	}
	if (n == 0)
		return 0;
	e->pats = calloc(n, sizeof(*e->pats));
	e->patbuf = malloc(bytes + npieces * sizeof(struct piece));
	if (!e->pats || !e->patbuf)
		return -ENOMEM;
	struct piece *pc = (struct piece *)e->patbuf;
	char *s = e->patbuf + npieces * sizeof(struct piece);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(pats[i]);
		memcpy(s, pats[i], l + 1);
		e->pats[i].pieces = pc;
		for (size_t a = 0; a < l;) {
			size_t b = a;
			while (b < l && s[b] != '*')
				b++;
			if (b > a) {
				pc->p = s + a;
				pc->len = b - a;
				pc++;
				e->pats[i].npieces++;
			}
			a = b + 1;
		}
		s += l + 1;
	}
	e->npats = n;
	return 0;
}

static bool match_pieces(const struct pattern *pt, const char *text, size_t len)
{
	const char *p = text, *end = text + len;

	for (size_t i = 0; i < pt->npieces; i++) {
		const char *q = memmem(p, (size_t)(end - p), pt->pieces[i].p, pt->pieces[i].len);
		if (!q)
			return false;
		p = q + pt->pieces[i].len;
	}
	return true;
}

int errlog_pattern_match(const char *pattern, const char *text, size_t len)
{
	struct errlog e;
	int rc;

	memset(&e, 0, sizeof(e));
	if (compile_patterns(&e, &pattern, 1)) {
		free(e.pats);
		free(e.patbuf);
		return -EINVAL;
	}
	rc = match_pieces(&e.pats[0], text, len);
	free(e.pats);
	free(e.patbuf);
	return rc;
}

static int match_any(const struct errlog *e, const char *line, size_t len)
{
	for (size_t i = 0; i < e->npats; i++)
		if (match_pieces(&e->pats[i], line, len))
			return (int)i;
	return -1;
}

/* ---- lifecycle ---- */

int errlog_new(const struct errlog_config *cfg, errlog_cb cb, void *arg, struct errlog **out)
{
	struct errlog_config def;
	struct errlog *e;
	int rc;

	*out = NULL;
	if (!cfg) {
		errlog_config_default(&def);
		cfg = &def;
	}
	if (!cfg->max_lines || !cfg->max_bytes || !cfg->max_record_lines || cfg->max_bytes > (1u << 30) ||
	    (unsigned)cfg->crit_level >= ERL__COUNT || !(cfg->rate_per_min >= 0) || !(cfg->flush_after >= 0))
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = *cfg;
	e->cfg.patterns = NULL;
	if (!e->cfg.burst)
		e->cfg.burst = cfg->rate_per_min >= 1 ? (unsigned)cfg->rate_per_min : 1;
	e->cb = cb;
	e->arg = arg;
	e->text = malloc((size_t)cfg->max_bytes + 1);
	rc = e->text ? compile_patterns(e, cfg->patterns, cfg->npatterns) : -ENOMEM;
	if (rc) {
		errlog_free(e);
		return rc;
	}
	*out = e;
	return 0;
}

void errlog_free(struct errlog *e)
{
	if (!e)
		return;
	free(e->pats);
	free(e->patbuf);
	free(e->text);
	free(e);
}

const struct errlog_counts *errlog_counts(const struct errlog *e)
{
	return &e->counts;
}

bool errlog_pending(const struct errlog *e)
{
	return e->pending;
}

/* ---- records ---- */

static bool take_token(struct errlog *e, double now)
{
	double rate = e->cfg.rate_per_min / 60.0, cap = e->cfg.burst;

	if (e->cfg.rate_per_min == 0)
		return true;
	if (!e->bucket_init) {
		e->tokens = cap;
		e->refilled = now;
		e->bucket_init = true;
	} else if (now > e->refilled) {
		e->tokens += (now - e->refilled) * rate;
		if (e->tokens > cap)
			e->tokens = cap;
		e->refilled = now;
	}
	if (e->tokens >= 1) {
		e->tokens -= 1;
		return true;
	}
	return false;
}

static void finish(struct errlog *e, double now)
{
	if (!e->pending)
		return;
	e->pending = false;
	e->counts.records[e->kind]++;
	if (!take_token(e, now)) {
		e->counts.suppressed++;
		e->unreported++;
		return;
	}
	e->counts.delivered++;
	e->text[e->len] = 0;
	struct errlog_record r = {
		.kind = e->kind,
		.level = e->level,
		.pattern = e->pattern,
		.text = e->text,
		.len = e->len,
		.lines = e->lines,
		.total_lines = e->total,
		.truncated = e->truncated,
		.suppressed = e->unreported,
		.start = e->start,
	};
	e->unreported = 0;
	if (e->cb)
		e->cb(&r, e->arg);
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	size_t len;
	unsigned min;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	unsigned cp = c & (0x3f >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Record text goes into events and JSON: make it a C string of valid
 * UTF-8 by replacing NUL bytes and each byte of an invalid sequence
 * (including one cut by max_bytes) with '?'. */
static void sanitize(char *s, size_t n)
{
	unsigned char *p = (unsigned char *)s;

	for (size_t i = 0; i < n;) {
		size_t l = p[i] ? utf8_len(p + i, n - i) : 0;
		if (!l) {
			p[i++] = '?';
			continue;
		}
		i += l;
	}
}

static void append(struct errlog *e, const char *line, size_t len)
{
	size_t room, sep = e->lines ? 1 : 0;

	e->total++;
	if (e->lines >= e->cfg.max_lines || e->len + sep >= e->cfg.max_bytes) {
		e->truncated = true;
		return;
	}
	room = e->cfg.max_bytes - e->len - sep;
	if (len > room) {
		len = room;
		e->truncated = true;
	}
	if (sep)
		e->text[e->len++] = '\n';
	memcpy(e->text + e->len, line, len);
	sanitize(e->text + e->len, len);
	e->len += len;
	e->lines++;
}

/* Blank lines held back inside a traceback, added once it continues. */
static void append_blanks(struct errlog *e)
{
	for (; e->blanks; e->blanks--)
		append(e, "", 0);
}

static void start(struct errlog *e, enum errlog_kind kind, enum errlog_level level, int pattern,
		  const char *line, size_t len, double now)
{
	e->pending = true;
	e->kind = kind;
	e->level = level;
	e->pattern = pattern;
	e->lines = e->total = e->blanks = 0;
	e->truncated = false;
	e->len = 0;
	e->start = e->last = now;
	if (kind == ERK_PANIC)
		e->counts.panics++;
	append(e, line, len);
	if (e->total >= e->cfg.max_record_lines)
		finish(e, now);
}

static bool starts_with(const char *p, size_t len, const char *s)
{
	size_t n = strlen(s);

	return len >= n && !memcmp(p, s, n);
}

static bool is_blank(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != ' ' && p[i] != '\t')
			return false;
	return true;
}

/* A line that continues a Go traceback after a blank line. */
static bool traceback_line(const char *p, size_t len)
{
	return starts_with(p, len, "goroutine ") || starts_with(p, len, "[signal ") ||
	       starts_with(p, len, "runtime stack:") || starts_with(p, len, "created by ") ||
	       starts_with(p, len, "exit status ") || starts_with(p, len, "\t");
}

enum errlog_level errlog_feed(struct errlog *e, const char *line, size_t len, double now)
{
	struct errlog_line pl;
	enum errlog_level level = ERL_NONE;
	bool ts, blank, panic;
	int pat;

	if (len && line[len - 1] == '\r')
		len--;
	ts = errlog_parse_line(line, len, &pl) == 0;
	if (ts) {
		level = pl.level;
		e->counts.lines[level]++;
		if (level >= e->cfg.crit_level)
			e->counts.critical++;
		panic = starts_with(pl.msg, pl.msg_len, "panic: ");
		blank = false;
	} else {
		e->counts.continuation++;
		panic = starts_with(line, len, "panic: ") || starts_with(line, len, "fatal error: ");
		blank = is_blank(line, len);
	}
	pat = blank ? -1 : match_any(e, line, len);
	if (pat >= 0)
		e->counts.pattern_matches++;

	if (e->pending) {
		if (ts || panic) {
			finish(e, now);
		} else if (e->kind == ERK_PANIC) {
			e->last = now;
			if (blank) {
				if (e->blanks)
					finish(e, now);   /* the second blank is consumed */
				else
					e->blanks++;
				return level;
			}
			if (e->blanks && !traceback_line(line, len)) {
				finish(e, now);
			} else {
				append_blanks(e);
				if (e->total >= e->cfg.max_record_lines) {
					finish(e, now);   /* full: this line stands alone */
				} else {
					append(e, line, len);
					if (e->total >= e->cfg.max_record_lines)
						finish(e, now);
					return level;
				}
			}
		} else {
			e->last = now;
			if (blank) {
				finish(e, now);
				return level;
			}
			append(e, line, len);
			if (e->total >= e->cfg.max_record_lines)
				finish(e, now);
			return level;
		}
	}

	if (panic)
		start(e, ERK_PANIC, level, pat, line, len, now);
	else if (ts && level >= e->cfg.crit_level)
		start(e, ERK_CRITICAL, level, pat, line, len, now);
	else if (pat >= 0)
		start(e, ERK_PATTERN, level, pat, line, len, now);
	return level;
}

void errlog_tick(struct errlog *e, double now)
{
	if (e->pending && now - e->last >= e->cfg.flush_after)
		finish(e, now);
}

void errlog_flush(struct errlog *e, double now)
{
	finish(e, now);
}
