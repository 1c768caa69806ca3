/* onepanel's logs: tailers, parsers, statistics and events (logwatch.h). */
#include "logwatch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "errlog.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "logfmt.h"
#include "logstats.h"
#include "logtail.h"
#include "loop.h"
#include "metrics.h"

#define LOGWATCH_BATCH_MS 10u /* logtail batch_ms: see watched_new */

#define TICK_MS 1000
#define EVENT_TEXT_MAX 4096

enum kind { LW_ACCESS, LW_ERROR };

struct watched {
	struct logwatch *w;
	enum kind kind;
	char *path;
	char *format;           /* access logs */
	bool from_start;
	size_t max_line;
	char **patterns;        /* error logs */
	size_t npatterns;
	struct logtail *tail;
	int open_err;           /* logtail_open failed with this (-errno) */
	struct logfmt *fmt;
	struct logstats *stats;
	struct errlog *errlog;
	bool keep;              /* reconfigure: still wanted */
};

struct logwatch {
	struct loop *loop;
	struct journal *journal;
	struct watched **logs;
	size_t n;
	struct loop_timer *tick;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_access_line(void *arg, const char *line, size_t len, bool truncated)
{
	struct watched *x = arg;
	if (truncated) {
		logstats_truncated(x->stats);
		return;
	}
	logstats_feed(x->stats, x->fmt, line, len, now_s());
}

static void on_error_line(void *arg, const char *line, size_t len, bool truncated)
{
	struct watched *x = arg;
	/* a cut line still carries its level and the start of its message */
	(void)truncated;
	errlog_feed(x->errlog, line, len, now_s());
}

/* First line of a record, without the timestamp prefix, bounded. */
static void first_line(const char *text, size_t len, char *out, size_t outlen)
{
	size_t n = 0;
	while (n < len && text[n] != '\n')
		n++;
	struct errlog_line el;
	const char *p = text;
	if (errlog_parse_line(text, n, &el) == 0 && el.msg) {
		n -= (size_t)(el.msg - text);
		p = el.msg;
	}
	if (n >= outlen)
		n = outlen - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = (p[i] >= 0x20 && p[i] != 0x7f) || (unsigned char)p[i] >= 0x80 ? p[i] : ' ';
	out[n] = '\0';
}

static void on_record(const struct errlog_record *r, void *arg)
{
	struct watched *x = arg;
	char head[256];
	first_line(r->text, r->len, head, sizeof(head));
	struct event *e;
	if (r->kind == ERK_PANIC) {
		const char *h = strncmp(head, "panic: ", 7) == 0 ? head + 7 : head;
		e = event_new(EV_ONEPANEL_PANIC, EL_CRITICAL, "onepanel panic: %s", h);
	} else {
		enum event_level lvl = r->kind == ERK_CRITICAL && r->level >= ERL_ALERT ? EL_CRITICAL : EL_ERROR;
		e = event_new(EV_ONEPANEL_CRITICAL_ERROR, lvl, "onepanel [%s] %s",
			      r->kind == ERK_PATTERN ? "pattern" : errlog_level_name(r->level), head);
	}
	if (!e)
		return;
	event_set_field(e, "log", "%s", x->path);
	event_set_field(e, "kind", "%s", errlog_kind_name(r->kind));
	if (r->level != ERL_NONE)
		event_set_field(e, "level", "%s", errlog_level_name(r->level));
	event_set_field(e, "lines", "%u", r->total_lines);
	if (r->truncated)
		event_set_field(e, "truncated", "true");
	if (r->suppressed)
		event_set_field(e, "suppressed_before", "%llu", (unsigned long long)r->suppressed);
	event_set_field(e, "text", "%.*s", (int)(r->len > EVENT_TEXT_MAX ? EVENT_TEXT_MAX : r->len), r->text);
	journal_append(x->w->journal, e);
}

static void tick(void *arg)
{
	struct logwatch *w = arg;
	double now = now_s();
	for (size_t i = 0; i < w->n; i++)
		if (w->logs[i]->errlog)
			errlog_tick(w->logs[i]->errlog, now);
}

static void watched_free(struct watched *x)
{
	if (!x)
		return;
	logtail_close(x->tail);
	if (x->errlog)
		errlog_flush(x->errlog, now_s());
	errlog_free(x->errlog);
	logstats_free(x->stats);
	logfmt_free(x->fmt);
	free(x->path);
	free(x->format);
	for (size_t i = 0; i < x->npatterns; i++)
		free(x->patterns[i]);
	free(x->patterns);
	free(x);
}

static struct watched *watched_new(struct logwatch *w, enum kind kind, const struct log_spec *ls)
{
	struct watched *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->w = w;
	x->kind = kind;
	x->path = strdup(ls->path);
	x->format = ls->format ? strdup(ls->format) : NULL;
	x->from_start = ls->from_start;
	x->max_line = ls->max_line;
	if (!x->path || (ls->format && !x->format))
		goto oom;
	if (ls->npatterns) {
		x->patterns = calloc(ls->npatterns, sizeof(char *));
		if (!x->patterns)
			goto oom;
		for (; x->npatterns < ls->npatterns; x->npatterns++)
			if (!(x->patterns[x->npatterns] = strdup(ls->patterns[x->npatterns])))
				goto oom;
	}
	int rc;
	if (kind == LW_ACCESS) {
		struct logfmt_err fe = { 0 };
		rc = logfmt_compile_spec(x->format ? x->format : "combined", &x->fmt, &fe);
		if (rc) {
			/* config_load compiled it already: only ENOMEM gets here */
			log_error("access log %s: format: %s", x->path, fe.msg);
			goto oom;
		}
		if (!(x->stats = logstats_new()))
			goto oom;
	} else {
		struct errlog_config ec;
		errlog_config_default(&ec);
		ec.patterns = (const char *const *)x->patterns;
		ec.npatterns = x->npatterns;
		if (errlog_new(&ec, on_record, x, &x->errlog))
			goto oom;
	}
	/* batch_ms: nginx writes each access-log line with its own write():
	 * at 20k requests/s, one wakeup per line cost the agent ~6 % of a core
	 * (make bench-logs); reading at most every 10 ms costs a fraction of
	 * that, and a line that follows a quiet spell is still read at once. */
	struct logtail_opts o = { .path = x->path, .from_start = x->from_start, .max_line = x->max_line,
				  .batch_ms = LOGWATCH_BATCH_MS };
	rc = logtail_open(w->loop, &o, kind == LW_ACCESS ? on_access_line : on_error_line, x, &x->tail);
	if (rc) {
		x->open_err = rc;
		log_warn("%s log %s: cannot follow it: %s", kind == LW_ACCESS ? "access" : "error", x->path,
			 strerror(-rc));
	}
	return x;
oom:
	watched_free(x);
	return NULL;
}

static bool strs_eq(char **a, size_t na, char **b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

static bool same_spec(const struct watched *x, enum kind kind, const struct log_spec *ls)
{
	return x->kind == kind && strcmp(x->path, ls->path) == 0 &&
	       ((!x->format && !ls->format) || (x->format && ls->format && strcmp(x->format, ls->format) == 0)) &&
	       x->from_start == ls->from_start && x->max_line == ls->max_line &&
	       strs_eq(x->patterns, x->npatterns, ls->patterns, ls->npatterns);
}

static int add_logs(struct logwatch *w, struct watched **out, size_t *n, enum kind kind, const struct log_spec *ls,
		    size_t count)
{
	for (size_t i = 0; i < count; i++) {
		struct watched *x = NULL;
		for (size_t j = 0; j < w->n && !x; j++)
			if (w->logs[j] && !w->logs[j]->keep && same_spec(w->logs[j], kind, &ls[i]))
				x = w->logs[j];
		if (x) {
			x->keep = true;
		} else if (!(x = watched_new(w, kind, &ls[i]))) {
			return -ENOMEM;
		} else {
			x->keep = true;
		}
		out[(*n)++] = x;
	}
	return 0;
}

int logwatch_reconfigure(struct logwatch *w, const struct onepanel_config *cfg)
{
	size_t want = cfg && cfg->configured ? cfg->n_access_logs + cfg->n_error_logs : 0;
	struct watched **nl = calloc(want ? want : 1, sizeof(*nl));
	size_t n = 0;
	if (!nl)
		return -ENOMEM;
	for (size_t i = 0; i < w->n; i++)
		w->logs[i]->keep = false;
	int rc = 0;
	if (want) {
		rc = add_logs(w, nl, &n, LW_ACCESS, cfg->access_logs, cfg->n_access_logs);
		if (!rc)
			rc = add_logs(w, nl, &n, LW_ERROR, cfg->error_logs, cfg->n_error_logs);
	}
	if (rc) {
		/* keep the old set; free only what was created for the new one */
		for (size_t i = 0; i < n; i++) {
			bool old = false;
			for (size_t j = 0; j < w->n; j++)
				old |= w->logs[j] == nl[i];
			if (!old)
				watched_free(nl[i]);
		}
		free(nl);
		return rc;
	}
	for (size_t i = 0; i < w->n; i++)
		if (!w->logs[i]->keep)
			watched_free(w->logs[i]);
	free(w->logs);
	w->logs = nl;
	w->n = n;
	bool errors = false;
	for (size_t i = 0; i < n; i++)
		errors |= nl[i]->kind == LW_ERROR;
	if (errors)
		loop_timer_arm(w->tick, TICK_MS, TICK_MS);
	else
		loop_timer_disarm(w->tick);
	return 0;
}

struct logwatch *logwatch_new(struct loop *l, struct journal *j, const struct onepanel_config *cfg)
{
	struct logwatch *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->loop = l;
	w->journal = j;
	w->tick = loop_timer_new(l, tick, w);
	if (!w->tick || logwatch_reconfigure(w, cfg)) {
		logwatch_free(w);
		return NULL;
	}
	return w;
}

void logwatch_free(struct logwatch *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++)
		watched_free(w->logs[i]);
	free(w->logs);
	loop_timer_free(w->loop, w->tick);
	free(w);
}

void logwatch_poll(struct logwatch *w)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->logs[i]->tail)
			logtail_poll_now(w->logs[i]->tail);
}

int logwatch_collect(struct logwatch *w, struct metrics *m)
{
	double now = now_s();
	if (!w->n)
		return 0;
	metrics_declare(m, "onepanel_log_up", MT_GAUGE, "1 while the log file is open and followed.");
	metrics_declare(m, "onepanel_log_read_bytes_total", MT_COUNTER, "Bytes read from the log file(s).");
	metrics_declare(m, "onepanel_log_rotations_total", MT_COUNTER,
			"New files found at the log's path (rename or delete and create).");
	metrics_declare(m, "onepanel_log_truncations_total", MT_COUNTER, "Log files truncated in place (copytruncate).");
	for (size_t i = 0; i < w->n; i++) {
		struct watched *x = w->logs[i];
		struct logtail_status st;
		logtail_get_status(x->tail, &st);
		metrics_add(m, "onepanel_log_up", st.open ? 1 : 0, "log", x->path, NULL);
		metrics_add(m, "onepanel_log_read_bytes_total", (double)st.bytes, "log", x->path, NULL);
		metrics_add(m, "onepanel_log_rotations_total", (double)st.rotations, "log", x->path, NULL);
		metrics_add(m, "onepanel_log_truncations_total", (double)st.truncations, "log", x->path, NULL);
		logstats_collect(x->stats, x->errlog ? errlog_counts(x->errlog) : NULL, now, m, x->path);
	}
	return 0;
}

cJSON *logwatch_status_json(struct logwatch *w)
{
	cJSON *a = cJSON_CreateArray();
	double now = now_s();
	if (!a)
		return NULL;
	for (size_t i = 0; i < w->n; i++) {
		struct watched *x = w->logs[i];
		struct logtail_status st;
		logtail_get_status(x->tail, &st);
		cJSON *o = logstats_to_json(x->stats, x->errlog ? errlog_counts(x->errlog) : NULL, now);
		if (!o)
			continue;
		cJSON_AddStringToObject(o, "path", x->path);
		cJSON_AddStringToObject(o, "kind", x->kind == LW_ACCESS ? "access" : "error");
		if (x->format)
			cJSON_AddStringToObject(o, "format", x->format);
		cJSON_AddStringToObject(o, "state", x->tail ? (st.state ? st.state : "?") : "error");
		cJSON_AddBoolToObject(o, "open", st.open);
		int err = x->tail ? st.last_errno : -x->open_err;
		if (err) {
			cJSON_AddNumberToObject(o, "errno", err);
			cJSON_AddStringToObject(o, "error", strerror(err));
		}
		cJSON_AddNumberToObject(o, "read_bytes", (double)st.bytes);
		cJSON_AddNumberToObject(o, "tail_lines", (double)st.lines);
		cJSON_AddNumberToObject(o, "tail_truncated", (double)st.truncated);
		cJSON_AddNumberToObject(o, "rotations", (double)st.rotations);
		cJSON_AddNumberToObject(o, "truncations", (double)st.truncations);
		cJSON_AddNumberToObject(o, "offset", (double)st.offset);
		cJSON_AddItemToArray(a, o);
	}
	return a;
}
