/* Unit tests for logstats.c: exact counts per status class, code, method
 * and protocol, bytes, Prometheus histograms, window quantiles against the
 * exact nearest-rank value on synthetic data (within the documented 1/32),
 * window expiry, error-log families, promtool on the rendered text, and
 * the JSON summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "errlog.h"
#include "logfmt.h"
#include "logstats.h"
#include "metrics.h"

#define value_of(m, name, ...) ({						\
	double v_ = NAN;							\
	int e_ = metrics_lookup((m), (name), &v_, ##__VA_ARGS__, NULL);	\
	if (e_)									\
		fail_msg("no sample %s: %d", (name), e_);			\
	v_;									\
})

#define missing(m, name, ...) ({						\
	double v_;								\
	metrics_lookup((m), (name), &v_, ##__VA_ARGS__, NULL) == -ENOENT;	\
})

static struct logfmt *compile(const char *fmt)
{
	struct logfmt *f = NULL;
	struct logfmt_err err;

	if (logfmt_compile(fmt, strlen(fmt), &f, &err))
		fail_msg("%s", err.msg);
	return f;
}

static void feed(struct logstats *s, struct logfmt *f, const char *line, int want)
{
	assert_int_equal(logstats_feed(s, f, line, strlen(line), 100), want);
}

/* The histogram sample of family name with label log=log. */
static void hist_of(const struct metrics *m, const char *name, const char *log, struct metric_sample_view *out)
{
	struct metric_family_view fv;

	for (size_t i = 0; i < metrics_family_count(m); i++) {
		assert_int_equal(metrics_family_at(m, i, &fv), 0);
		if (strcmp(fv.name, name))
			continue;
		for (size_t j = 0; j < fv.nsamples; j++) {
			assert_int_equal(metrics_sample_at(m, i, j, out), 0);
			if (out->npairs == 1 && !strcmp(out->labels[1], log))
				return;
		}
	}
	fail_msg("no histogram %s{log=%s}", name, log);
}

static void test_counts(void **state)
{
	(void)state;
	struct logfmt *f = compile("$status $request_method $server_protocol $body_bytes_sent $bytes_sent "
				   "$request_length $request_time $upstream_response_time");
	struct logstats *s = logstats_new();
	struct metrics *m = metrics_new();

	feed(s, f, "200 GET HTTP/1.1 100 300 50 0.004 0.003", 0);
	feed(s, f, "200 GET HTTP/2.0 100 - 60 0.010 -", 0);          /* body bytes when bytes_sent absent */
	feed(s, f, "404 POST HTTP/1.1 10 200 500 0.100 0.050, 0.040", 0);
	feed(s, f, "503 PUT HTTP/3.0 0 150 - 30.5 30.000", 0);
	feed(s, f, "101 GET HTTP/1.1 0 129 40 61 -", 0);
	feed(s, f, "599 BREW HTTP/0.9 - - - - -", 0);                 /* code outside the set */
	feed(s, f, "999 - - - - - - -", 0);                           /* status outside every class */
	feed(s, f, "304 HEAD HTTP/1.0 0 180 70 0.000 0.000", 0);
	feed(s, f, "nonsense", -EINVAL);
	feed(s, f, "200 GET HTTP/1.1 x 1 1 1 1", -EINVAL);
	logstats_truncated(s);
	logstats_malformed(s);
	assert_int_equal(logstats_requests(s), 8);
	assert_int_equal(logstats_collect(s, NULL, 100, m, "main"), 0);

	assert_true(value_of(m, "onepanel_http_requests_total", "log", "main", "status_class", "1xx") == 1);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "main", "status_class", "2xx") == 2);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "main", "status_class", "3xx") == 1);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "main", "status_class", "4xx") == 1);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "main", "status_class", "5xx") == 2);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "main", "status_class", "other") == 1);
	assert_true(value_of(m, "onepanel_http_responses_total", "log", "main", "code", "200") == 2);
	assert_true(value_of(m, "onepanel_http_responses_total", "log", "main", "code", "404") == 1);
	assert_true(value_of(m, "onepanel_http_responses_total", "log", "main", "code", "101") == 1);
	assert_true(value_of(m, "onepanel_http_responses_total", "log", "main", "code", "other") == 2);
	assert_true(missing(m, "onepanel_http_responses_total", "code", "500"));   /* unseen codes not emitted */
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "GET") == 3);
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "POST") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "PUT") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "HEAD") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "other") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "none") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_method_total", "log", "main", "method", "DELETE") == 0);
	assert_true(value_of(m, "onepanel_http_requests_by_protocol_total", "log", "main", "protocol", "HTTP/1.1") == 3);
	assert_true(value_of(m, "onepanel_http_requests_by_protocol_total", "log", "main", "protocol", "HTTP/2.0") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_protocol_total", "log", "main", "protocol", "HTTP/3.0") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_protocol_total", "log", "main", "protocol", "HTTP/1.0") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_protocol_total", "log", "main", "protocol", "other") == 1);
	assert_true(value_of(m, "onepanel_http_requests_by_protocol_total", "log", "main", "protocol", "none") == 1);
	assert_true(value_of(m, "onepanel_http_response_bytes_total", "log", "main") == 300 + 100 + 200 + 150 + 129 + 180);
	assert_true(value_of(m, "onepanel_http_request_bytes_total", "log", "main") == 50 + 60 + 500 + 40 + 70);
	assert_true(value_of(m, "onepanel_log_lines_total", "log", "main") == 8);
	assert_true(value_of(m, "onepanel_log_lines_malformed_total", "log", "main") == 3);
	assert_true(value_of(m, "onepanel_log_lines_truncated_total", "log", "main") == 1);

	/* request times 0.004 0.010 0.100 30.5 61 0.000: buckets are upper
	 * bounds, le="0.005" holds 0.004 and 0 */
	struct metric_sample_view h;
	hist_of(m, "onepanel_http_request_duration_seconds", "main", &h);
	assert_int_equal(h.count, 6);
	assert_true(fabs(h.sum - (0.004 + 0.010 + 0.100 + 30.5 + 61)) < 1e-9);
	assert_int_equal(h.nbuckets, 13);
	static const double le[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
	static const uint64_t cum[] = { 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5 };
	for (int i = 0; i < 13; i++) {
		assert_true(h.upper[i] == le[i]);
		if (h.cumulative[i] != cum[i])
			fail_msg("le=%g: %llu, expected %llu", le[i], (unsigned long long)h.cumulative[i],
				 (unsigned long long)cum[i]);
	}
	/* upstream: 0.003, 0.090 (sum of the list), 30.000, 0.000 */
	hist_of(m, "onepanel_http_upstream_response_seconds", "main", &h);
	assert_int_equal(h.count, 4);
	assert_true(fabs(h.sum - 30.093) < 1e-9);
	assert_int_equal(h.cumulative[0], 2);
	assert_int_equal(h.cumulative[4], 3);
	assert_int_equal(h.cumulative[11], 4);

	/* window quantiles over the 6 request times: nearest rank 3 of 6 is
	 * 0.010 (bucket middle 0.0100155), rank 6 is 61 */
	double q50 = value_of(m, "onepanel_http_request_duration_quantile_seconds", "log", "main", "percentile", "50");
	double q99 = value_of(m, "onepanel_http_request_duration_quantile_seconds", "log", "main", "percentile", "99");
	assert_true(fabs(q50 - 0.010) <= 0.010 / 32);
	assert_true(fabs(q99 - 61) <= 61.0 / 32);

	metrics_free(m);
	logstats_free(s);
	logfmt_free(f);
}

/* ---- quantile accuracy ---- */

static uint64_t rng = 88172645463325252ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void check_accuracy(const char *name, uint64_t *v, size_t n)
{
	static const double qs[] = { 0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1 };
	const size_t nq = sizeof(qs) / sizeof(qs[0]);
	struct logstats *s = logstats_new();
	struct logrec r;
	double est[sizeof(qs) / sizeof(qs[0])], worst = 0;

	memset(&r, 0, sizeof(r));
	r.has = 1ull << LV_REQUEST_TIME;
	/* spread over the window: 1000 s + [0, 55) */
	for (size_t i = 0; i < n; i++) {
		r.request_time_us = v[i];
		logstats_add(s, &r, 1000 + 55.0 * (double)i / (double)n);
	}
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 1055, qs, nq, est), n);
	qsort(v, n, sizeof(v[0]), cmp_u64);
	for (size_t j = 0; j < nq; j++) {
		size_t rank = (size_t)ceil(qs[j] * (double)n);
		double exact = (double)v[rank ? rank - 1 : 0] / 1e6;
		double err = fabs(est[j] - exact);
		if (err > exact / 32 + 1e-12)
			fail_msg("%s q=%g: estimate %.9g, exact %.9g (error %.3g%%)", name, qs[j], est[j], exact,
				 100 * err / exact);
		if (exact > 0 && err / exact > worst)
			worst = err / exact;
	}
	print_message("%-24s n=%zu worst relative error %.3f%% (bound 3.125%%)\n", name, n, 100 * worst);
	logstats_free(s);
}

static void test_quantile_accuracy(void **state)
{
	(void)state;
	size_t n = 200000;
	uint64_t *v = malloc(n * sizeof(*v));

	assert_non_null(v);
	/* log-normal around 50 ms, millisecond resolution as nginx logs */
	for (size_t i = 0; i < n; i++) {
		double z = sqrt(-2 * log(1 - uniform())) * cos(2 * M_PI * uniform());
		v[i] = (uint64_t)(exp(log(0.05) + 1.2 * z) * 1000 + 0.5) * 1000;
	}
	check_accuracy("lognormal ms", v, n);
	/* exponential, microsecond resolution */
	for (size_t i = 0; i < n; i++)
		v[i] = (uint64_t)(-log(1 - uniform()) * 200000);
	check_accuracy("exponential us", v, n);
	/* bimodal: cache hits at ~1 ms and misses at ~800 ms */
	for (size_t i = 0; i < n; i++)
		v[i] = uniform() < 0.9 ? 500 + (uint64_t)(uniform() * 1000) : 700000 + (uint64_t)(uniform() * 200000);
	check_accuracy("bimodal us", v, n);
	/* uniform over 0..10 min, then tiny values (exact below 16 us) */
	for (size_t i = 0; i < n; i++)
		v[i] = (uint64_t)(uniform() * 600e6);
	check_accuracy("uniform 0-600 s", v, n);
	for (size_t i = 0; i < 1000; i++)
		v[i] = i % 16;
	check_accuracy("tiny", v, 1000);
	free(v);
}

static void test_window(void **state)
{
	(void)state;
	struct logstats *s = logstats_new();
	struct logrec r;
	double q = 0.5, out;

	memset(&r, 0, sizeof(r));
	r.has = (1ull << LV_REQUEST_TIME) | (1ull << LV_UPSTREAM_RESPONSE_TIME);
	r.request_time_us = 1000;
	r.upstream_response_time_us = 500;
	logstats_add(s, &r, 2);          /* slot 0: [0, 5) */
	r.request_time_us = 2000000;
	logstats_add(s, &r, 32);         /* slot 6: [30, 35) */
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 32, &q, 1, &out), 2);
	assert_true(fabs(out - 0.001) <= 0.001 / 32);
	assert_int_equal(logstats_quantiles(s, LSH_UPSTREAM_TIME, 32, &q, 1, &out), 2);
	/* at 59.9 the window is slots 0..11; at 60 slot 0 has left it */
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 59.9, &q, 1, &out), 2);
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 60, &q, 1, &out), 1);
	assert_true(fabs(out - 2) <= 2.0 / 32);
	/* a record older than the window is counted but not windowed */
	r.request_time_us = 7;
	logstats_add(s, &r, 100);        /* slot 20 */
	logstats_add(s, &r, 3);          /* slot 0: too old now */
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 100, &q, 1, &out), 1);
	assert_true(out == 7e-6);
	/* the ring slot of slot 0 is reused by slot 24 and cleared */
	logstats_add(s, &r, 121);
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 121, &q, 1, &out), 2);
	/* going back within the window still counts */
	logstats_add(s, &r, 101);
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 121, &q, 1, &out), 3);
	/* far later: empty window, NaN */
	assert_int_equal(logstats_quantiles(s, LSH_REQUEST_TIME, 1000, &q, 1, &out), 0);
	assert_true(isnan(out));
	assert_int_equal(logstats_requests(s), 6);
	logstats_free(s);
}

/* ---- rendering ---- */

static int promtool_check(const char *text)
{
	char path[] = "/tmp/test_logstats.XXXXXX";
	int fd = mkstemp(path), rc;
	char cmd[256];

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
	rc = system(cmd);
	unlink(path);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_render(void **state)
{
	(void)state;
	struct logfmt *f = compile("$status \"$request\" $request_time $upstream_response_time");
	struct logstats *a = logstats_new(), *b = logstats_new();
	struct metrics *m = metrics_new();
	struct errlog *e = NULL;
	struct buf out;

	feed(a, f, "200 \"GET / HTTP/1.1\" 0.010 0.009", 0);
	feed(a, f, "502 \"POST /x HTTP/2.0\" 1.000 -", 0);
	feed(b, f, "200 \"GET / HTTP/1.1\" 0.001 -", 0);
	assert_int_equal(errlog_new(NULL, NULL, NULL, &e), 0);
	errlog_feed(e, "2024/01/02 03:04:05 [warn] 1#1: w", 33, 100);
	errlog_feed(e, "panic: x", 8, 100);
	errlog_flush(e, 100);

	assert_int_equal(logstats_collect(a, NULL, 100, m, "/var/log/onepanel/access.log"), 0);
	assert_int_equal(logstats_collect(b, NULL, 100, m, "api"), 0);
	assert_int_equal(logstats_collect(NULL, errlog_counts(e), 100, m, "/var/log/onepanel/error.log"), 0);
	assert_int_equal(logstats_collect(NULL, NULL, 100, m, "nothing"), 0);
	assert_true(value_of(m, "onepanel_error_log_lines_total", "log", "/var/log/onepanel/error.log", "level", "warn") == 1);
	assert_true(value_of(m, "onepanel_error_log_lines_total", "log", "/var/log/onepanel/error.log", "level", "emerg") == 0);
	assert_true(value_of(m, "onepanel_error_log_continuation_lines_total", "log", "/var/log/onepanel/error.log") == 1);
	assert_true(value_of(m, "onepanel_error_log_panics_total") == 1);
	assert_true(value_of(m, "onepanel_error_log_records_total", "kind", "panic") == 1);
	assert_true(value_of(m, "onepanel_error_log_records_total", "kind", "critical") == 0);
	assert_true(value_of(m, "onepanel_error_log_records_suppressed_total") == 0);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "api", "status_class", "2xx") == 1);
	assert_true(value_of(m, "onepanel_http_requests_total", "log", "/var/log/onepanel/access.log",
			     "status_class", "5xx") == 1);

	buf_init(&out);
	assert_int_equal(metrics_render_prom(m, NULL, &out), 0);
	assert_non_null(strstr(out.data, "# TYPE onepanel_http_request_duration_seconds histogram\n"));
	assert_non_null(strstr(out.data, "onepanel_http_request_duration_seconds_bucket{log=\"api\",le=\"0.005\"} 1\n"));
	assert_non_null(strstr(out.data, "onepanel_http_upstream_response_quantile_seconds{log=\"api\",percentile=\"50\"} NaN\n"));
	if (access("/usr/bin/promtool", X_OK) == 0) {
		int rc = promtool_check(out.data);
		if (rc)
			fail_msg("promtool check metrics: %d on\n%s", rc, out.data);
	} else {
		print_message("promtool not installed: lint skipped\n");
	}
	buf_free(&out);
	metrics_free(m);
	errlog_free(e);
	logstats_free(a);
	logstats_free(b);
	logfmt_free(f);
}

static void test_json(void **state)
{
	(void)state;
	struct logfmt *f = compile("$status $request_time $request_length");
	struct logstats *s = logstats_new();
	struct errlog *e = NULL;
	cJSON *j;

	feed(s, f, "200 0.010 100", 0);
	feed(s, f, "404 0.020 -", 0);
	feed(s, f, "x", -EINVAL);
	assert_int_equal(errlog_new(NULL, NULL, NULL, &e), 0);
	errlog_feed(e, "2024/01/02 03:04:05 [crit] 1#1: c", 33, 100);
	errlog_flush(e, 100);

	j = logstats_to_json(s, errlog_counts(e), 100);
	assert_non_null(j);
	assert_int_equal(cJSON_GetObjectItem(j, "lines")->valuedouble, 3);
	assert_int_equal(cJSON_GetObjectItem(j, "malformed")->valuedouble, 1);
	assert_int_equal(cJSON_GetObjectItem(j, "requests")->valuedouble, 2);
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "status"), "4xx")->valuedouble, 1);
	assert_int_equal(cJSON_GetObjectItem(j, "request_bytes")->valuedouble, 100);
	cJSON *rt = cJSON_GetObjectItem(j, "request_time");
	assert_int_equal(cJSON_GetObjectItem(rt, "count")->valuedouble, 2);
	assert_int_equal(cJSON_GetObjectItem(rt, "window_seconds")->valuedouble, 60);
	assert_true(fabs(cJSON_GetObjectItem(rt, "p99")->valuedouble - 0.020) <= 0.020 / 32);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "upstream_response_time")));
	cJSON *er = cJSON_GetObjectItem(j, "errors");
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(er, "lines"), "crit")->valuedouble, 1);
	assert_int_equal(cJSON_GetObjectItem(er, "critical")->valuedouble, 1);
	assert_int_equal(cJSON_GetObjectItem(er, "records")->valuedouble, 1);
	cJSON_Delete(j);

	j = logstats_to_json(NULL, NULL, 0);
	assert_non_null(j);
	assert_null(j->child);
	cJSON_Delete(j);
	errlog_free(e);
	logstats_free(s);
	logfmt_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counts),
		cmocka_unit_test(test_quantile_accuracy),
		cmocka_unit_test(test_window),
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
