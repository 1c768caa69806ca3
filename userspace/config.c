/* Agent configuration loader.
 *
 * Design: libyaml's document API loads the whole file into a node tree, which
 * is then walked against small static key tables, one per kind of mapping
 * (top level, each section, one log entry). A table entry names a key, the
 * kind of value it takes (which decides how the value is parsed and checked)
 * and where the result lands (an offset into the struct being filled). The
 * walker alone deals with unknown keys, duplicate keys and node types; the
 * per-kind code checks values; an optional per-table hook checks rules that
 * span keys. Parsing starts from config_default() and overwrites what the
 * file sets. The first error stops the walk: it is formatted once as
 * "file:line: message" and the half-built config goes to config_free, so
 * there is a single cleanup path and nothing leaks.
 *
 * Nothing here trusts the text: input over 1 MiB or nested deeper than
 * CONFIG_MAX_DEPTH is refused before the tree is built, scalars with NUL
 * bytes are refused, values quoted back in messages are escaped and
 * truncated, and the schema has a fixed depth, so alias cycles that libyaml
 * can build (&a [*a]) only ever meet a type error. */
#include "config.h"

#include "buf.h"
#include "log.h"
#include "logfmt.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define CONFIG_MAX_SIZE (1024 * 1024)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct pctx {
	const char *name;
	yaml_document_t *doc;
	char *err;
	size_t errlen;
};

enum kind {
	K_SECTION,	/* nested mapping described by ->sub, same base */
	K_PATH,		/* char *, absolute path */
	K_COMM,		/* char *, process name of 1..15 chars */
	K_COMMAND,	/* char *, command line split into argv later */
	K_STRING,	/* char *, any non-empty string */
	K_LISTEN,	/* char *, host:port; NULL when "" or "off" */
	K_SIGNAL,	/* int */
	K_DURATION,	/* uint64_t ms in min..max */
	K_SIZE,		/* size_t in min..max */
	K_BYTES,	/* size_t bytes in min..max: 4096, 64KiB, 4MiB, 1GiB (also K, M, G) */
	K_HTTP_URL,	/* char *, http://HOST:PORT/PATH with a numeric host or localhost */
	K_DIRS,		/* char ** of normalised dirs, count (size_t) at ->off2 */
	K_STRINGS,	/* char ** of non-empty strings, count (size_t) at ->off2 */
	K_LOGS,		/* struct log_spec *, entries as ->sub, count at ->off2 */
	K_BOOL,		/* bool: true/false (also yes/no, on/off) */
	K_MODE,		/* unsigned file mode in octal: 0600, 660 (0..0777) */
};

struct table;

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	size_t off2;
	uint64_t min, max;
	const struct table *sub;
	bool required;
	const char *def;	/* default for a string key left out */
};

struct table {
	const struct key *keys;
	size_t n;
	/* Cross-key rules, run after the mapping; at is the section's key. */
	int (*check)(struct pctx *p, void *base, const yaml_node_t *at);
};

/* ---- error reporting ---- */

static size_t line_of(const yaml_node_t *n)
{
	return n ? n->start_mark.line + 1 : 1;
}

/* A byte no message or path may carry: a line break would make one
 * message two (or forge a log line), the rest garble a terminal. */
static bool is_control(char c)
{
	return (unsigned char)c < 0x20 || c == 0x7f;
}

static int vfail_line(struct pctx *p, size_t line, int rc, const char *fmt, va_list ap)
{
	int n;

	if (!p->err || !p->errlen)
		return rc;
	if (line)
		n = snprintf(p->err, p->errlen, "%s:%zu: ", p->name, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->name);
	if (n >= 0 && (size_t)n < p->errlen)
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	/* The message is one line whatever a value held (a YAML flow
	 * scalar folds CRs into newlines): control bytes become '?'. */
	for (char *c = p->err; *c; c++)
		if (is_control(*c))
			*c = '?';
	return rc;
}

static int fail_line(struct pctx *p, size_t line, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail_line(struct pctx *p, size_t line, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rc = vfail_line(p, line, rc, fmt, ap);
	va_end(ap);
	return rc;
}

/* -EINVAL with "name:line: message" for the line of node n. */
static int fail(struct pctx *p, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct pctx *p, const yaml_node_t *n, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_line(p, line_of(n), -EINVAL, fmt, ap);
	va_end(ap);
	return rc;
}

static int oom(struct pctx *p)
{
	return fail_line(p, 0, -ENOMEM, "out of memory");
}

/* Quote untrusted text for a message: escaped, at most ~48 characters. */
static const char *quote(char *q, size_t qlen, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	q[o++] = '"';
	for (i = 0; i < len && o + 8 < qlen; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			q[o++] = '\\';
			q[o++] = (char)ch;
		} else if (is_control((char)ch)) {
			q[o++] = '\\';
			q[o++] = 'x';
			q[o++] = hex[ch >> 4];
			q[o++] = hex[ch & 15];
		} else {
			q[o++] = (char)ch;
		}
	}
	q[o++] = '"';
	if (i < len) {
		memcpy(q + o, "...", 3);
		o += 3;
	}
	q[o] = '\0';
	return q;
}

#define QBUF 64
#define Q(buf, s) quote(buf, sizeof(buf), s, strlen(s))

static const char *node_kind(const yaml_node_t *n)
{
	switch (n ? n->type : YAML_NO_NODE) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

/* A plain "", "~" or "null": YAML's null, e.g. "key:" with no value. */
static bool is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = (const char *)n->data.scalar.value;
	return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* The scalar text of n ("" for a null); NUL bytes are refused. */
static int get_scalar(struct pctx *p, const yaml_node_t *n, const char *path, const char **out)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return fail(p, n, "%s: expected a scalar, got %s", path, node_kind(n));
	if (is_null(n)) {
		*out = "";
		return 0;
	}
	if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
		return fail(p, n, "%s: value contains a NUL byte", path);
	*out = (const char *)n->data.scalar.value;
	return 0;
}

static int set_str(struct pctx *p, char **dst, const char *s)
{
	char *d = strdup(s);

	if (!d)
		return oom(p);
	free(*dst);
	*dst = d;
	return 0;
}

static void fmt_ms(char *b, size_t n, uint64_t ms)
{
	if (ms && ms % 3600000 == 0)
		snprintf(b, n, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms && ms % 60000 == 0)
		snprintf(b, n, "%llum", (unsigned long long)(ms / 60000));
	else if (ms && ms % 1000 == 0)
		snprintf(b, n, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(b, n, "%llums", (unsigned long long)ms);
}

static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* ---- value checks ---- */

static int check_path(struct pctx *p, const yaml_node_t *n, const char *path, const char *s)
{
	char q[QBUF];

	if (!*s)
		return fail(p, n, "%s: must not be empty", path);
	if (*s != '/')
		return fail(p, n, "%s: %s is not an absolute path", path, Q(q, s));
	if (strlen(s) >= PATH_MAX)
		return fail(p, n, "%s: path is longer than %d bytes", path, PATH_MAX - 1);
	for (const char *c = s; *c; c++)
		if (is_control(*c))
			return fail(p, n, "%s: %s contains a control character", path, Q(q, s));
	return 0;
}

/* Absolute dir to canonical text: "//a//b/" -> "/a/b"; "." and ".." refused. */
static int normalise_dir(struct pctx *p, const yaml_node_t *n, const char *path, const char *s,
			 char **out)
{
	size_t len = strlen(s), o = 0;
	const char *c = s;
	char q[QBUF], *d;
	int rc;

	rc = check_path(p, n, path, s);
	if (rc)
		return rc;
	d = malloc(len + 1);
	if (!d)
		return oom(p);
	while (*c) {
		const char *e;
		size_t cl;

		while (*c == '/')
			c++;
		if (!*c)
			break;
		e = strchrnul(c, '/');
		cl = (size_t)(e - c);
		if ((cl == 1 && c[0] == '.') || (cl == 2 && c[0] == '.' && c[1] == '.')) {
			free(d);
			return fail(p, n, "%s: %s must not contain \".\" or \"..\" components",
				    path, Q(q, s));
		}
		d[o++] = '/';
		memcpy(d + o, c, cl);
		o += cl;
		c = e;
	}
	if (!o)
		d[o++] = '/';
	d[o] = '\0';
	*out = d;
	return 0;
}

static int split_command(const char *cmd, const char *config_path, char ***argv_out,
			 const char **why);

static int check_command(struct pctx *p, const yaml_node_t *n, const char *path, const char *s)
{
	const char *why = NULL;
	char **argv;
	int rc;

	/* Only checked here: the executor splits it with config_split_command
	 * and execs argv directly, it is never handed to a shell. */
	rc = split_command(s, "/", &argv, &why);
	if (rc == -ENOMEM)
		return oom(p);
	if (rc)
		return fail(p, n, "%s: %s", path, why);
	/* a root daemon does no PATH search (spawn.h): say so now, not at
	 * the first apply */
	if (argv[0][0] != '/') {
		char q[QBUF];

		rc = fail(p, n, "%s: the program %s is not an absolute path (there is no PATH search)", path,
			  Q(q, argv[0]));
	}
	config_free_argv(argv);
	return rc;
}

static int set_scalar(struct pctx *p, const struct key *k, const yaml_node_t *v, void *base,
		      const char *path)
{
	char *field = (char *)base + k->off;
	char q[QBUF], lo[24], hi[24];
	const char *s = "";
	uint64_t u;
	int rc, sig;

	rc = get_scalar(p, v, path, &s);
	if (rc)
		return rc;
	switch (k->kind) {
	case K_PATH:
		rc = check_path(p, v, path, s);
		break;
	case K_COMM:
		if (!*s)
			rc = fail(p, v, "%s: must not be empty", path);
		else if (strlen(s) > 15)
			rc = fail(p, v, "%s: %s is longer than 15 characters (the kernel's comm limit)",
				  path, Q(q, s));
		break;
	case K_COMMAND:
		rc = check_command(p, v, path, s);
		break;
	case K_STRING:
		if (!*s)
			rc = fail(p, v, "%s: must not be empty", path);
		break;
	case K_LISTEN:
		if (!*s || !strcmp(s, "off")) {
			free(*(char **)field);
			*(char **)field = NULL;
			return 0;
		}
		if (config_parse_listen(s, NULL, 0, NULL))
			rc = fail(p, v, "%s: invalid listen address %s (use host:port or [v6addr]:port "
				  "with a numeric host and port 1..65535, or \"off\")", path, Q(q, s));
		break;
	case K_BOOL:
		if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) {
			*(bool *)field = true;
		} else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) {
			*(bool *)field = false;
		} else {
			return fail(p, v, "%s: %s is not true or false", path, Q(q, s));
		}
		return 0;
	case K_SIGNAL:
		if (config_parse_signal(s, &sig))
			return fail(p, v, "%s: unknown signal %s (use a name like HUP or USR1, or a "
				    "number 1..64)", path, Q(q, s));
		if (sig == SIGKILL || sig == SIGSTOP)
			return fail(p, v, "%s: %s cannot be used to reload a process", path, Q(q, s));
		*(int *)field = sig;
		return 0;
	case K_DURATION:
		if (config_parse_duration_ms(s, &u))
			return fail(p, v, "%s: invalid duration %s (use e.g. 500ms, 1s, 2m)", path,
				    Q(q, s));
		if (u < k->min || u > k->max) {
			fmt_ms(lo, sizeof(lo), k->min);
			fmt_ms(hi, sizeof(hi), k->max);
			return fail(p, v, "%s: %s is out of range (%s..%s)", path, Q(q, s), lo, hi);
		}
		*(uint64_t *)field = u;
		return 0;
	case K_HTTP_URL: {
		char host[128], upath[256];
		uint16_t port;
		if (config_parse_http_url(s, host, sizeof(host), &port, upath, sizeof(upath)))
			return fail(p, v, "%s: %s is not a URL of the form http://127.0.0.1:8080/path", path, Q(q, s));
		break;
	}
	case K_BYTES:
		if (config_parse_bytes(s, &u))
			return fail(p, v, "%s: %s is not a size (use e.g. 65536, 64KiB, 4MiB)", path, Q(q, s));
		if (u < k->min || u > k->max)
			return fail(p, v, "%s: %s is out of range (%llu..%llu bytes)", path, Q(q, s),
				    (unsigned long long)k->min, (unsigned long long)k->max);
		*(size_t *)field = (size_t)u;
		return 0;
	case K_MODE: {
		char *end = NULL;
		unsigned long m;
		errno = 0;
		m = *s >= '0' && *s <= '7' ? strtoul(s, &end, 8) : 0;
		if (!end || *end || errno || m > 0777)
			return fail(p, v, "%s: %s is not a file mode (octal, e.g. 0600)", path, Q(q, s));
		*(unsigned *)field = (unsigned)m;
		return 0;
	}
	case K_SIZE:
		if (parse_u64(s, &u))
			return fail(p, v, "%s: %s is not a number", path, Q(q, s));
		if (u < k->min || u > k->max)
			return fail(p, v, "%s: %s is out of range (%llu..%llu)", path, Q(q, s),
				    (unsigned long long)k->min, (unsigned long long)k->max);
		*(size_t *)field = (size_t)u;
		return 0;
	default:
		return fail(p, v, "%s: internal error: bad key kind", path);
	}
	if (rc)
		return rc;
	return set_str(p, (char **)field, s);
}

/* ---- structure walk ---- */

static int walk_map(struct pctx *p, const yaml_node_t *map, const struct table *t, void *base,
		    const char *path, const yaml_node_t *at);

static int set_dirs(struct pctx *p, const struct key *k, const yaml_node_t *v, void *base,
		    const char *path)
{
	char ***arr = (char ***)((char *)base + k->off);
	size_t *cnt = (size_t *)((char *)base + k->off2);
	yaml_node_item_t *it;
	char ipath[160];
	size_t n;
	int rc;

	if (is_null(v))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return fail(p, v, "%s: expected a list, got %s", path, node_kind(v));
	n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (!n)
		return 0;
	*arr = calloc(n, sizeof(**arr));
	if (!*arr)
		return oom(p);
	for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		const yaml_node_t *e = yaml_document_get_node(p->doc, *it);
		const char *s = "";

		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, *cnt);
		rc = get_scalar(p, e, ipath, &s);
		if (!rc && k->kind == K_STRINGS) {
			if (!*s)
				rc = fail(p, e, "%s: must not be empty", ipath);
			else if (strlen(s) > 256)
				rc = fail(p, e, "%s: longer than 256 bytes", ipath);
			else if (!((*arr)[*cnt] = strdup(s)))
				rc = oom(p);
		} else if (!rc) {
			rc = normalise_dir(p, e, ipath, s, &(*arr)[*cnt]);
		}
		if (rc)
			return rc;
		(*cnt)++;
	}
	return 0;
}

static int set_logs(struct pctx *p, const struct key *k, const yaml_node_t *v, void *base,
		    const char *path)
{
	struct log_spec **arr = (struct log_spec **)((char *)base + k->off);
	size_t *cnt = (size_t *)((char *)base + k->off2);
	yaml_node_item_t *it;
	char ipath[160];
	size_t n;
	int rc;

	if (is_null(v))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return fail(p, v, "%s: expected a list, got %s", path, node_kind(v));
	n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (!n)
		return 0;
	*arr = calloc(n, sizeof(**arr));
	if (!*arr)
		return oom(p);
	for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		const yaml_node_t *e = yaml_document_get_node(p->doc, *it);

		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, *cnt);
		/* Counted first so config_free sees a half-filled entry. */
		(*cnt)++;
		rc = walk_map(p, e, k->sub, &(*arr)[*cnt - 1], ipath, e);
		if (rc)
			return rc;
	}
	return 0;
}

static int walk_map(struct pctx *p, const yaml_node_t *map, const struct table *t, void *base,
		    const char *path, const yaml_node_t *at)
{
	yaml_node_pair_t *pair;
	char q[QBUF], kpath[128];
	uint32_t seen = 0;	/* bit i: keys[i] was given; tables stay under 32 keys */
	size_t i;
	int rc;

	if (!map || (!is_null(map) && map->type != YAML_MAPPING_NODE))
		return fail(p, map, "%s: expected a mapping, got %s", path, node_kind(map));
	if (map->type == YAML_MAPPING_NODE) {
		for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
			const yaml_node_t *kn = yaml_document_get_node(p->doc, pair->key);
			const yaml_node_t *vn = yaml_document_get_node(p->doc, pair->value);
			const struct key *k = NULL;
			const char *ks;
			size_t kl;

			if (!kn || kn->type != YAML_SCALAR_NODE)
				return fail(p, kn, "%s%skeys must be scalars, got %s", path,
					    *path ? ": " : "", node_kind(kn));
			ks = (const char *)kn->data.scalar.value;
			kl = kn->data.scalar.length;
			for (i = 0; i < t->n; i++) {
				if (strlen(t->keys[i].name) == kl && !memcmp(t->keys[i].name, ks, kl)) {
					k = &t->keys[i];
					break;
				}
			}
			if (!k) {
				if (!*path)
					return fail(p, kn, "unknown key %s at top level",
						    quote(q, sizeof(q), ks, kl));
				return fail(p, kn, "unknown key %s in %s", quote(q, sizeof(q), ks, kl),
					    path);
			}
			if ((seen & (1u << i)) && !*path)
				return fail(p, kn, "duplicate key \"%s\" at top level", k->name);
			if (seen & (1u << i))
				return fail(p, kn, "duplicate key \"%s\" in %s", k->name, path);
			seen |= 1u << i;
			snprintf(kpath, sizeof(kpath), "%s%s%s", path, *path ? "." : "", k->name);
			if (!vn)
				return fail(p, kn, "%s: missing value", kpath);
			if (k->kind == K_SECTION)
				rc = walk_map(p, vn, k->sub, base, kpath, kn);
			else if (k->kind == K_DIRS || k->kind == K_STRINGS)
				rc = set_dirs(p, k, vn, base, kpath);
			else if (k->kind == K_LOGS)
				rc = set_logs(p, k, vn, base, kpath);
			else
				rc = set_scalar(p, k, vn, base, kpath);
			if (rc)
				return rc;
		}
	}
	for (i = 0; i < t->n; i++) {
		const struct key *k = &t->keys[i];

		if (seen & (1u << i))
			continue;
		if (k->required)
			return fail(p, map, "%s: %s is required", path, k->name);
		if (k->def) {
			rc = set_str(p, (char **)((char *)base + k->off), k->def);
			if (rc)
				return rc;
		}
	}
	return t->check ? t->check(p, base, at) : 0;
}

/* ---- schema ---- */

static int check_onepanel(struct pctx *p, void *base, const yaml_node_t *at)
{
	struct onepanel_config *op = &((struct agent_config *)base)->onepanel;

	if (!op->binary && !op->name && !op->pid_file)
		return fail(p, at, "onepanel: one of binary, name or pid_file is required");
	op->configured = true;
	return 0;
}

#define OFF(f) offsetof(struct agent_config, f)
#define LOFF(f) offsetof(struct log_spec, f)

/* The format must compile: a bad one is a config error with its line. */
static int check_access_log(struct pctx *p, void *base, const yaml_node_t *at)
{
	struct log_spec *ls = base;
	struct logfmt *f = NULL;
	struct logfmt_err e = { 0 };
	int rc = logfmt_compile_spec(ls->format ? ls->format : "combined", &f, &e);

	logfmt_free(f);
	if (rc == -ENOMEM)
		return oom(p);
	if (rc)
		return fail(p, at, "access log %s: format: %s", ls->path ? ls->path : "?", e.msg);
	if (!ls->max_line)
		ls->max_line = 64 * 1024;
	return 0;
}

static int check_error_log(struct pctx *p, void *base, const yaml_node_t *at)
{
	struct log_spec *ls = base;

	(void)p;
	(void)at;
	if (!ls->max_line)
		ls->max_line = 64 * 1024;
	return 0;
}

static const struct key access_log_keys[] = {
	{ .name = "path", .kind = K_PATH, .off = LOFF(path), .required = true },
	{ .name = "format", .kind = K_STRING, .off = LOFF(format), .def = "combined" },
	{ .name = "from_start", .kind = K_BOOL, .off = LOFF(from_start) },
	{ .name = "max_line", .kind = K_BYTES, .off = LOFF(max_line), .min = 256, .max = 16u << 20 },
};
static const struct table access_log_table = { access_log_keys, ARRAY_SIZE(access_log_keys), check_access_log };

static const struct key error_log_keys[] = {
	{ .name = "path", .kind = K_PATH, .off = LOFF(path), .required = true },
	{ .name = "from_start", .kind = K_BOOL, .off = LOFF(from_start) },
	{ .name = "max_line", .kind = K_BYTES, .off = LOFF(max_line), .min = 256, .max = 16u << 20 },
	{ .name = "patterns", .kind = K_STRINGS, .off = LOFF(patterns), .off2 = LOFF(npatterns) },
};
static const struct table error_log_table = { error_log_keys, ARRAY_SIZE(error_log_keys), check_error_log };

static const struct key onepanel_keys[] = {
	{ .name = "binary", .kind = K_PATH, .off = OFF(onepanel.binary) },
	{ .name = "name", .kind = K_COMM, .off = OFF(onepanel.name) },
	{ .name = "pid_file", .kind = K_PATH, .off = OFF(onepanel.pid_file) },
	{ .name = "config_file", .kind = K_PATH, .off = OFF(onepanel.config_file) },
	{ .name = "allowed_dirs", .kind = K_DIRS, .off = OFF(onepanel.allowed_dirs),
	  .off2 = OFF(onepanel.n_allowed_dirs) },
	{ .name = "validate_command", .kind = K_COMMAND, .off = OFF(onepanel.validate_command) },
	{ .name = "version_command", .kind = K_COMMAND, .off = OFF(onepanel.version_command) },
	{ .name = "reload_signal", .kind = K_SIGNAL, .off = OFF(onepanel.reload_signal) },
	{ .name = "reload_timeout", .kind = K_DURATION, .off = OFF(onepanel.reload_timeout_ms),
	  .min = 100, .max = 10 * 60 * 1000 },
	{ .name = "validate_timeout", .kind = K_DURATION, .off = OFF(onepanel.validate_timeout_ms),
	  .min = 100, .max = 10 * 60 * 1000 },
	{ .name = "max_file_size", .kind = K_BYTES, .off = OFF(onepanel.max_file_bytes),
	  .min = 1, .max = 256ULL << 20 },
	{ .name = "max_total_size", .kind = K_BYTES, .off = OFF(onepanel.max_total_bytes),
	  .min = 1, .max = 1ULL << 30 },
	{ .name = "max_files", .kind = K_SIZE, .off = OFF(onepanel.max_files), .min = 1, .max = 10000 },
	{ .name = "health_url", .kind = K_HTTP_URL, .off = OFF(onepanel.health_url) },
	{ .name = "validate_fail_on_warn", .kind = K_BOOL, .off = OFF(onepanel.validate_fail_on_warn) },
	{ .name = "access_logs", .kind = K_LOGS, .off = OFF(onepanel.access_logs),
	  .off2 = OFF(onepanel.n_access_logs), .sub = &access_log_table },
	{ .name = "error_logs", .kind = K_LOGS, .off = OFF(onepanel.error_logs),
	  .off2 = OFF(onepanel.n_error_logs), .sub = &error_log_table },
};
static const struct table onepanel_table = { onepanel_keys, ARRAY_SIZE(onepanel_keys), check_onepanel };

/* api.tls: both halves of the server's pair, and a client CA only with them. */
static int check_api_tls(struct pctx *p, void *base, const yaml_node_t *at)
{
	const struct api_tls_config *t = &((struct agent_config *)base)->api.tls;

	if (!t->cert_file != !t->key_file)
		return fail(p, at, "api.tls: cert_file and key_file go together (%s is missing)",
			    t->cert_file ? "key_file" : "cert_file");
	if (t->client_ca_file && !t->cert_file)
		return fail(p, at, "api.tls.client_ca_file needs cert_file and key_file (client "
			    "certificates are checked inside TLS)");
	if (t->crl_file && !t->client_ca_file)
		return fail(p, at, "api.tls.crl_file needs client_ca_file (it revokes client certificates "
			    "that CA issued)");
	return 0;
}

/* A listener others can reach is refused without TLS, or without auth,
 * unless api.insecure says it is meant: a config-writing root daemon open
 * to the network by accident is worse than one that does not start. */
static int check_api(struct pctx *p, void *base, const yaml_node_t *at)
{
	struct api_config *api = &((struct agent_config *)base)->api;
	const char *const names[] = { "rest_listen", "grpc_listen" };
	const char *const addrs[] = { api->rest_listen, api->grpc_listen };
	char q[QBUF];

	for (size_t i = 0; !api->insecure && i < ARRAY_SIZE(addrs); i++) {
		if (!addrs[i] || config_listen_is_loopback(addrs[i]))
			continue;
		if (!api->tls.cert_file)
			return fail(p, at, "api.%s: %s is not a loopback address and api.tls is not "
				    "configured: set api.tls (cert_file, key_file), or api.insecure: true "
				    "if a plaintext API there is meant", names[i], addrs[i]);
		if (!api->auth)
			return fail(p, at, "api: %s %s is not a loopback address and api.auth is false: "
				    "refusing to serve unauthenticated to the network (set api.insecure: true "
				    "if that is meant)", names[i], Q(q, addrs[i]));
	}
	if (api->rest_socket && api->grpc_socket && !strcmp(api->rest_socket, api->grpc_socket))
		return fail(p, at, "api: rest_socket and grpc_socket are the same path %s", Q(q, api->rest_socket));
	return 0;
}

static const struct key api_tls_keys[] = {
	{ .name = "cert_file", .kind = K_PATH, .off = OFF(api.tls.cert_file) },
	{ .name = "key_file", .kind = K_PATH, .off = OFF(api.tls.key_file) },
	{ .name = "client_ca_file", .kind = K_PATH, .off = OFF(api.tls.client_ca_file) },
	{ .name = "crl_file", .kind = K_PATH, .off = OFF(api.tls.crl_file) },
};
static const struct table api_tls_table = { api_tls_keys, ARRAY_SIZE(api_tls_keys), check_api_tls };
static const struct key api_limits_keys[] = {
	{ .name = "max_header_bytes", .kind = K_BYTES, .off = OFF(api.limits.max_header_bytes),
	  .min = 1024, .max = 1u << 20 },
	{ .name = "max_body_bytes", .kind = K_BYTES, .off = OFF(api.limits.max_body_bytes),
	  .min = 1024, .max = 16u << 20 },
	{ .name = "max_json_depth", .kind = K_SIZE, .off = OFF(api.limits.max_json_depth), .min = 2, .max = 1000 },
	{ .name = "max_connections_per_peer", .kind = K_SIZE, .off = OFF(api.limits.max_connections_per_peer),
	  .min = 1, .max = 10000 },
	{ .name = "applies_per_minute", .kind = K_SIZE, .off = OFF(api.limits.applies_per_minute),
	  .min = 1, .max = 10000 },
	{ .name = "grpc_max_message_bytes", .kind = K_BYTES, .off = OFF(api.limits.grpc_max_message_bytes),
	  .min = 4096, .max = 64u << 20 },
	{ .name = "max_streams_per_peer", .kind = K_SIZE, .off = OFF(api.limits.max_streams_per_peer),
	  .min = 1, .max = 10000 },
};
static const struct table api_limits_table = { api_limits_keys, ARRAY_SIZE(api_limits_keys), NULL };

static const struct key api_keys[] = {
	{ .name = "limits", .kind = K_SECTION, .sub = &api_limits_table },
	{ .name = "rest_listen", .kind = K_LISTEN, .off = OFF(api.rest_listen) },
	{ .name = "grpc_listen", .kind = K_LISTEN, .off = OFF(api.grpc_listen) },
	{ .name = "max_sse_clients", .kind = K_SIZE, .off = OFF(api.max_sse_clients),
	  .min = 1, .max = 10000 },
	{ .name = "max_subscribers", .kind = K_SIZE, .off = OFF(api.max_subscribers),
	  .min = 1, .max = 10000 },
	{ .name = "tls", .kind = K_SECTION, .sub = &api_tls_table },
	/* authentication (issue 8) */
	{ .name = "auth", .kind = K_BOOL, .off = OFF(api.auth) },
	{ .name = "token_file", .kind = K_PATH, .off = OFF(api.token_file), .def = CONFIG_DEFAULT_TOKEN_FILE },
	{ .name = "metrics_auth", .kind = K_BOOL, .off = OFF(api.metrics_auth) },
	{ .name = "insecure", .kind = K_BOOL, .off = OFF(api.insecure) },
	{ .name = "rest_socket", .kind = K_PATH, .off = OFF(api.rest_socket) },
	{ .name = "grpc_socket", .kind = K_PATH, .off = OFF(api.grpc_socket) },
	{ .name = "socket_mode", .kind = K_MODE, .off = OFF(api.socket_mode) },
};
static const struct table api_table = { api_keys, ARRAY_SIZE(api_keys), check_api };

static const struct key metrics_keys[] = {
	{ .name = "interval", .kind = K_DURATION, .off = OFF(metrics.interval_ms),
	  .min = 100, .max = 60 * 60 * 1000 },
};
static const struct table metrics_table = { metrics_keys, ARRAY_SIZE(metrics_keys), NULL };

static const struct key events_keys[] = {
	{ .name = "journal_size", .kind = K_SIZE, .off = OFF(events.journal_size),
	  .min = 16, .max = 1048576 },
};
static const struct table events_table = { events_keys, ARRAY_SIZE(events_keys), NULL };

static const struct key ebpf_keys[] = {
	{ .name = "enabled", .kind = K_BOOL, .off = OFF(ebpf.enabled) },
	{ .name = "scheduler_delay", .kind = K_BOOL, .off = OFF(ebpf.scheduler_delay) },
	{ .name = "syscall_probe_max_duration", .kind = K_DURATION, .off = OFF(ebpf.syscall_probe_max_ms),
	  .min = 1000, .max = 24ULL * 60 * 60 * 1000 },
	{ .name = "syscall_probe_always_on", .kind = K_BOOL, .off = OFF(ebpf.syscall_probe_always_on) },
};
static const struct table ebpf_table = { ebpf_keys, ARRAY_SIZE(ebpf_keys), NULL };

/* address: host:port with a port, or unix:/absolute; labels: key=value. */
static int check_oneshield(struct pctx *p, void *base, const yaml_node_t *at)
{
	struct oneshield_config *o = &((struct agent_config *)base)->oneshield;

	if (o->address) {
		const char *a = o->address, *colon = strrchr(a, ':');
		uint64_t port = 0;
		if (strncmp(a, "unix:", 5) == 0) {
			if (a[5] != '/')
				return fail(p, at, "oneshield.address: unix: needs an absolute path");
		} else if (!colon || colon == a || parse_u64(colon + 1, &port) || port == 0 || port > 65535 ||
			   strpbrk(a, " \t/")) {
			return fail(p, at, "oneshield.address: \"%s\" is not host:port", a);
		}
	}
	for (size_t i = 0; i < o->nlabels; i++) {
		const char *l = o->labels[i], *eq = strchr(l, '=');
		if (!eq || eq == l)
			return fail(p, at, "oneshield.labels[%zu]: \"%s\" is not key=value", i, l);
		for (const char *c = l; c < eq; c++)
			if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
				return fail(p, at, "oneshield.labels[%zu]: key may hold only letters, digits, _ - .", i);
	}
	if (o->agent_id && strlen(o->agent_id) > 256)
		return fail(p, at, "oneshield.agent_id: longer than 256 bytes");
	if (!o->tls.cert_file != !o->tls.key_file)
		return fail(p, at, "oneshield.tls: cert_file and key_file go together");
	if (o->tls.ca_file || o->tls.server_name || o->tls.cert_file)
		o->tls.enabled = true;
	return 0;
}

static const struct key oneshield_tls_keys[] = {
	{ .name = "enabled", .kind = K_BOOL, .off = OFF(oneshield.tls.enabled) },
	{ .name = "ca_file", .kind = K_PATH, .off = OFF(oneshield.tls.ca_file) },
	{ .name = "server_name", .kind = K_STRING, .off = OFF(oneshield.tls.server_name) },
	{ .name = "cert_file", .kind = K_PATH, .off = OFF(oneshield.tls.cert_file) },
	{ .name = "key_file", .kind = K_PATH, .off = OFF(oneshield.tls.key_file) },
};
static const struct table oneshield_tls_table = { oneshield_tls_keys, ARRAY_SIZE(oneshield_tls_keys), NULL };

static const struct key oneshield_keys[] = {
	{ .name = "address", .kind = K_STRING, .off = OFF(oneshield.address) },
	{ .name = "token_file", .kind = K_PATH, .off = OFF(oneshield.token_file) },
	{ .name = "agent_id", .kind = K_STRING, .off = OFF(oneshield.agent_id) },
	{ .name = "labels", .kind = K_STRINGS, .off = OFF(oneshield.labels), .off2 = OFF(oneshield.nlabels) },
	{ .name = "report_interval", .kind = K_DURATION, .off = OFF(oneshield.report_interval_ms),
	  .min = 1000, .max = 3600000 },
	{ .name = "spool_dir", .kind = K_PATH, .off = OFF(oneshield.spool_dir) },
	{ .name = "spool_max_bytes", .kind = K_BYTES, .off = OFF(oneshield.spool_max_bytes),
	  .min = 64u << 10, .max = 64ull << 30 },
	{ .name = "retry_max", .kind = K_DURATION, .off = OFF(oneshield.retry_max_ms), .min = 100, .max = 3600000 },
	{ .name = "keepalive_time", .kind = K_DURATION, .off = OFF(oneshield.keepalive_time_ms),
	  .min = 1000, .max = 3600000 },
	{ .name = "keepalive_timeout", .kind = K_DURATION, .off = OFF(oneshield.keepalive_timeout_ms),
	  .min = 1000, .max = 300000 },
	{ .name = "tls", .kind = K_SECTION, .sub = &oneshield_tls_table },
};
static const struct table oneshield_table = { oneshield_keys, ARRAY_SIZE(oneshield_keys), check_oneshield };
static const struct key security_keys[] = {
	{ .name = "drop_capabilities", .kind = K_BOOL, .off = OFF(security.drop_capabilities) },
};
static const struct table security_table = { security_keys, ARRAY_SIZE(security_keys), NULL };

static const struct key top_keys[] = {
	{ .name = "onepanel", .kind = K_SECTION, .sub = &onepanel_table },
	{ .name = "api", .kind = K_SECTION, .sub = &api_table },
	{ .name = "metrics", .kind = K_SECTION, .sub = &metrics_table },
	{ .name = "events", .kind = K_SECTION, .sub = &events_table },
	{ .name = "ebpf", .kind = K_SECTION, .sub = &ebpf_table },
	{ .name = "oneshield", .kind = K_SECTION, .sub = &oneshield_table },
	{ .name = "security", .kind = K_SECTION, .sub = &security_table },
};
static const struct table top_table = { top_keys, ARRAY_SIZE(top_keys), NULL };

/* ---- public API ---- */

struct agent_config *config_default(void)
{
	struct agent_config *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->onepanel.reload_signal = SIGHUP;
	c->onepanel.reload_timeout_ms = 5000;
	c->onepanel.validate_timeout_ms = 30000;
	c->onepanel.max_file_bytes = 4u << 20;
	c->onepanel.max_total_bytes = 16u << 20;
	c->onepanel.max_files = 256;
	c->api.rest_listen = strdup("127.0.0.1:9440");
	c->api.grpc_listen = strdup("127.0.0.1:9441");
	c->api.max_sse_clients = 64;
	c->api.max_subscribers = 256;
	c->api.limits.max_header_bytes = 16u << 10;
	c->api.limits.max_body_bytes = 64u << 10;
	c->api.limits.max_json_depth = 32;
	c->api.limits.max_connections_per_peer = 64;
	c->api.limits.applies_per_minute = 30;
	c->api.limits.grpc_max_message_bytes = 1u << 20;
	c->api.limits.max_streams_per_peer = 16;
	c->api.auth = true;
	c->api.token_file = strdup(CONFIG_DEFAULT_TOKEN_FILE);
	c->api.socket_mode = 0600;
	c->metrics.interval_ms = 1000;
	c->events.journal_size = 4096;
	c->ebpf.enabled = true;
	c->ebpf.scheduler_delay = true;
	c->ebpf.syscall_probe_max_ms = 300000;
	c->oneshield.report_interval_ms = 15000;
	c->oneshield.spool_dir = strdup("/var/lib/oneshield-agent");
	c->oneshield.spool_max_bytes = 64u << 20;
	c->oneshield.retry_max_ms = 60000;
	c->oneshield.keepalive_time_ms = 30000;
	c->oneshield.keepalive_timeout_ms = 10000;
	c->security.drop_capabilities = true;
	if (!c->api.rest_listen || !c->api.grpc_listen || !c->oneshield.spool_dir || !c->api.token_file) {
		config_free(c);
		return NULL;
	}
	return c;
}

static void free_logs(struct log_spec *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(l[i].path);
		free(l[i].format);
		for (size_t j = 0; j < l[i].npatterns; j++)
			free(l[i].patterns[j]);
		free(l[i].patterns);
	}
	free(l);
}

void config_free(struct agent_config *c)
{
	size_t i;

	if (!c)
		return;
	free(c->path);
	free(c->onepanel.binary);
	free(c->onepanel.name);
	free(c->onepanel.pid_file);
	free(c->onepanel.config_file);
	for (i = 0; i < c->onepanel.n_allowed_dirs; i++)
		free(c->onepanel.allowed_dirs[i]);
	free(c->onepanel.allowed_dirs);
	free(c->onepanel.validate_command);
	free(c->onepanel.version_command);
	free(c->onepanel.health_url);
	free_logs(c->onepanel.access_logs, c->onepanel.n_access_logs);
	free_logs(c->onepanel.error_logs, c->onepanel.n_error_logs);
	free(c->api.rest_listen);
	free(c->api.grpc_listen);
	free(c->oneshield.address);
	free(c->oneshield.token_file);
	free(c->oneshield.agent_id);
	for (i = 0; i < c->oneshield.nlabels; i++)
		free(c->oneshield.labels[i]);
	free(c->oneshield.labels);
	free(c->oneshield.spool_dir);
	free(c->oneshield.tls.ca_file);
	free(c->oneshield.tls.server_name);
	free(c->oneshield.tls.cert_file);
	free(c->oneshield.tls.key_file);
	free(c->api.tls.cert_file);
	free(c->api.tls.key_file);
	free(c->api.tls.client_ca_file);
	free(c->api.tls.crl_file);
	free(c->api.token_file);
	free(c->api.rest_socket);
	free(c->api.grpc_socket);
	free(c);
}

static int yaml_fail(struct pctx *p, const yaml_parser_t *ps, const char *text, size_t len)
{
	size_t line = 1, i;

	switch (ps->error) {
	case YAML_MEMORY_ERROR:
		return oom(p);
	case YAML_READER_ERROR:
		/* The reader reports a byte offset, not a mark. */
		for (i = 0; i < ps->problem_offset && i < len; i++)
			line += text[i] == '\n';
		if (ps->problem_value != -1)
			return fail_line(p, line, -EINVAL, "invalid YAML: %s (byte 0x%02x)",
					 ps->problem ? ps->problem : "read error",
					 (unsigned int)ps->problem_value & 0xff);
		return fail_line(p, line, -EINVAL, "invalid YAML: %s",
				 ps->problem ? ps->problem : "read error");
	default:
		line = ps->problem_mark.line + 1;
		if (ps->context)
			return fail_line(p, line, -EINVAL, "invalid YAML: %s %s",
					 ps->problem ? ps->problem : "syntax error", ps->context);
		return fail_line(p, line, -EINVAL, "invalid YAML: %s",
				 ps->problem ? ps->problem : "syntax error");
	}
}

/* libyaml 0.2.5 has no nesting limit and its scanner is quadratic in the
 * depth of flow collections (a megabyte of '[' takes the better part of an
 * hour), so a first pass over the events refuses deep nesting before the
 * tree is built. The scanner looks ahead at most ~1 KiB, so the pass stops
 * early. The schema itself is four levels deep. */
#define CONFIG_MAX_DEPTH 32

static int check_depth(struct pctx *p, const char *text, size_t len)
{
	yaml_event_type_t type;
	yaml_parser_t ps;
	yaml_event_t ev;
	int depth = 0, rc = 0;
	size_t line;

	if (!yaml_parser_initialize(&ps))
		return oom(p);
	yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
	for (;;) {
		if (!yaml_parser_parse(&ps, &ev)) {
			rc = yaml_fail(p, &ps, text, len);
			break;
		}
		type = ev.type;
		line = ev.start_mark.line + 1;
		yaml_event_delete(&ev);
		if (type == YAML_STREAM_END_EVENT)
			break;
		if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT)
			depth--;
		if (type != YAML_SEQUENCE_START_EVENT && type != YAML_MAPPING_START_EVENT)
			continue;
		if (++depth > CONFIG_MAX_DEPTH) {
			rc = fail_line(p, line, -EINVAL, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
			break;
		}
	}
	yaml_parser_delete(&ps);
	return rc;
}

static int parse_doc(struct pctx *p, yaml_parser_t *ps, const char *text, size_t len,
		     struct agent_config *c)
{
	yaml_document_t doc, extra;
	const yaml_node_t *root, *eroot;
	int rc;

	rc = check_depth(p, text, len);
	if (rc)
		return rc;
	if (!yaml_parser_load(ps, &doc))
		return yaml_fail(p, ps, text, len);
	p->doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root || is_null(root)) {
		rc = fail(p, root, "empty configuration (expected a mapping of sections)");
		goto out;
	}
	/* A second document would be ignored silently; refuse it instead. */
	if (!yaml_parser_load(ps, &extra)) {
		rc = yaml_fail(p, ps, text, len);
		goto out;
	}
	eroot = yaml_document_get_root_node(&extra);
	rc = eroot ? fail(p, eroot, "only one YAML document is allowed") : 0;
	yaml_document_delete(&extra);
	if (rc)
		goto out;
	if (root->type != YAML_MAPPING_NODE) {
		rc = fail(p, root, "the top level must be a mapping, got %s", node_kind(root));
		goto out;
	}
	rc = walk_map(p, root, &top_table, c, "", NULL);
out:
	yaml_document_delete(&doc);
	p->doc = NULL;
	return rc;
}

int config_parse(const char *text, size_t len, const char *name, struct agent_config **out,
		 char *err, size_t errlen)
{
	struct pctx p = { .name = name ? name : "<config>", .err = err, .errlen = errlen };
	struct agent_config *c;
	yaml_parser_t ps;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return fail_line(&p, 0, -EINVAL, "no output pointer");
	*out = NULL;
	if (!text && len)
		return fail_line(&p, 0, -EINVAL, "no text");
	if (len > CONFIG_MAX_SIZE)
		return fail_line(&p, 0, -EFBIG, "larger than 1 MiB");
	c = config_default();
	if (!c)
		return oom(&p);
	c->path = strdup(p.name);
	if (!c->path) {
		config_free(c);
		return oom(&p);
	}
	if (!yaml_parser_initialize(&ps)) {
		config_free(c);
		return oom(&p);
	}
	yaml_parser_set_input_string(&ps, (const unsigned char *)(text ? text : ""), len);
	rc = parse_doc(&p, &ps, text ? text : "", len, c);
	yaml_parser_delete(&ps);
	if (rc) {
		config_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

int config_load(const char *path, struct agent_config **out, char *err, size_t errlen)
{
	struct pctx p = { .name = path ? path : "<config>", .err = err, .errlen = errlen };
	size_t total = 0;
	struct stat st;
	char *text;
	int fd, rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out || !path)
		return fail_line(&p, 0, -EINVAL, "no path or output pointer");
	*out = NULL;
	/* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		return fail_line(&p, 0, rc, "cannot open: %s", strerror(-rc));
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		close(fd);
		return fail_line(&p, 0, rc, "cannot stat: %s", strerror(-rc));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return fail_line(&p, 0, -EISDIR, "%s", strerror(EISDIR));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fail_line(&p, 0, -EINVAL, "not a regular file");
	}
	if (st.st_size > CONFIG_MAX_SIZE) {
		close(fd);
		return fail_line(&p, 0, -EFBIG, "larger than 1 MiB");
	}
	/* The agent runs as root and execs validate_command from this file. */
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		log_warn("%s: config file is group- or world-writable", path);
	text = malloc(CONFIG_MAX_SIZE + 1);
	if (!text) {
		close(fd);
		return oom(&p);
	}
	/* Read to EOF with a hard cap: the file may grow after fstat. */
	while (total <= CONFIG_MAX_SIZE) {
		ssize_t r = read(fd, text + total, CONFIG_MAX_SIZE + 1 - total);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			free(text);
			close(fd);
			return fail_line(&p, 0, rc, "cannot read: %s", strerror(-rc));
		}
		if (!r)
			break;
		total += (size_t)r;
	}
	close(fd);
	if (total > CONFIG_MAX_SIZE) {
		free(text);
		return fail_line(&p, 0, -EFBIG, "larger than 1 MiB");
	}
	rc = config_parse(text, total, path, out, err, errlen);
	free(text);
	return rc;
}

/* ---- helpers ---- */

int config_parse_http_url(const char *s, char *host, size_t hostlen, uint16_t *port, char *path, size_t pathlen)
{
	if (!s || strncmp(s, "http://", 7) != 0)
		return -EINVAL;
	const char *hp = s + 7;
	const char *slash = strchr(hp, '/');
	size_t n = slash ? (size_t)(slash - hp) : strlen(hp);
	char hostport[160];
	if (n == 0 || n >= sizeof(hostport))
		return -EINVAL;
	memcpy(hostport, hp, n);
	hostport[n] = '\0';
	const char *rest = slash ? slash : "/";
	if (strlen(rest) >= pathlen)
		return -EINVAL;
	for (const char *c = rest; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			return -EINVAL; /* no spaces or control bytes in a request line */
	if (strncmp(hostport, "localhost:", 10) == 0) {
		char tmp[160];
		snprintf(tmp, sizeof(tmp), "127.0.0.1:%s", hostport + 10);
		if (config_parse_listen(tmp, host, hostlen, port))
			return -EINVAL;
	} else if (config_parse_listen(hostport, host, hostlen, port)) {
		return -EINVAL;
	}
	if (*port == 0)
		return -EINVAL;
	snprintf(path, pathlen, "%s", rest);
	return 0;
}

int config_parse_bytes(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = { { "", 1 },	  { "B", 1 },	     { "K", 1024 },    { "KiB", 1024 },
		      { "M", 1 << 20 }, { "MiB", 1 << 20 }, { "G", 1 << 30 }, { "GiB", 1 << 30 } };
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			if (v > UINT64_MAX / units[i].mult)
				return -EINVAL;
			*out = v * units[i].mult;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_duration_ms(const char *s, uint64_t *out_ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = { { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "", 1000 } };
	uint64_t ip = 0, frac = 0, scale = 1, mult = 0;
	size_t i;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (ip > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		ip = ip * 10 + (uint64_t)(*s - '0');
	}
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		for (; *s >= '0' && *s <= '9'; s++) {
			if (scale >= 1000000000)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*s - '0');
			scale *= 10;
		}
	}
	for (i = 0; i < ARRAY_SIZE(units); i++) {
		if (!strcmp(s, units[i].unit)) {
			mult = units[i].ms;
			break;
		}
	}
	if (!mult)
		return -EINVAL;
	/* frac < scale <= 1e9 and mult <= 3.6e6: the product fits. */
	if ((frac * mult) % scale)
		return -EINVAL;	/* not a whole number of milliseconds */
	if (ip > (UINT64_MAX - frac * mult / scale) / mult)
		return -EINVAL;
	if (out_ms)
		*out_ms = ip * mult + frac * mult / scale;
	return 0;
}

int config_parse_signal(const char *s, int *out_sig)
{
	static const struct {
		const char *name;
		int sig;
	} sigs[] = {
		{ "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "ILL", SIGILL },
		{ "TRAP", SIGTRAP }, { "ABRT", SIGABRT }, { "IOT", SIGIOT }, { "BUS", SIGBUS },
		{ "FPE", SIGFPE }, { "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "SEGV", SIGSEGV },
		{ "USR2", SIGUSR2 }, { "PIPE", SIGPIPE }, { "ALRM", SIGALRM }, { "TERM", SIGTERM },
		{ "STKFLT", SIGSTKFLT }, { "CHLD", SIGCHLD }, { "CONT", SIGCONT }, { "STOP", SIGSTOP },
		{ "TSTP", SIGTSTP }, { "TTIN", SIGTTIN }, { "TTOU", SIGTTOU }, { "URG", SIGURG },
		{ "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ }, { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF },
		{ "WINCH", SIGWINCH }, { "IO", SIGIO }, { "POLL", SIGPOLL }, { "PWR", SIGPWR },
		{ "SYS", SIGSYS },
	};
	uint64_t n;
	size_t i;

	if (!s)
		return -EINVAL;
	if (*s >= '0' && *s <= '9') {
		if (parse_u64(s, &n) || n < 1 || n > 64)
			return -EINVAL;
		if (out_sig)
			*out_sig = (int)n;
		return 0;
	}
	if (!strncasecmp(s, "SIG", 3))
		s += 3;
	for (i = 0; i < ARRAY_SIZE(sigs); i++) {
		if (!strcasecmp(s, sigs[i].name)) {
			if (out_sig)
				*out_sig = sigs[i].sig;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	unsigned char addr[sizeof(struct in6_addr)];
	char h[INET6_ADDRSTRLEN];
	const char *hs, *he, *ps;
	uint64_t pn;
	size_t hl;
	int af;

	if (!s)
		return -EINVAL;
	if (*s == '[') {
		hs = s + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return -EINVAL;
		ps = he + 2;
		af = AF_INET6;
	} else {
		/* Unbracketed means IPv4: "::1:80" is refused, not guessed at. */
		hs = s;
		he = strrchr(s, ':');
		if (!he)
			return -EINVAL;
		ps = he + 1;
		af = AF_INET;
	}
	hl = (size_t)(he - hs);
	if (!hl || hl >= sizeof(h))
		return -EINVAL;
	memcpy(h, hs, hl);
	h[hl] = '\0';
	if (inet_pton(af, h, addr) != 1)
		return -EINVAL;
	if (strlen(ps) > 5 || parse_u64(ps, &pn) || pn < 1 || pn > 65535)
		return -EINVAL;
	if (host) {
		if (hl >= hostlen)
			return -EINVAL;
		memcpy(host, h, hl + 1);
	}
	if (port)
		*port = (uint16_t)pn;
	return 0;
}

bool config_listen_is_loopback(const char *listen)
{
	char host[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a4;
	const char *colon;

	/* "localhost:port" is not a listen address today (numeric hosts
	 * only), but it is loopback whatever resolves it. */
	colon = listen ? strrchr(listen, ':') : NULL;
	if (colon && (size_t)(colon - listen) == strlen("localhost") && !strncmp(listen, "localhost", 9))
		return true;
	if (config_parse_listen(listen, host, sizeof(host), NULL))
		return false;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) != 1)
		return false;
	if (IN6_IS_ADDR_LOOPBACK(&a6))
		return true;
	return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
}

/* Finish one word of a command: substitute {config}, append to argv. */
static int push_word(char ***argv, size_t *argc, size_t *cap, const char *w, const char *cfg)
{
	static const char token[] = "{config}";
	struct buf b;
	const char *t;
	char **na;

	buf_init(&b);
	while (cfg && (t = strstr(w, token))) {
		buf_append(&b, w, (size_t)(t - w));
		buf_puts(&b, cfg);
		w = t + sizeof(token) - 1;
	}
	buf_puts(&b, w);
	if (b.oom) {
		buf_free(&b);
		return -ENOMEM;
	}
	if (*argc + 2 > *cap) {
		size_t nc = *cap ? *cap * 2 : 8;

		na = realloc(*argv, nc * sizeof(*na));
		if (!na) {
			buf_free(&b);
			return -ENOMEM;
		}
		*argv = na;
		*cap = nc;
	}
	(*argv)[(*argc)++] = buf_steal(&b, NULL);
	(*argv)[*argc] = NULL;
	return (*argv)[*argc - 1] ? 0 : -ENOMEM;
}

static int split_command(const char *cmd, const char *config_path, char ***argv_out,
			 const char **why)
{
	char **argv = NULL;
	size_t argc = 0, cap = 0;
	bool in_word = false;
	const char *s = cmd;
	struct buf w;
	int rc = 0;

	*argv_out = NULL;
	buf_init(&w);
	for (;;) {
		char ch = *s;

		if (!ch || strchr(" \t\n\r\v\f", ch)) {
			if (in_word) {
				if (w.oom) {
					rc = -ENOMEM;
					break;
				}
				rc = push_word(&argv, &argc, &cap, w.data ? w.data : "", config_path);
				if (rc)
					break;
				buf_reset(&w);
				in_word = false;
			}
			if (!ch)
				break;
			s++;
			continue;
		}
		in_word = true;
		if (ch == '\'') {
			/* Single quotes: everything literal up to the next '. */
			const char *e = strchr(s + 1, '\'');

			if (!e) {
				*why = "unterminated single quote";
				rc = -EINVAL;
				break;
			}
			buf_append(&w, s + 1, (size_t)(e - s - 1));
			s = e + 1;
		} else if (ch == '"') {
			/* Double quotes: \" and \\ are escapes, all else literal. */
			for (s++; *s && *s != '"'; s++) {
				if (*s == '\\' && (s[1] == '"' || s[1] == '\\'))
					s++;
				buf_append(&w, s, 1);
			}
			if (!*s) {
				*why = "unterminated double quote";
				rc = -EINVAL;
				break;
			}
			s++;
		} else if (ch == '\\') {
			if (!s[1]) {
				*why = "trailing backslash";
				rc = -EINVAL;
				break;
			}
			buf_append(&w, s + 1, 1);
			s += 2;
		} else {
			buf_append(&w, s, 1);
			s++;
		}
	}
	buf_free(&w);
	if (!rc && !argc) {
		*why = "must not be empty";
		rc = -EINVAL;
	}
	if (rc) {
		if (rc == -ENOMEM)
			*why = "out of memory";
		config_free_argv(argv);
		return rc;
	}
	*argv_out = argv;
	return 0;
}

int config_split_command(const char *cmd, const char *config_path, char ***argv_out)
{
	const char *why;

	if (!argv_out)
		return -EINVAL;
	*argv_out = NULL;
	if (!cmd)
		return -EINVAL;
	return split_command(cmd, config_path, argv_out, &why);
}

void config_free_argv(char **argv)
{
	char **a;

	if (!argv)
		return;
	for (a = argv; *a; a++)
		free(*a);
	free(argv);
}
