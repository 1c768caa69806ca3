/* Access-log format compiler and line parser.
 *
 * Design: a text log_format compiles to a leading literal plus a list of
 * fields, each a variable and the literal that follows it. Parsing walks
 * the line once: the leading literal is compared, then each field's value
 * ends where its following literal is found (memchr for one byte, a
 * memchr-and-compare loop for up to four, glibc's linear memmem beyond, so
 * the cost stays linear in the line even for hostile input). The final
 * literal is matched at the end of the line. Numeric variables first try
 * to read their digits and find the literal right after them, which saves
 * a search on the common path; if that fails they fall back to the search
 * (and then usually fail as malformed). Values are stored as spans into
 * the line; numbers are converted with digit loops bounded in length (no
 * strto*, which needs a NUL and accepts more than nginx writes).
 *
 * JSON lines are scanned by a small flat-object scanner: keys and string
 * values are located (an escaped quote is one preceded by an odd run of
 * backslashes), nested values are skipped by bracket depth, and keys are
 * looked up in the compiled map. Nothing is allocated per line in either
 * mode. */
#include "logfmt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- variables ---- */

enum vtype {
	VT_STR,          /* span only */
	VT_U64,          /* digits into a uint64_t field */
	VT_TIME,         /* seconds with fraction into microseconds */
	VT_TIME_LIST,    /* upstream times: sum */
	VT_STATUS,
	VT_STATUS_LIST,
	VT_METHOD,
	VT_PROTO,
	VT_REQUEST,
};

struct varinfo {
	const char *name;
	unsigned char type;
	unsigned char fixed;     /* width of a fixed-width value, or 0 */
	unsigned short off;      /* offset of the numeric field in struct logrec */
};

#define U64F(f) offsetof(struct logrec, f)

static const struct varinfo vars[LV__COUNT] = {
	[LV_REMOTE_ADDR] = { "remote_addr", VT_STR, 0, 0 },
	[LV_REMOTE_USER] = { "remote_user", VT_STR, 0, 0 },
	[LV_TIME_LOCAL] = { "time_local", VT_STR, 26, 0 },      /* 02/Jan/2024:03:04:05 +0000 */
	[LV_TIME_ISO8601] = { "time_iso8601", VT_STR, 25, 0 },  /* 2024-01-02T03:04:05+00:00 */
	[LV_MSEC] = { "msec", VT_STR, 0, 0 },
	[LV_REQUEST] = { "request", VT_REQUEST, 0, 0 },
	[LV_REQUEST_METHOD] = { "request_method", VT_METHOD, 0, 0 },
	[LV_REQUEST_URI] = { "request_uri", VT_STR, 0, 0 },
	[LV_URI] = { "uri", VT_STR, 0, 0 },
	[LV_SERVER_PROTOCOL] = { "server_protocol", VT_PROTO, 0, 0 },
	[LV_STATUS] = { "status", VT_STATUS, 0, 0 },
	[LV_BODY_BYTES_SENT] = { "body_bytes_sent", VT_U64, 0, U64F(body_bytes_sent) },
	[LV_BYTES_SENT] = { "bytes_sent", VT_U64, 0, U64F(bytes_sent) },
	[LV_REQUEST_LENGTH] = { "request_length", VT_U64, 0, U64F(request_length) },
	[LV_REQUEST_TIME] = { "request_time", VT_TIME, 0, U64F(request_time_us) },
	[LV_UPSTREAM_RESPONSE_TIME] = { "upstream_response_time", VT_TIME_LIST, 0, U64F(upstream_response_time_us) },
	[LV_UPSTREAM_CONNECT_TIME] = { "upstream_connect_time", VT_TIME_LIST, 0, U64F(upstream_connect_time_us) },
	[LV_UPSTREAM_HEADER_TIME] = { "upstream_header_time", VT_TIME_LIST, 0, U64F(upstream_header_time_us) },
	[LV_UPSTREAM_STATUS] = { "upstream_status", VT_STATUS_LIST, 0, 0 },
	[LV_UPSTREAM_ADDR] = { "upstream_addr", VT_STR, 0, 0 },
	[LV_HTTP_REFERER] = { "http_referer", VT_STR, 0, 0 },
	[LV_HTTP_USER_AGENT] = { "http_user_agent", VT_STR, 0, 0 },
	[LV_HTTP_X_FORWARDED_FOR] = { "http_x_forwarded_for", VT_STR, 0, 0 },
	[LV_HOST] = { "host", VT_STR, 0, 0 },
	[LV_SERVER_NAME] = { "server_name", VT_STR, 0, 0 },
	[LV_SCHEME] = { "scheme", VT_STR, 0, 0 },
};

enum logvar logvar_lookup(const char *name, size_t len)
{
	for (int i = 0; i < LV__COUNT; i++)
		if (strlen(vars[i].name) == len && !strncasecmp(vars[i].name, name, len))
			return (enum logvar)i;
	return LV_UNKNOWN;
}

const char *logvar_name(enum logvar v)
{
	return (unsigned)v < LV__COUNT ? vars[v].name : NULL;
}

static bool is_numeric_type(unsigned char t)
{
	return t == VT_U64 || t == VT_TIME || t == VT_STATUS;
}

/* ---- methods and protocols ---- */

static const char *const method_names[HM__COUNT] = {
	[HM_NONE] = "none", [HM_GET] = "GET", [HM_HEAD] = "HEAD", [HM_POST] = "POST",
	[HM_PUT] = "PUT", [HM_DELETE] = "DELETE", [HM_CONNECT] = "CONNECT",
	[HM_OPTIONS] = "OPTIONS", [HM_TRACE] = "TRACE", [HM_PATCH] = "PATCH", [HM_OTHER] = "other",
};

static const char *const proto_names[HP__COUNT] = {
	[HP_NONE] = "none", [HP_1_0] = "HTTP/1.0", [HP_1_1] = "HTTP/1.1",
	[HP_2_0] = "HTTP/2.0", [HP_3_0] = "HTTP/3.0", [HP_OTHER] = "other",
};

const char *http_method_name(enum http_method m)
{
	return (unsigned)m < HM__COUNT ? method_names[m] : "other";
}

const char *http_proto_name(enum http_proto p)
{
	return (unsigned)p < HP__COUNT ? proto_names[p] : "other";
}

/* Methods are case-sensitive (RFC 9110). Switch on length, then compare. */
enum http_method http_method_parse(const char *p, size_t len)
{
	switch (len) {
	case 3:
		if (!memcmp(p, "GET", 3))
			return HM_GET;
		if (!memcmp(p, "PUT", 3))
			return HM_PUT;
		break;
	case 4:
		if (!memcmp(p, "POST", 4))
			return HM_POST;
		if (!memcmp(p, "HEAD", 4))
			return HM_HEAD;
		break;
	case 5:
		if (!memcmp(p, "PATCH", 5))
			return HM_PATCH;
		if (!memcmp(p, "TRACE", 5))
			return HM_TRACE;
		break;
	case 6:
		if (!memcmp(p, "DELETE", 6))
			return HM_DELETE;
		break;
	case 7:
		if (!memcmp(p, "OPTIONS", 7))
			return HM_OPTIONS;
		if (!memcmp(p, "CONNECT", 7))
			return HM_CONNECT;
		break;
	}
	return HM_OTHER;
}

enum http_proto http_proto_parse(const char *p, size_t len)
{
	if (len != 8 || memcmp(p, "HTTP/", 5) || p[6] != '.')
		return HP_OTHER;
	switch (p[5]) {
	case '1':
		return p[7] == '1' ? HP_1_1 : p[7] == '0' ? HP_1_0 : HP_OTHER;
	case '2':
		return p[7] == '0' ? HP_2_0 : HP_OTHER;
	case '3':
		return p[7] == '0' ? HP_3_0 : HP_OTHER;
	}
	return HP_OTHER;
}

/* ---- numbers ---- */

static inline bool is_digit(unsigned char c)
{
	return (unsigned)(c - '0') < 10;
}

static bool is_dash(const char *p, size_t len)
{
	return len == 1 && p[0] == '-';
}

/* 1..19 digits. */
static int parse_u64(const char *p, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 19)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit((unsigned char)p[i]))
			return -EINVAL;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	*out = v;
	return 0;
}

static int parse_status(const char *p, size_t len, unsigned *out)
{
	unsigned v = 0;

	if (len == 0 || len > 3)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit((unsigned char)p[i]))
			return -EINVAL;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	*out = v;
	return 0;
}

/* "S" or "S.F": at most 12 integer digits (31000 years), any number of
 * fraction digits of which 6 are used. */
int logfmt_parse_time_us(const char *p, size_t len, uint64_t *us)
{
	static const uint32_t scale[7] = { 1000000, 100000, 10000, 1000, 100, 10, 1 };
	uint64_t sec = 0, frac = 0;
	size_t i = 0, nf = 0;

	while (i < len && is_digit((unsigned char)p[i])) {
		if (i == 12)
			return -EINVAL;
		sec = sec * 10 + (unsigned)(p[i++] - '0');
	}
	if (i == 0)
		return -EINVAL;
	if (i < len) {
		if (p[i++] != '.' || i == len)
			return -EINVAL;
		for (; i < len; i++, nf++) {
			if (!is_digit((unsigned char)p[i]))
				return -EINVAL;
			if (nf < 6)
				frac = frac * 10 + (unsigned)(p[i] - '0');
		}
	}
	*us = sec * 1000000 + frac * scale[nf < 6 ? nf : 6];
	return 0;
}

static inline bool is_list_sep(char c)
{
	return c == ' ' || c == ',' || c == ':';
}

/* Next token of an upstream list: entries separated by ", " or " : ". */
static bool next_token(const char **pp, const char *end, const char **tok, size_t *tlen)
{
	const char *p = *pp;

	while (p < end && is_list_sep(*p))
		p++;
	if (p == end)
		return false;
	*tok = p;
	while (p < end && !is_list_sep(*p))
		p++;
	*tlen = (size_t)(p - *tok);
	*pp = p;
	return true;
}

int logfmt_parse_time_list_us(const char *p, size_t len, uint64_t *us)
{
	const char *end = p + len, *tok;
	size_t tlen;
	uint64_t sum = 0, v;
	bool any = false, tokens = false;

	while (next_token(&p, end, &tok, &tlen)) {
		tokens = true;
		if (is_dash(tok, tlen))
			continue;
		if (logfmt_parse_time_us(tok, tlen, &v))
			return -EINVAL;
		sum += v;
		any = true;
	}
	if (!tokens)
		return -EINVAL;
	*us = sum;
	return any ? 0 : 1;
}

int logfmt_parse_status_list(const char *p, size_t len, unsigned *status)
{
	const char *end = p + len, *tok;
	size_t tlen;
	unsigned v = 0;
	bool any = false, tokens = false;

	while (next_token(&p, end, &tok, &tlen)) {
		tokens = true;
		if (is_dash(tok, tlen))
			continue;
		if (parse_status(tok, tlen, &v))
			return -EINVAL;
		any = true;
	}
	if (!tokens)
		return -EINVAL;
	*status = v;
	return any ? 0 : 1;
}

/* ---- storing one value ---- */

static inline void set_span(struct logrec *r, enum logvar v, const char *p, size_t len)
{
	r->has |= 1ull << v;
	r->v[v].p = p;
	r->v[v].len = len;
}

/* "METHOD SP URI SP PROTO", or "METHOD SP URI" (HTTP/0.9), or garbage. */
static void split_request(struct logrec *r, const char *p, size_t len)
{
	const char *end = p + len;
	const char *sp1 = memchr(p, ' ', len);
	const char *m_end = sp1 ? sp1 : end;

	if (!logrec_has(r, LV_REQUEST_METHOD)) {
		set_span(r, LV_REQUEST_METHOD, p, (size_t)(m_end - p));
		r->method = http_method_parse(p, (size_t)(m_end - p));
	}
	if (!sp1)
		return;
	const char *u = sp1 + 1;
	const char *sp2 = memrchr(u, ' ', (size_t)(end - u));
	const char *u_end = end;
	if (sp2 && end - (sp2 + 1) >= 5 && !memcmp(sp2 + 1, "HTTP/", 5)) {
		u_end = sp2;
		if (!logrec_has(r, LV_SERVER_PROTOCOL)) {
			set_span(r, LV_SERVER_PROTOCOL, sp2 + 1, (size_t)(end - sp2 - 1));
			r->proto = http_proto_parse(sp2 + 1, (size_t)(end - sp2 - 1));
		}
	} else if (!logrec_has(r, LV_SERVER_PROTOCOL)) {
		r->proto = HP_OTHER;   /* a request line without a version: HTTP/0.9 */
	}
	if (u_end > u && !logrec_has(r, LV_REQUEST_URI))
		set_span(r, LV_REQUEST_URI, u, (size_t)(u_end - u));
}

/* Empty or "-" is absent. Returns 0 or -EINVAL for a malformed number. */
static int store(struct logrec *r, enum logvar v, const char *p, size_t len)
{
	const struct varinfo *vi;
	uint64_t u;
	int rc;

	if (v >= LV__COUNT || len == 0 || is_dash(p, len))
		return 0;
	vi = &vars[v];
	switch (vi->type) {
	case VT_STR:
		break;
	case VT_U64:
		if (parse_u64(p, len, &u))
			return -EINVAL;
		*(uint64_t *)((char *)r + vi->off) = u;
		break;
	case VT_TIME:
		if (logfmt_parse_time_us(p, len, &u))
			return -EINVAL;
		*(uint64_t *)((char *)r + vi->off) = u;
		break;
	case VT_TIME_LIST:
		rc = logfmt_parse_time_list_us(p, len, &u);
		if (rc < 0)
			return rc;
		if (rc > 0)
			return 0;
		*(uint64_t *)((char *)r + vi->off) = u;
		break;
	case VT_STATUS:
		if (parse_status(p, len, &r->status))
			return -EINVAL;
		break;
	case VT_STATUS_LIST:
		rc = logfmt_parse_status_list(p, len, &r->upstream_status);
		if (rc < 0)
			return rc;
		if (rc > 0)
			return 0;
		break;
	case VT_METHOD:
		r->method = http_method_parse(p, len);
		break;
	case VT_PROTO:
		r->proto = http_proto_parse(p, len);
		break;
	case VT_REQUEST:
		split_request(r, p, len);
		break;
	}
	set_span(r, v, p, len);
	return 0;
}

/* ---- compiled format ---- */

enum how {
	H_SEARCH,   /* value ends at the first occurrence of the literal */
	H_SUFFIX,   /* last field: the literal ends the line */
	H_REST,     /* last field without a literal: rest of the line */
	H_FIXED,    /* fixed width, literal (possibly empty) right after */
};

struct field {
	unsigned char var;
	unsigned char how;
	bool numeric;         /* try the digits-then-literal fast path */
	unsigned char fixed;
	uint32_t lit_off;
	uint32_t lit_len;
};

struct jkey {
	const char *key;      /* into the format's own storage */
	uint32_t len;
	unsigned char var;
};

struct logfmt {
	bool json;
	/* text */
	char *lits;
	uint32_t prefix_len;
	size_t nfields;
	struct field *fields;
	/* json */
	struct jkey *keys;
	size_t nkeys;
	char *keybuf;
	uint32_t *slots;      /* open-addressing index of keys: key index + 1, 0 empty */
	size_t mask;
};

void logfmt_free(struct logfmt *f)
{
	if (!f)
		return;
	free(f->lits);
	free(f->fields);
	free(f->keys);
	free(f->keybuf);
	free(f->slots);
	free(f);
}

bool logfmt_is_json(const struct logfmt *f)
{
	return f->json;
}

static const char preset_combined[] =
	"$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
	"\"$http_referer\" \"$http_user_agent\"";
static const char preset_common[] =
	"$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent";

const char *logfmt_preset(const char *name)
{
	if (!name)
		return NULL;
	if (!strcmp(name, "combined"))
		return preset_combined;
	if (!strcmp(name, "common"))
		return preset_common;
	return NULL;
}

static int fail(struct logfmt_err *err, size_t pos, bool with_pos, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct logfmt_err *err, size_t pos, bool with_pos, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (!err)
		return -EINVAL;
	err->pos = pos;
	if (with_pos)
		n = snprintf(err->msg, sizeof(err->msg), "position %zu: ", pos);
	va_start(ap, fmt);
	vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool is_name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

/* Printable form of a variable name for messages: at most 40 bytes,
 * non-printable bytes as '?'. */
static void show_name(char *out, size_t outlen, const char *p, size_t len)
{
	size_t n = len < 40 ? len : 40, i;

	if (n >= outlen)
		n = outlen - 1;
	for (i = 0; i < n; i++)
		out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
	out[i] = 0;
}

/* Read a variable reference at fmt[*i] == '$'. Sets name span and advances. */
static int read_var(const char *fmt, size_t len, size_t *i, const char **name, size_t *nlen,
		    struct logfmt_err *err)
{
	size_t start = *i, j = *i + 1;

	if (j < len && fmt[j] == '{') {
		size_t n0 = ++j;
		while (j < len && fmt[j] != '}')
			j++;
		if (j == len)
			return fail(err, start, true, "unterminated \"${\"");
		if (j == n0)
			return fail(err, start, true, "empty variable name \"${}\"");
		for (size_t k = n0; k < j; k++)
			if (!is_name_char((unsigned char)fmt[k]))
				return fail(err, k, true, "invalid character in variable name");
		*name = fmt + n0;
		*nlen = j - n0;
		*i = j + 1;
		return 0;
	}
	size_t n0 = j;
	while (j < len && is_name_char((unsigned char)fmt[j]))
		j++;
	if (j == n0)
		return fail(err, start, true, "'$' not followed by a variable name");
	*name = fmt + n0;
	*nlen = j - n0;
	*i = j;
	return 0;
}

int logfmt_compile(const char *fmt, size_t len, struct logfmt **out, struct logfmt_err *err)
{
	struct logfmt *f;
	size_t i = 0, litlen = 0, cap;
	const char *prev_name = NULL;
	size_t prev_nlen = 0;
	int rc;

	*out = NULL;
	if (!fmt || len == 0)
		return fail(err, 0, false, "empty log format");
	if (len > UINT32_MAX / 2)
		return fail(err, 0, false, "log format too long");
	f = calloc(1, sizeof(*f));
	cap = len / 2 + 1;   /* every variable takes at least two bytes */
	if (f) {
		f->lits = malloc(len);
		f->fields = calloc(cap, sizeof(*f->fields));
	}
	if (!f || !f->lits || !f->fields) {
		logfmt_free(f);
		return -ENOMEM;
	}
	while (i < len) {
		const char *name;
		size_t nlen, start = i;

		if (fmt[i] != '$') {
			f->lits[litlen++] = fmt[i++];
			continue;
		}
		rc = read_var(fmt, len, &i, &name, &nlen, err);
		if (rc)
			goto fail;
		enum logvar v = logvar_lookup(name, nlen);
		if (f->nfields == 0) {
			f->prefix_len = (uint32_t)litlen;
		} else {
			struct field *pf = &f->fields[f->nfields - 1];
			pf->lit_len = (uint32_t)(litlen - pf->lit_off);
			if (pf->lit_len == 0 && !pf->fixed) {
				char a[48], b[48];
				show_name(a, sizeof(a), prev_name, prev_nlen);
				show_name(b, sizeof(b), name, nlen);
				rc = fail(err, start, true,
					  "$%s and $%s are adjacent with no literal text between them (cannot split; "
					  "only $time_local and $time_iso8601 have a fixed width)", a, b);
				goto fail;
			}
		}
		struct field *nf = &f->fields[f->nfields++];
		nf->var = (unsigned char)v;
		nf->fixed = v < LV__COUNT ? vars[v].fixed : 0;
		nf->numeric = v < LV__COUNT && is_numeric_type(vars[v].type);
		nf->lit_off = (uint32_t)litlen;
		prev_name = name;
		prev_nlen = nlen;
	}
	if (f->nfields == 0) {
		rc = fail(err, 0, false, "log format has no variables");
		goto fail;
	}
	f->fields[f->nfields - 1].lit_len = (uint32_t)(litlen - f->fields[f->nfields - 1].lit_off);
	for (size_t k = 0; k < f->nfields; k++) {
		struct field *fl = &f->fields[k];
		if (k == f->nfields - 1)
			fl->how = fl->lit_len ? H_SUFFIX : H_REST;
		else if (fl->lit_len == 0)
			fl->how = H_FIXED;
		else
			fl->how = H_SEARCH;
		/* the fast path needs a literal that cannot continue the number */
		if (fl->numeric && (fl->how != H_SEARCH || is_digit((unsigned char)f->lits[fl->lit_off]) ||
				    f->lits[fl->lit_off] == '.' || f->lits[fl->lit_off] == '-'))
			fl->numeric = false;
	}
	*out = f;
	return 0;
fail:
	logfmt_free(f);
	return rc;
}

/* ---- JSON map ---- */

static int json_new(size_t n, size_t keybytes, struct logfmt **out)
{
	struct logfmt *f = calloc(1, sizeof(*f));

	if (f) {
		f->json = true;
		f->keys = calloc(n ? n : 1, sizeof(*f->keys));
		f->keybuf = malloc(keybytes ? keybytes : 1);
	}
	if (!f || !f->keys || !f->keybuf) {
		logfmt_free(f);
		return -ENOMEM;
	}
	*out = f;
	return 0;
}

/* Append key -> var; a key mapped twice keeps the last mapping. */
static void json_add(struct logfmt *f, size_t *used, const char *key, size_t klen, enum logvar v)
{
	char *k = f->keybuf + *used;

	memcpy(k, key, klen);
	*used += klen;
	for (size_t i = 0; i < f->nkeys; i++)
		if (f->keys[i].len == klen && !memcmp(f->keys[i].key, key, klen)) {
			f->keys[i].var = (unsigned char)v;
			return;
		}
	f->keys[f->nkeys].key = k;
	f->keys[f->nkeys].len = (uint32_t)klen;
	f->keys[f->nkeys].var = (unsigned char)v;
	f->nkeys++;
}

/* Keys are looked up once per JSON member at parsing speed: hash on the
 * length and three bytes, which tells the variable names apart. */
static inline size_t key_hash(const char *k, size_t len)
{
	size_t h = len * 0x9e3779b1u;

	if (len)
		h ^= (unsigned char)k[0] * 31u ^ (unsigned char)k[len - 1] * 131u ^ (unsigned char)k[len / 2] * 7u;
	return h ^ (h >> 7);
}

/* Build the index once the keys are final; takes ownership of f on error. */
static int json_index(struct logfmt *f, struct logfmt **out)
{
	size_t n = 16;

	while (n < 4 * f->nkeys)
		n *= 2;
	f->slots = calloc(n, sizeof(*f->slots));
	if (!f->slots) {
		logfmt_free(f);
		return -ENOMEM;
	}
	f->mask = n - 1;
	for (size_t i = 0; i < f->nkeys; i++) {
		size_t h = key_hash(f->keys[i].key, f->keys[i].len) & f->mask;
		while (f->slots[h])
			h = (h + 1) & f->mask;
		f->slots[h] = (uint32_t)i + 1;
	}
	*out = f;
	return 0;
}

int logfmt_compile_json(const char *const *keys, const char *const *vars_, size_t n, struct logfmt **out,
			struct logfmt_err *err)
{
	struct logfmt *f;
	size_t bytes = 0, used = 0;
	int rc;

	*out = NULL;
	if (n == 0) {
		for (int i = 0; i < LV__COUNT; i++)
			bytes += strlen(vars[i].name);
		rc = json_new(LV__COUNT, bytes, &f);
		if (rc)
			return rc;
		for (int i = 0; i < LV__COUNT; i++)
			json_add(f, &used, vars[i].name, strlen(vars[i].name), (enum logvar)i);
		return json_index(f, out);
	}
	for (size_t i = 0; i < n; i++) {
		const char *v = vars_[i] ? vars_[i] : "";
		size_t vl;
		if (*v == '$')
			v++;
		vl = strlen(v);
		if (vl >= 2 && v[0] == '{' && v[vl - 1] == '}') {
			v++;
			vl -= 2;
		}
		if (!keys[i] || !*keys[i])
			return fail(err, i, false, "JSON map entry %zu: empty key", i);
		if (strlen(keys[i]) > UINT32_MAX / 2)
			return fail(err, i, false, "JSON map entry %zu: key too long", i);
		if (logvar_lookup(v, vl) == LV_UNKNOWN) {
			char b[48];
			show_name(b, sizeof(b), v, vl);
			return fail(err, i, false, "JSON map entry %zu: unknown variable \"%s\" for key", i, b);
		}
		bytes += strlen(keys[i]);
	}
	rc = json_new(n, bytes, &f);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		const char *v = vars_[i];
		size_t vl;
		if (*v == '$')
			v++;
		vl = strlen(v);
		if (vl >= 2 && v[0] == '{' && v[vl - 1] == '}') {
			v++;
			vl -= 2;
		}
		json_add(f, &used, keys[i], strlen(keys[i]), logvar_lookup(v, vl));
	}
	return json_index(f, out);
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* From just after an opening quote: the closing quote, or NULL. A quote is
 * escaped when an odd run of backslashes precedes it; each backslash is
 * looked at once at most, so this stays linear. */
static const char *scan_string(const char *s, const char *end)
{
	const char *p = s;

	for (;;) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		size_t bs = 0;
		if (!q)
			return NULL;
		while (q - bs > s && q[-1 - (ptrdiff_t)bs] == '\\')
			bs++;
		if (!(bs & 1))
			return q;
		p = q + 1;
	}
}

int logfmt_compile_json_format(const char *fmt, size_t len, struct logfmt **out, struct logfmt_err *err)
{
	const char *end = fmt + len, *p;
	struct logfmt *f;
	size_t used = 0;
	int rc;

	*out = NULL;
	if (!fmt || len == 0)
		return fail(err, 0, false, "empty log format");
	if (len > UINT32_MAX / 2)
		return fail(err, 0, false, "log format too long");
	p = skip_ws(fmt, end);
	if (p == end || *p != '{')
		return fail(err, (size_t)(p - fmt), true, "an escape=json format must be a JSON object");
	/* at most one mapping per 4 bytes ("k":$v); keys are copied */
	rc = json_new(len / 4 + 1, len, &f);
	if (rc)
		return rc;
	while (p < end) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		if (!q)
			break;
		const char *k = q + 1, *ke = scan_string(k, end);
		if (!ke)
			break;
		p = skip_ws(ke + 1, end);
		if (p == end || *p != ':')
			continue;    /* a string value, not a key */
		p = skip_ws(p + 1, end);
		const char *vs, *ve;
		bool quoted = p < end && *p == '"';
		if (quoted) {
			vs = p + 1;
			ve = scan_string(vs, end);
			if (!ve)
				break;
			p = ve + 1;
		} else {
			vs = p;
			while (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\t' && *p != '\n')
				p++;
			ve = p;
		}
		/* the value must be exactly one variable reference */
		if (ve - vs < 2 || *vs != '$')
			continue;
		size_t i = (size_t)(vs - fmt), nlen;
		const char *name;
		if (read_var(fmt, (size_t)(ve - fmt), &i, &name, &nlen, NULL) || fmt + i != ve)
			continue;
		enum logvar v = logvar_lookup(name, nlen);
		if (v != LV_UNKNOWN && ke > k)
			json_add(f, &used, k, (size_t)(ke - k), v);
	}
	if (f->nkeys == 0) {
		logfmt_free(f);
		return fail(err, 0, false, "no \"key\":$variable pair found in the escape=json format");
	}
	return json_index(f, out);
}

/* ---- parsing ---- */

static inline const char *find_lit(const char *p, const char *end, const char *lit, size_t n)
{
	size_t avail = (size_t)(end - p);

	if (avail < n)
		return NULL;
	if (n == 1)
		return memchr(p, lit[0], avail);
	if (n <= 4) {
		while ((size_t)(end - p) >= n) {
			const char *q = memchr(p, lit[0], (size_t)(end - p) - n + 1);
			if (!q)
				return NULL;
			if (!memcmp(q + 1, lit + 1, n - 1))
				return q;
			p = q + 1;
		}
		return NULL;
	}
	return memmem(p, avail, lit, n);
}

static int parse_text(const struct logfmt *f, const char *p, const char *end, struct logrec *r)
{
	const char *lits = f->lits;

	if ((size_t)(end - p) < f->prefix_len || memcmp(p, lits, f->prefix_len))
		return -EINVAL;
	p += f->prefix_len;
	for (size_t k = 0; k < f->nfields; k++) {
		const struct field *fl = &f->fields[k];
		const char *lit = lits + fl->lit_off, *q;
		size_t ll = fl->lit_len;

		switch (fl->how) {
		case H_SEARCH:
			if (fl->numeric) {
				q = p;
				while (q < end && (is_digit((unsigned char)*q) || *q == '.'))
					q++;
				if (q == p && q < end && *q == '-')
					q++;
				if ((size_t)(end - q) >= ll && *q == *lit && !memcmp(q, lit, ll))
					goto found;
			}
			q = find_lit(p, end, lit, ll);
			if (!q)
				return -EINVAL;
found:
			if (store(r, (enum logvar)fl->var, p, (size_t)(q - p)))
				return -EINVAL;
			p = q + ll;
			break;
		case H_FIXED:
			if ((size_t)(end - p) < (size_t)fl->fixed + ll || memcmp(p + fl->fixed, lit, ll))
				return -EINVAL;
			if (store(r, (enum logvar)fl->var, p, fl->fixed))
				return -EINVAL;
			p += fl->fixed + ll;
			break;
		case H_SUFFIX:
			if ((size_t)(end - p) < ll || memcmp(end - ll, lit, ll))
				return -EINVAL;
			if (store(r, (enum logvar)fl->var, p, (size_t)(end - ll - p)))
				return -EINVAL;
			p = end;
			break;
		default: /* H_REST */
			if (store(r, (enum logvar)fl->var, p, (size_t)(end - p)))
				return -EINVAL;
			p = end;
			break;
		}
	}
	return p == end ? 0 : -EINVAL;
}

static enum logvar json_var(const struct logfmt *f, const char *k, size_t klen)
{
	for (size_t h = key_hash(k, klen) & f->mask;; h = (h + 1) & f->mask) {
		uint32_t i = f->slots[h];
		if (!i)
			return LV_UNKNOWN;
		if (f->keys[i - 1].len == klen && !memcmp(f->keys[i - 1].key, k, klen))
			return (enum logvar)f->keys[i - 1].var;
	}
}

/* Skip a nested object or array from its opening bracket; returns the
 * position after the matching close, or NULL. Bracket kinds are not
 * checked against each other: the value is discarded anyway. */
static const char *skip_nested(const char *p, const char *end)
{
	size_t depth = 0;

	while (p < end) {
		switch (*p) {
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (--depth == 0)
				return p + 1;
			break;
		case '"':
			p = scan_string(p + 1, end);
			if (!p)
				return NULL;
			break;
		}
		p++;
	}
	return NULL;
}

static inline bool is_scalar_end(char c)
{
	return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int parse_json(const struct logfmt *f, const char *p, const char *end, struct logrec *r)
{
	p = skip_ws(p, end);
	if (p == end || *p != '{')
		return -EINVAL;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto tail;
	}
	for (;;) {
		const char *k, *ke, *v, *ve;
		bool str = false;

		if (p == end || *p != '"')
			return -EINVAL;
		k = p + 1;
		ke = scan_string(k, end);
		if (!ke)
			return -EINVAL;
		p = skip_ws(ke + 1, end);
		if (p == end || *p != ':')
			return -EINVAL;
		p = skip_ws(p + 1, end);
		if (p == end)
			return -EINVAL;
		if (*p == '"') {
			v = p + 1;
			ve = scan_string(v, end);
			if (!ve)
				return -EINVAL;
			p = ve + 1;
			str = true;
		} else if (*p == '{' || *p == '[') {
			p = skip_nested(p, end);
			if (!p)
				return -EINVAL;
			v = ve = NULL;
		} else {
			v = p;
			while (p < end && !is_scalar_end(*p))
				p++;
			ve = p;
			if (ve == v)
				return -EINVAL;
		}
		if (v) {
			enum logvar var = json_var(f, k, (size_t)(ke - k));
			size_t vl = (size_t)(ve - v);
			if (var != LV_UNKNOWN && !(!str && vl == 4 && !memcmp(v, "null", 4)) &&
			    store(r, var, v, vl))
				return -EINVAL;
		}
		p = skip_ws(p, end);
		if (p == end)
			return -EINVAL;
		if (*p == '}') {
			p++;
			break;
		}
		if (*p != ',')
			return -EINVAL;
		p = skip_ws(p + 1, end);
	}
tail:
	p = skip_ws(p, end);
	return p == end ? 0 : -EINVAL;
}

int logfmt_parse(const struct logfmt *f, const char *line, size_t len, struct logrec *rec)
{
	rec->has = 0;
	rec->method = HM_NONE;
	rec->proto = HP_NONE;
	if (len && line[len - 1] == '\r')
		len--;
	if (f->json)
		return parse_json(f, line, line + len, rec);
	return parse_text(f, line, line + len, rec);
}

int logfmt_compile_spec(const char *spec, struct logfmt **out, struct logfmt_err *err)
{
	const char *preset = logfmt_preset(spec);
	const char *p = spec;

	if (preset)
		return logfmt_compile(preset, strlen(preset), out, err);
	if (strcmp(spec, "json") == 0)
		return logfmt_compile_json(NULL, NULL, 0, out, err);
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '{')
		return logfmt_compile_json_format(spec, strlen(spec), out, err);
	return logfmt_compile(spec, strlen(spec), out, err);
}
