/* Access-log statistics: fixed-size counters, Prometheus histograms and a
 * sliding window of log-linear histograms for quantiles.
 *
 * Design: logstats_add() runs once per request line at parsing speed, so it
 * only indexes fixed arrays (status code -> slot by a 1000-entry table,
 * method and protocol by enum, histogram buckets by a short compare loop
 * and a count-leading-zeros) and never allocates. The window is a ring of
 * LOGSTATS_SLOTS slots tagged with the slot number (now / slot length);
 * the current slot is cached so a line only compares now with the slot's
 * bounds. A slot is cleared when it is reused for a newer slot number.
 * Quantiles are computed at collection time by summing the live slots,
 * which costs a few thousand additions per log per scrape. */
#include "logstats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errlog.h"
#include "logfmt.h"
#include "metrics.h"

/* ---- log-linear buckets over microseconds ---- */

#define LL_SUB_BITS 4
#define LL_SUB (1u << LL_SUB_BITS)
#define LL_MAX_BITS 36
#define LL_MAX ((1ull << LL_MAX_BITS) - 1)
#define LL_NB (LL_SUB + (LL_MAX_BITS - LL_SUB_BITS) * LL_SUB)

static inline unsigned ll_index(uint64_t v)
{
	unsigned k;

	if (v > LL_MAX)
		v = LL_MAX;
	if (v < LL_SUB)
		return (unsigned)v;
	k = 63u - (unsigned)__builtin_clzll(v);
	return LL_SUB + (k - LL_SUB_BITS) * LL_SUB + (unsigned)((v >> (k - LL_SUB_BITS)) & (LL_SUB - 1));
}

/* Middle of bucket i's integer range, in microseconds. */
static double ll_value(unsigned i)
{
	unsigned k, sub;
	uint64_t lower, width;

	if (i < LL_SUB)
		return i;
	k = (i - LL_SUB) / LL_SUB + LL_SUB_BITS;
	sub = (i - LL_SUB) % LL_SUB;
	lower = (uint64_t)(LL_SUB + sub) << (k - LL_SUB_BITS);
	width = 1ull << (k - LL_SUB_BITS);
	return (double)lower + (double)(width - 1) / 2.0;
}

/* ---- fixed sets ---- */

/* Prometheus buckets, microseconds (upper bounds, +Inf implied). */
static const uint64_t prom_upper_us[] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};
#define PROM_NB (sizeof(prom_upper_us) / sizeof(prom_upper_us[0]))

/* Status codes with their own label value; others count as "other". */
static const unsigned short codes[] = {
	100, 101, 103,
	200, 201, 202, 203, 204, 206, 207,
	301, 302, 303, 304, 307, 308,
	400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415, 416, 418,
	421, 422, 425, 426, 428, 429, 431, 444, 451, 494, 495, 496, 497, 499,
	500, 501, 502, 503, 504, 505, 507, 508,
};
#define NCODES (sizeof(codes) / sizeof(codes[0]))
#define CODE_OTHER NCODES

static const char *const class_names[6] = { "1xx", "2xx", "3xx", "4xx", "5xx", "other" };

struct phist {
	uint64_t bucket[PROM_NB + 1];   /* per bucket (not cumulative); last is +Inf */
	uint64_t sum_us;
	uint64_t count;
};

struct logstats {
	uint64_t lines, malformed, truncated;
	uint64_t status_class[6];
	uint64_t code[NCODES + 1];
	uint64_t method[HM__COUNT];
	uint64_t proto[HP__COUNT];
	uint64_t response_bytes, request_bytes;
	struct phist ph[LSH__COUNT];

	/* window */
	double slot_t0;            /* start of the cached current slot */
	int cur;                   /* its ring index, -1 when none cached */
	int64_t max_id;
	int64_t slot_id[LOGSTATS_SLOTS];
	uint32_t win[LSH__COUNT][LOGSTATS_SLOTS][LL_NB];

	unsigned char code_slot[1000];
};

struct logstats *logstats_new(void)
{
	struct logstats *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->cur = -1;
	s->max_id = -1;
	for (int i = 0; i < LOGSTATS_SLOTS; i++)
		s->slot_id[i] = -1;
	for (int i = 0; i < 1000; i++)
		s->code_slot[i] = CODE_OTHER;
	for (size_t i = 0; i < NCODES; i++)
		s->code_slot[codes[i]] = (unsigned char)i;
	return s;
}

void logstats_free(struct logstats *s)
{
	free(s);
}

void logstats_malformed(struct logstats *s)
{
	s->malformed++;
}

void logstats_truncated(struct logstats *s)
{
	s->truncated++;
}

uint64_t logstats_requests(const struct logstats *s)
{
	return s->lines;
}

static inline void phist_add(struct phist *h, uint64_t us)
{
	size_t i = 0;

	while (i < PROM_NB && us > prom_upper_us[i])
		i++;
	h->bucket[i]++;
	h->sum_us += us;
	h->count++;
}

static inline int64_t slot_of(double now)
{
	return now > 0 ? (int64_t)(now / LOGSTATS_SLOT_SECONDS) : 0;
}

/* Ring index for now, or -1 when now is older than the window. */
static int window_slot(struct logstats *s, double now)
{
	int64_t id;
	int idx;

	if (s->cur >= 0 && now >= s->slot_t0 && now < s->slot_t0 + LOGSTATS_SLOT_SECONDS)
		return s->cur;
	id = slot_of(now);
	if (id > s->max_id)
		s->max_id = id;
	if (id <= s->max_id - LOGSTATS_SLOTS)
		return -1;
	idx = (int)(id % LOGSTATS_SLOTS);
	if (s->slot_id[idx] != id) {
		if (s->slot_id[idx] > id)
			return -1;
		memset(s->win[LSH_REQUEST_TIME][idx], 0, sizeof(s->win[0][0]));
		memset(s->win[LSH_UPSTREAM_TIME][idx], 0, sizeof(s->win[0][0]));
		s->slot_id[idx] = id;
	}
	if (id == s->max_id) {
		s->cur = idx;
		s->slot_t0 = (double)id * LOGSTATS_SLOT_SECONDS;
	}
	return idx;
}

void logstats_add(struct logstats *s, const struct logrec *r, double now)
{
	int slot = -2;

	s->lines++;
	if (logrec_has(r, LV_STATUS)) {
		unsigned c = r->status / 100;
		s->status_class[c >= 1 && c <= 5 ? c - 1 : 5]++;
		s->code[s->code_slot[r->status < 1000 ? r->status : 0]]++;
	} else {
		s->status_class[5]++;
		s->code[CODE_OTHER]++;
	}
	s->method[(unsigned)r->method < HM__COUNT ? r->method : HM_OTHER]++;
	s->proto[(unsigned)r->proto < HP__COUNT ? r->proto : HP_OTHER]++;
	if (logrec_has(r, LV_BYTES_SENT))
		s->response_bytes += r->bytes_sent;
	else if (logrec_has(r, LV_BODY_BYTES_SENT))
		s->response_bytes += r->body_bytes_sent;
	if (logrec_has(r, LV_REQUEST_LENGTH))
		s->request_bytes += r->request_length;
	if (logrec_has(r, LV_REQUEST_TIME)) {
		phist_add(&s->ph[LSH_REQUEST_TIME], r->request_time_us);
		slot = window_slot(s, now);
		if (slot >= 0)
			s->win[LSH_REQUEST_TIME][slot][ll_index(r->request_time_us)]++;
	}
	if (logrec_has(r, LV_UPSTREAM_RESPONSE_TIME)) {
		phist_add(&s->ph[LSH_UPSTREAM_TIME], r->upstream_response_time_us);
		if (slot == -2)
			slot = window_slot(s, now);
		if (slot >= 0)
			s->win[LSH_UPSTREAM_TIME][slot][ll_index(r->upstream_response_time_us)]++;
	}
}

int logstats_feed(struct logstats *s, const struct logfmt *f, const char *line, size_t len, double now)
{
	struct logrec r;
	int rc = logfmt_parse(f, line, len, &r);

	if (rc)
		s->malformed++;
	else
		logstats_add(s, &r, now);
	return rc;
}

uint64_t logstats_quantiles(const struct logstats *s, enum logstats_hist h, double now, const double *q,
			    size_t n, double *out)
{
	uint64_t sum[LL_NB];
	uint64_t total = 0;
	int64_t id = slot_of(now);

	memset(sum, 0, sizeof(sum));
	for (int k = 0; k < LOGSTATS_SLOTS; k++) {
		if (s->slot_id[k] < 0 || s->slot_id[k] > id || s->slot_id[k] <= id - LOGSTATS_SLOTS)
			continue;
		for (unsigned i = 0; i < LL_NB; i++)
			sum[i] += s->win[h][k][i];
	}
	for (unsigned i = 0; i < LL_NB; i++)
		total += sum[i];
	for (size_t j = 0; j < n; j++) {
		double qq = q[j] < 0 ? 0 : q[j] > 1 ? 1 : q[j];
		uint64_t rank = (uint64_t)ceil(qq * (double)total), acc = 0;
		if (rank == 0)
			rank = 1;
		out[j] = NAN;
		if (!total)
			continue;
		for (unsigned i = 0; i < LL_NB; i++) {
			acc += sum[i];
			if (acc >= rank) {
				out[j] = ll_value(i) / 1e6;
				break;
			}
		}
	}
	return total;
}

/* ---- metrics ---- */

struct fam {
	const char *name;
	enum metric_type type;
	const char *help;
};

static const struct fam access_fams[] = {
	{ "onepanel_http_requests_total", MT_COUNTER, "Requests in the access log by status class." },
	{ "onepanel_http_responses_total", MT_COUNTER,
	  "Requests in the access log by status code (codes outside a fixed set are \"other\")." },
	{ "onepanel_http_requests_by_method_total", MT_COUNTER, "Requests in the access log by method." },
	{ "onepanel_http_requests_by_protocol_total", MT_COUNTER, "Requests in the access log by protocol." },
	{ "onepanel_http_response_bytes_total", MT_COUNTER,
	  "Bytes sent to clients ($bytes_sent, else $body_bytes_sent)." },
	{ "onepanel_http_request_bytes_total", MT_COUNTER, "Request bytes received ($request_length)." },
	{ "onepanel_http_request_duration_seconds", MT_HISTOGRAM, "Request processing time ($request_time)." },
	{ "onepanel_http_upstream_response_seconds", MT_HISTOGRAM,
	  "Upstream response time ($upstream_response_time, summed over the servers tried)." },
	{ "onepanel_http_request_duration_quantile_seconds", MT_GAUGE,
	  "Request time quantiles over the last 60 s (within 3.2 %; NaN when no request)." },
	{ "onepanel_http_upstream_response_quantile_seconds", MT_GAUGE,
	  "Upstream response time quantiles over the last 60 s (within 3.2 %; NaN when none)." },
	{ "onepanel_log_lines_total", MT_COUNTER, "Access log lines parsed." },
	{ "onepanel_log_lines_malformed_total", MT_COUNTER, "Log lines that did not match the log format." },
	{ "onepanel_log_lines_truncated_total", MT_COUNTER, "Log lines cut by the reader for their length." },
};

static const struct fam error_fams[] = {
	{ "onepanel_error_log_lines_total", MT_COUNTER, "Error log lines by level." },
	{ "onepanel_error_log_continuation_lines_total", MT_COUNTER,
	  "Error log lines without timestamp and level." },
	{ "onepanel_error_log_critical_total", MT_COUNTER, "Error log lines at crit, alert or emerg." },
	{ "onepanel_error_log_panics_total", MT_COUNTER, "Panics (Go tracebacks) found in the error log." },
	{ "onepanel_error_log_pattern_matches_total", MT_COUNTER,
	  "Error log lines matching a configured pattern." },
	{ "onepanel_error_log_records_total", MT_COUNTER, "Error log records assembled, by kind." },
	{ "onepanel_error_log_records_suppressed_total", MT_COUNTER,
	  "Error log records dropped by the rate limit." },
};

static int declare(struct metrics *m, const struct fam *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = metrics_declare(m, f[i].name, f[i].type, f[i].help);
		if (rc)
			return rc;
	}
	return 0;
}

static const double quantiles[3] = { 0.5, 0.9, 0.99 };
static const char *const quantile_names[3] = { "50", "90", "99" };

static int add_hist(struct metrics *m, const char *name, const struct phist *h, const char *log)
{
	double upper[PROM_NB];
	uint64_t cum[PROM_NB], acc = 0;

	for (size_t i = 0; i < PROM_NB; i++) {
		upper[i] = (double)prom_upper_us[i] / 1e6;
		acc += h->bucket[i];
		cum[i] = acc;
	}
	return metrics_add_histogram(m, name, PROM_NB, upper, cum, (double)h->sum_us / 1e6, h->count, "log", log,
				     NULL);
}

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

static int collect_access(const struct logstats *s, double now, struct metrics *m, const char *log)
{
	char code[8];
	double qv[3];

	TRY(declare(m, access_fams, sizeof(access_fams) / sizeof(access_fams[0])));
	for (int i = 0; i < 6; i++)
		TRY(metrics_add(m, "onepanel_http_requests_total", (double)s->status_class[i], "log", log,
				"status_class", class_names[i], NULL));
	for (size_t i = 0; i <= NCODES; i++) {
		if (!s->code[i])
			continue;
		if (i < NCODES)
			snprintf(code, sizeof(code), "%u", codes[i]);
		TRY(metrics_add(m, "onepanel_http_responses_total", (double)s->code[i], "log", log, "code",
				i < NCODES ? code : "other", NULL));
	}
	for (int i = 0; i < HM__COUNT; i++)
		TRY(metrics_add(m, "onepanel_http_requests_by_method_total", (double)s->method[i], "log", log,
				"method", http_method_name((enum http_method)i), NULL));
	for (int i = 0; i < HP__COUNT; i++)
		TRY(metrics_add(m, "onepanel_http_requests_by_protocol_total", (double)s->proto[i], "log", log,
				"protocol", http_proto_name((enum http_proto)i), NULL));
	TRY(metrics_add(m, "onepanel_http_response_bytes_total", (double)s->response_bytes, "log", log, NULL));
	TRY(metrics_add(m, "onepanel_http_request_bytes_total", (double)s->request_bytes, "log", log, NULL));
	TRY(add_hist(m, "onepanel_http_request_duration_seconds", &s->ph[LSH_REQUEST_TIME], log));
	TRY(add_hist(m, "onepanel_http_upstream_response_seconds", &s->ph[LSH_UPSTREAM_TIME], log));
	logstats_quantiles(s, LSH_REQUEST_TIME, now, quantiles, 3, qv);
	for (int i = 0; i < 3; i++)
		TRY(metrics_add(m, "onepanel_http_request_duration_quantile_seconds", qv[i], "log", log, "percentile",
				quantile_names[i], NULL));
	logstats_quantiles(s, LSH_UPSTREAM_TIME, now, quantiles, 3, qv);
	for (int i = 0; i < 3; i++)
		TRY(metrics_add(m, "onepanel_http_upstream_response_quantile_seconds", qv[i], "log", log,
				"percentile", quantile_names[i], NULL));
	TRY(metrics_add(m, "onepanel_log_lines_total", (double)s->lines, "log", log, NULL));
	TRY(metrics_add(m, "onepanel_log_lines_malformed_total", (double)s->malformed, "log", log, NULL));
	TRY(metrics_add(m, "onepanel_log_lines_truncated_total", (double)s->truncated, "log", log, NULL));
	return 0;
}

static int collect_errors(const struct errlog_counts *c, struct metrics *m, const char *log)
{
	TRY(declare(m, error_fams, sizeof(error_fams) / sizeof(error_fams[0])));
	for (int i = 0; i < ERL__COUNT; i++)
		TRY(metrics_add(m, "onepanel_error_log_lines_total", (double)c->lines[i], "log", log, "level",
				errlog_level_name((enum errlog_level)i), NULL));
	TRY(metrics_add(m, "onepanel_error_log_continuation_lines_total", (double)c->continuation, "log", log,
			NULL));
	TRY(metrics_add(m, "onepanel_error_log_critical_total", (double)c->critical, "log", log, NULL));
	TRY(metrics_add(m, "onepanel_error_log_panics_total", (double)c->panics, "log", log, NULL));
	TRY(metrics_add(m, "onepanel_error_log_pattern_matches_total", (double)c->pattern_matches, "log", log,
			NULL));
	for (int i = 0; i < ERK__COUNT; i++)
		TRY(metrics_add(m, "onepanel_error_log_records_total", (double)c->records[i], "log", log, "kind",
				errlog_kind_name((enum errlog_kind)i), NULL));
	TRY(metrics_add(m, "onepanel_error_log_records_suppressed_total", (double)c->suppressed, "log", log,
			NULL));
	return 0;
}

int logstats_collect(const struct logstats *s, const struct errlog_counts *ec, double now, struct metrics *m,
		     const char *log_label)
{
	if (!log_label)
		log_label = "";
	if (s)
		TRY(collect_access(s, now, m, log_label));
	if (ec)
		TRY(collect_errors(ec, m, log_label));
	return 0;
}

/* ---- JSON ---- */

static bool num(cJSON *o, const char *k, double v)
{
	return cJSON_AddNumberToObject(o, k, v) != NULL;
}

static bool window_json(cJSON *o, const char *key, const struct logstats *s, enum logstats_hist h, double now)
{
	double qv[3];
	uint64_t n = logstats_quantiles(s, h, now, quantiles, 3, qv);
	cJSON *w;

	if (!n)
		return cJSON_AddNullToObject(o, key) != NULL;
	w = cJSON_AddObjectToObject(o, key);
	return w && num(w, "window_seconds", LOGSTATS_WINDOW_SECONDS) && num(w, "count", (double)n) &&
	       num(w, "p50", qv[0]) && num(w, "p90", qv[1]) && num(w, "p99", qv[2]);
}

cJSON *logstats_to_json(const struct logstats *s, const struct errlog_counts *ec, double now)
{
	cJSON *o = cJSON_CreateObject(), *st, *er, *lv;
	bool ok = o != NULL;

	if (ok && s) {
		ok = num(o, "lines", (double)s->lines + (double)s->malformed) &&
		     num(o, "malformed", (double)s->malformed) && num(o, "truncated", (double)s->truncated) &&
		     num(o, "requests", (double)s->lines) && (st = cJSON_AddObjectToObject(o, "status")) != NULL;
		for (int i = 0; ok && i < 6; i++)
			ok = num(st, class_names[i], (double)s->status_class[i]);
		ok = ok && num(o, "response_bytes", (double)s->response_bytes) &&
		     num(o, "request_bytes", (double)s->request_bytes) &&
		     window_json(o, "request_time", s, LSH_REQUEST_TIME, now) &&
		     window_json(o, "upstream_response_time", s, LSH_UPSTREAM_TIME, now);
	}
	if (ok && ec) {
		uint64_t rec = 0;
		ok = (er = cJSON_AddObjectToObject(o, "errors")) != NULL &&
		     (lv = cJSON_AddObjectToObject(er, "lines")) != NULL;
		for (int i = 0; ok && i < ERL__COUNT; i++)
			ok = num(lv, errlog_level_name((enum errlog_level)i), (double)ec->lines[i]);
		for (int i = 0; i < ERK__COUNT; i++)
			rec += ec->records[i];
		ok = ok && num(er, "continuation", (double)ec->continuation) &&
		     num(er, "critical", (double)ec->critical) && num(er, "panics", (double)ec->panics) &&
		     num(er, "records", (double)rec) && num(er, "suppressed", (double)ec->suppressed);
	}
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}
