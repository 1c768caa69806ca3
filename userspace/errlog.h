/* Error-log parsing: levels, critical errors, panics and configured
 * patterns assembled into bounded multi-line records, rate limited.
 *
 * Lines are pushed one at a time (the tailer delivers complete lines,
 * without '\n'). A line "YYYY/MM/DD HH:MM:SS [level] ..." is a timestamped
 * line; anything else (including an unknown level) is a continuation line.
 *
 * A record starts at:
 *  - a Go panic: a continuation line starting with "panic: " or
 *    "fatal error: ", or a timestamped line whose message starts with
 *    "panic: " (kind ERK_PANIC);
 *  - a timestamped line at crit, alert or emerg, or at the configured
 *    crit_level and above (ERK_CRITICAL);
 *  - a line matching a configured pattern (ERK_PATTERN). A pattern is
 *    plain text in which '*' stands for any run of bytes ("worker process
 *    * exited on signal"); the pieces must occur in order. No regex: each
 *    piece is a memmem, compiled once. Every line is checked, so a record
 *    of another kind also reports the pattern its first line matched.
 * The continuation lines that follow belong to the record. It ends at the
 * next timestamped line, at a line that starts another record, after
 * max_record_lines lines, when errlog_flush() is called, or when
 * errlog_tick() finds it idle for flush_after seconds. For a non-panic
 * record a blank line also ends it. A Go traceback has blank lines between
 * its parts, so a panic record ends at two blank lines in a row, or at a
 * blank line followed by a line that is not part of a traceback (one that
 * does not start with "goroutine ", "[signal ", "runtime stack:",
 * "created by ", "exit status " or a tab); that line is then processed on
 * its own.
 *
 * The record text holds the first max_lines lines, at most max_bytes bytes
 * (lines cut to fit), joined by '\n'; blank lines inside a traceback are
 * kept, trailing ones are not. It is always a C string of valid UTF-8:
 * NUL bytes and the bytes of invalid (or cut) UTF-8 sequences become '?'.
 *
 * Rate limit: a token bucket of burst records refilled at rate_per_min per
 * minute. A record that finds the bucket empty is not delivered; it is
 * counted as suppressed, and the next delivered record carries the number
 * suppressed since the previous delivery. Time is always passed in by the
 * caller (seconds, any monotonic origin): nothing here reads a clock.
 *
 * Ownership: the record passed to the callback, and its text, live only
 * during the call. The callback must not feed or flush the same errlog. */
#ifndef OS_ERRLOG_H
#define OS_ERRLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum errlog_level {
	ERL_DEBUG, ERL_INFO, ERL_NOTICE, ERL_WARN, ERL_ERROR, ERL_CRIT, ERL_ALERT, ERL_EMERG,
	ERL__COUNT,
	ERL_NONE = -1,   /* continuation line */
};

enum errlog_kind { ERK_CRITICAL, ERK_PANIC, ERK_PATTERN, ERK__COUNT };

/* One timestamped line, as parsed by errlog_parse_line(). */
struct errlog_line {
	int year, mon, day, hour, min, sec;   /* as written (local time of the server) */
	enum errlog_level level;
	long pid;                     /* -1 when absent */
	long tid;                     /* -1 when absent */
	long long cid;                /* connection id after '*', -1 when absent */
	const char *msg;              /* the rest of the line */
	size_t msg_len;
};

struct errlog_record {
	enum errlog_kind kind;
	enum errlog_level level;      /* of the first line; ERL_NONE for a raw panic */
	int pattern;                  /* index of the pattern the first line matched, or -1 */
	const char *text;             /* NUL-terminated */
	size_t len;
	unsigned lines;               /* lines in text */
	unsigned total_lines;         /* lines assembled into the record */
	bool truncated;               /* text lacks lines or bytes of the record */
	uint64_t suppressed;          /* records suppressed since the previous delivery */
	double start;                 /* caller time of the first line */
};

typedef void (*errlog_cb)(const struct errlog_record *r, void *arg);

struct errlog_config {
	const char *const *patterns;  /* copied by errlog_new */
	size_t npatterns;
	enum errlog_level crit_level; /* lowest level that makes an ERK_CRITICAL record */
	unsigned max_lines;           /* lines kept in the text */
	unsigned max_bytes;           /* bytes kept in the text */
	unsigned max_record_lines;    /* a record ends after this many lines */
	double flush_after;           /* seconds idle before errlog_tick ends a record */
	double rate_per_min;          /* delivered records per minute; 0 = unlimited */
	unsigned burst;               /* bucket size; 0 = max(1, rate_per_min) */
};

struct errlog_counts {
	uint64_t lines[ERL__COUNT];    /* timestamped lines by level */
	uint64_t continuation;        /* lines without timestamp and level */
	uint64_t critical;            /* lines at crit_level and above */
	uint64_t panics;              /* panic records started */
	uint64_t pattern_matches;     /* lines matching a pattern */
	uint64_t records[ERK__COUNT]; /* records completed, delivered or not */
	uint64_t delivered;
	uint64_t suppressed;
};

struct errlog;

/* Defaults: crit_level ERL_CRIT, max_lines 40, max_bytes 4096,
 * max_record_lines 1000, flush_after 2 s, 10 records per minute, burst 10. */
void errlog_config_default(struct errlog_config *c);

/* 0 and *out; -EINVAL for an empty pattern, a pattern of only '*', a limit
 * of 0 or an out-of-range level (cfg unchanged), -ENOMEM. cfg NULL means
 * the defaults. cb may be NULL (then only counting). */
int errlog_new(const struct errlog_config *cfg, errlog_cb cb, void *arg, struct errlog **out);
void errlog_free(struct errlog *e);   /* accepts NULL; drops a pending record */

/* Push one line; now is the caller's clock. Delivers the records this line
 * completes: the pending one if this line ends it, and, only when
 * max_record_lines is 1, the one it starts (otherwise a record this line
 * starts stays pending until a later line, tick or flush ends it).
 * Returns the line's level, or ERL_NONE for a continuation line. */
enum errlog_level errlog_feed(struct errlog *e, const char *line, size_t len, double now);
/* End the pending record if no line came for flush_after seconds. */
void errlog_tick(struct errlog *e, double now);
/* End the pending record now (end of file, shutdown). */
void errlog_flush(struct errlog *e, double now);
bool errlog_pending(const struct errlog *e);

const struct errlog_counts *errlog_counts(const struct errlog *e);

/* 0 for a timestamped line (out filled), -EINVAL otherwise. */
int errlog_parse_line(const char *line, size_t len, struct errlog_line *out);
const char *errlog_level_name(enum errlog_level l);    /* "warn"; "none" for ERL_NONE */
const char *errlog_kind_name(enum errlog_kind k);      /* "critical", "panic", "pattern" */

/* Pattern matcher, exposed for tests: 1 if text matches pattern. */
int errlog_pattern_match(const char *pattern, const char *text, size_t len);

#endif
