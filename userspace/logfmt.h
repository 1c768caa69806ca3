/* Access-log parsing: an nginx log_format compiled once, lines parsed at
 * memory speed with no allocation and no regex.
 *
 * Two modes:
 *  - text: the log_format string in nginx variable syntax ($var, ${var}).
 *    Literal text between variables must appear in the line exactly; a
 *    variable's value is what lies between the literal before it and the
 *    first occurrence of the literal after it (the last literal of the
 *    format is matched at the end of the line instead, so a final quoted
 *    user agent may hold anything). nginx escapes '"', '\\' and control
 *    bytes in logged values ("\x22"), so a quoted field never holds its own
 *    delimiter; the escapes are kept as logged, not decoded.
 *  - JSON lines (nginx log_format escape=json): one flat JSON object per
 *    line, values found by key through a key -> variable map. Nested
 *    objects/arrays are skipped; string escapes are kept as logged.
 *
 * Rules shared by both modes:
 *  - "-" (text) and "" / null (JSON) mean absent: the variable's has-bit
 *    stays clear.
 *  - Unknown variables are skipped (their text is matched, not stored).
 *  - A numeric variable whose value is not a number makes the line
 *    malformed (it means the format does not describe the log).
 *  - $request is split into method, request URI and protocol: it also sets
 *    LV_REQUEST_METHOD, LV_REQUEST_URI and LV_SERVER_PROTOCOL unless those
 *    are logged separately (a separately logged value wins).
 *  - Upstream times are lists when a request went to several servers
 *    ("0.010, 0.020") or through several upstream groups ("0.010 : 0.005");
 *    the record holds the sum of the numeric entries ("-" entries are
 *    skipped; all "-" means absent). $upstream_status holds the last
 *    numeric entry (the response that was used).
 *  - Times are converted to integer microseconds (nginx logs milliseconds;
 *    more than 6 fraction digits are truncated).
 *
 * Text-format compile decisions: an empty format and a format without any
 * variable are errors; two variables with no literal between them are an
 * error (the split point is unknowable) unless the first has a fixed width
 * ($time_local, 26 bytes; $time_iso8601, 25 bytes). A '$' not followed by
 * a name, an unterminated "${" or an empty "${}" are errors. Variable
 * names are case-insensitive, as in nginx. Errors carry the 0-based byte
 * position in the format and a message "position N: ...".
 *
 * Ownership: a compiled struct logfmt is immutable; it may be shared by
 * several parsers and threads. A struct logrec points into the parsed line
 * (valid only while the caller keeps the line). */
#ifndef OS_LOGFMT_H
#define OS_LOGFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum logvar {
	LV_REMOTE_ADDR,
	LV_REMOTE_USER,
	LV_TIME_LOCAL,
	LV_TIME_ISO8601,
	LV_MSEC,
	LV_REQUEST,
	LV_REQUEST_METHOD,
	LV_REQUEST_URI,
	LV_URI,
	LV_SERVER_PROTOCOL,
	LV_STATUS,
	LV_BODY_BYTES_SENT,
	LV_BYTES_SENT,
	LV_REQUEST_LENGTH,
	LV_REQUEST_TIME,
	LV_UPSTREAM_RESPONSE_TIME,
	LV_UPSTREAM_CONNECT_TIME,
	LV_UPSTREAM_HEADER_TIME,
	LV_UPSTREAM_STATUS,
	LV_UPSTREAM_ADDR,
	LV_HTTP_REFERER,
	LV_HTTP_USER_AGENT,
	LV_HTTP_X_FORWARDED_FOR,
	LV_HOST,
	LV_SERVER_NAME,
	LV_SCHEME,
	LV__COUNT,
	LV_UNKNOWN = LV__COUNT,
};

enum http_method {
	HM_NONE,        /* not logged or "-" */
	HM_GET, HM_HEAD, HM_POST, HM_PUT, HM_DELETE, HM_CONNECT, HM_OPTIONS, HM_TRACE, HM_PATCH,
	HM_OTHER,
	HM__COUNT,
};

enum http_proto {
	HP_NONE,        /* not logged, or a request line without one */
	HP_1_0, HP_1_1, HP_2_0, HP_3_0,
	HP_OTHER,       /* HTTP/0.9 and anything unrecognised */
	HP__COUNT,
};

struct lf_span {
	const char *p;
	size_t len;
};

/* One parsed line. Only has and the enums are reset per line: a value is
 * meaningful only when its bit is set in has (bit 1 << LV_x). */
struct logrec {
	uint64_t has;
	struct lf_span v[LV__COUNT];    /* raw value text of every variable in has */
	enum http_method method;        /* from $request_method, else $request */
	enum http_proto proto;          /* from $server_protocol, else $request */
	unsigned status;                /* LV_STATUS, 0..999 */
	unsigned upstream_status;       /* LV_UPSTREAM_STATUS, last of the list */
	uint64_t body_bytes_sent;
	uint64_t bytes_sent;
	uint64_t request_length;
	uint64_t request_time_us;
	uint64_t upstream_response_time_us;   /* sums over the list */
	uint64_t upstream_connect_time_us;
	uint64_t upstream_header_time_us;
};

static inline bool logrec_has(const struct logrec *r, enum logvar v)
{
	return (r->has >> v) & 1;
}

struct logfmt;

struct logfmt_err {
	size_t pos;          /* 0-based byte position in the format (text mode) */
	char msg[192];       /* "position N: ..." or a message without position */
};

/* Built-in format text by name: "combined" (nginx's predefined format) and
 * "common" (the NCSA common log format in nginx syntax: nginx predefines
 * only combined). NULL for any other name. */
const char *logfmt_preset(const char *name);

/* Compile a text log_format (len bytes, need not be NUL-terminated).
 * 0 and *out, or -EINVAL with err filled (err may be NULL), or -ENOMEM. */
int logfmt_compile(const char *fmt, size_t len, struct logfmt **out, struct logfmt_err *err);

/* JSON-lines mode with an explicit map (keys[i] -> vars[i]; a var may be
 * written with or without the '$'). n == 0 selects the default map: every
 * known variable under its own name ("status" -> $status). An unknown
 * variable name or an empty key is an error. */
int logfmt_compile_json(const char *const *keys, const char *const *vars, size_t n, struct logfmt **out,
			struct logfmt_err *err);

/* JSON-lines mode with the map taken from an escape=json log_format such as
 * '{"ts":"$time_iso8601","st":$status}': every "key": followed by a value
 * that is exactly one variable (quoted or not) maps key -> variable;
 * composite values and unknown variables are not mapped. Errors: the
 * format is not an object, or nothing could be mapped. */
int logfmt_compile_json_format(const char *fmt, size_t len, struct logfmt **out, struct logfmt_err *err);

/* The agent config's access_logs[].format: a preset name ("combined",
 * "common"), "json" (JSON lines, default map), an escape=json log_format
 * (starts with '{'), or a text log_format. Returns as logfmt_compile. */
int logfmt_compile_spec(const char *spec, struct logfmt **out, struct logfmt_err *err);
void logfmt_free(struct logfmt *f);   /* accepts NULL */
bool logfmt_is_json(const struct logfmt *f);

/* Parse one line (without its '\n'; one trailing '\r' is ignored). Returns
 * 0, or -EINVAL when the line does not match the format (the record is
 * then partially filled and must not be used). Any bytes, any length: the
 * work is linear in len. */
int logfmt_parse(const struct logfmt *f, const char *line, size_t len, struct logrec *rec);

/* Variable id from a name without '$' (case-insensitive); LV_UNKNOWN if
 * not one of the above. */
enum logvar logvar_lookup(const char *name, size_t len);
const char *logvar_name(enum logvar v);            /* "remote_addr"; NULL if out of range */

enum http_method http_method_parse(const char *p, size_t len);
enum http_proto http_proto_parse(const char *p, size_t len);
const char *http_method_name(enum http_method m);  /* "GET", ..., "other", "none" */
const char *http_proto_name(enum http_proto p);    /* "HTTP/1.1", ..., "other", "none" */

/* Helpers, exposed for tests: integer microseconds from "12.345"; sum of a
 * list of times; last status of a list. 0 and the value, 1 when every
 * entry is "-" (absent), -EINVAL when malformed. */
int logfmt_parse_time_us(const char *p, size_t len, uint64_t *us);
int logfmt_parse_time_list_us(const char *p, size_t len, uint64_t *us);
int logfmt_parse_status_list(const char *p, size_t len, unsigned *status);

#endif
