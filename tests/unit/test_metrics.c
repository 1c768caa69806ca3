/* Metric snapshot: declaration rules, labels, Prometheus and JSON rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "metrics.h"

static void test_declare_rules(void **state)
{
	(void)state;
	struct metrics *m = metrics_new();
	assert_int_equal(metrics_declare(m, "a_total", MT_COUNTER, "A."), 0);
	assert_int_equal(metrics_declare(m, "a_total", MT_COUNTER, "A."), 0);
	assert_int_equal(metrics_declare(m, "a_total", MT_GAUGE, "A."), -22);
	assert_int_equal(metrics_declare(m, "1bad", MT_GAUGE, "x"), -22);
	assert_int_equal(metrics_declare(m, "bad-name", MT_GAUGE, "x"), -22);
	assert_int_equal(metrics_declare(m, "", MT_GAUGE, "x"), -22);
	assert_int_equal(metrics_add(m, "undeclared", 1, NULL), -2);
	assert_int_equal(metrics_add(m, "a_total", 1, "bad-label", "v", NULL), -22);
	assert_int_equal(metrics_add(m, "a_total", 1, "__reserved", "v", NULL), -22);
	assert_int_equal(metrics_family_count(m), 1);
	metrics_free(m);
}

static void test_prom_text(void **state)
{
	(void)state;
	struct metrics *m = metrics_new();
	metrics_declare(m, "x_seconds_total", MT_COUNTER, "Line one\\two\nthree.");
	metrics_add(m, "x_seconds_total", 1.5, "cpu", "0", "mode", "user", NULL);
	metrics_add(m, "x_seconds_total", 3, "cpu", "0", "mode", "sys\"t\\em\n", NULL);
	metrics_declare(m, "y", MT_GAUGE, "Y.");
	metrics_add(m, "y", 0.1, NULL);
	metrics_add(m, "y", NAN, "k", "nan", NULL);
	metrics_add(m, "y", INFINITY, "k", "inf", NULL);
	metrics_add(m, "y", 123456789012.0, "k", "big", NULL);
	metrics_declare(m, "empty", MT_GAUGE, "Never sampled.");
	struct buf b;
	buf_init(&b);
	assert_int_equal(metrics_render_prom(m, NULL, &b), 0);
	const char *want =
		"# HELP x_seconds_total Line one\\\\two\\nthree.\n"
		"# TYPE x_seconds_total counter\n"
		"x_seconds_total{cpu=\"0\",mode=\"user\"} 1.5\n"
		"x_seconds_total{cpu=\"0\",mode=\"sys\\\"t\\\\em\\n\"} 3\n"
		"# HELP y Y.\n"
		"# TYPE y gauge\n"
		"y 0.1\n"
		"y{k=\"nan\"} NaN\n"
		"y{k=\"inf\"} +Inf\n"
		"y{k=\"big\"} 123456789012\n";
	assert_string_equal(b.data, want);
	buf_reset(&b);
	assert_int_equal(metrics_render_prom(m, "y", &b), 0);
	assert_null(strstr(b.data, "x_seconds_total"));
	assert_non_null(strstr(b.data, "# TYPE y gauge"));
	buf_free(&b);
	metrics_free(m);
}

static void test_histogram(void **state)
{
	(void)state;
	struct metrics *m = metrics_new();
	metrics_declare(m, "lat_seconds", MT_HISTOGRAM, "Latency.");
	double up[] = { 0.001, 0.01, 0.1 };
	uint64_t cum[] = { 1, 5, 9 };
	assert_int_equal(metrics_add_histogram(m, "lat_seconds", 3, up, cum, 0.5, 10, "op", "read", NULL), 0);
	uint64_t bad[] = { 5, 1, 9 };
	assert_int_equal(metrics_add_histogram(m, "lat_seconds", 3, up, bad, 0.5, 10, NULL), -22);
	assert_int_equal(metrics_add(m, "lat_seconds", 1, NULL), -22);
	struct buf b;
	buf_init(&b);
	metrics_render_prom(m, NULL, &b);
	const char *want = "# HELP lat_seconds Latency.\n"
			   "# TYPE lat_seconds histogram\n"
			   "lat_seconds_bucket{op=\"read\",le=\"0.001\"} 1\n"
			   "lat_seconds_bucket{op=\"read\",le=\"0.01\"} 5\n"
			   "lat_seconds_bucket{op=\"read\",le=\"0.1\"} 9\n"
			   "lat_seconds_bucket{op=\"read\",le=\"+Inf\"} 10\n"
			   "lat_seconds_sum{op=\"read\"} 0.5\n"
			   "lat_seconds_count{op=\"read\"} 10\n";
	assert_string_equal(b.data, want);
	buf_free(&b);

	/* as a client sees it: printed, then parsed */
	cJSON *raw = metrics_to_json(m, NULL);
	char *txt = cJSON_PrintUnformatted(raw);
	cJSON_Delete(raw);
	cJSON *j = cJSON_Parse(txt);
	cJSON_free(txt);
	cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "metrics"), 0);
	assert_string_equal(cJSON_GetObjectItem(f, "type")->valuestring, "histogram");
	cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItem(f, "samples"), 0);
	assert_int_equal(cJSON_GetObjectItem(s, "count")->valueint, 10);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "buckets")), 3);
	assert_true(cJSON_GetObjectItem(s, "sum")->valuedouble == 0.5);
	cJSON *b0 = cJSON_GetArrayItem(cJSON_GetObjectItem(s, "buckets"), 0);
	assert_true(cJSON_GetObjectItem(b0, "le")->valuedouble == 0.001);
	assert_int_equal(cJSON_GetObjectItem(b0, "count")->valueint, 1);
	cJSON_Delete(j);
	metrics_free(m);
}

static void test_lookup_and_json(void **state)
{
	(void)state;
	struct metrics *m = metrics_new();
	metrics_declare(m, "n", MT_GAUGE, "N.");
	metrics_add(m, "n", 1, "dev", "a", NULL);
	metrics_add(m, "n", 2, "dev", "b", NULL);
	metrics_add(m, "n", NAN, "dev", "c", NULL);
	double v;
	assert_int_equal(metrics_lookup(m, "n", &v, "dev", "b", NULL), 0);
	assert_true(v == 2);
	assert_int_equal(metrics_lookup(m, "n", &v, "dev", "z", NULL), -2);
	assert_int_equal(metrics_lookup(m, "nope", &v, NULL), -2);
	assert_int_equal(metrics_sample_count(m), 3);
	cJSON *j = metrics_to_json(m, "n");
	char *txt = cJSON_PrintUnformatted(j);
	assert_non_null(strstr(txt, "\"labels\":{\"dev\":\"c\"},\"value\":\"NaN\""));
	cJSON_free(txt);
	cJSON_Delete(j);
	j = metrics_to_json(m, "zzz");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "metrics")), 0);
	cJSON_Delete(j);
	metrics_reset(m);
	assert_int_equal(metrics_family_count(m), 0);
	metrics_free(m);
	metrics_free(NULL);
}

/* Values must survive JSON exactly, as in /metrics (cJSON alone prints 15
 * significant digits when that is "close enough"). */
static void test_json_exact_doubles(void **state)
{
	(void)state;
	struct metrics *m = metrics_new();
	metrics_declare(m, "t", MT_GAUGE, "T.");
	const double vals[] = { 1795668371.6683197, 0.1, 1e-300, 123456789.123456789, 4503599627370497.0 };
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		char k[8];
		snprintf(k, sizeof(k), "%zu", i);
		metrics_add(m, "t", vals[i], "i", k, NULL);
	}
	cJSON *raw = metrics_to_json(m, NULL);
	char *txt = cJSON_PrintUnformatted(raw);
	cJSON_Delete(raw);
	cJSON *j = cJSON_Parse(txt);
	cJSON_free(txt);
	cJSON *samples = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "metrics"), 0), "samples");
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(samples, (int)i), "value")->valuedouble == vals[i]);
	cJSON_Delete(j);
	metrics_free(m);
}

static void test_too_many_labels(void **state)
{
	(void)state;
	struct metrics *m = metrics_new();
	metrics_declare(m, "l", MT_GAUGE, "L.");
	assert_int_equal(metrics_add(m, "l", 1, "a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6", "g", "7",
				     NULL),
			 -7);
	assert_int_equal(metrics_sample_count(m), 0);
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_declare_rules), cmocka_unit_test(test_prom_text),
		cmocka_unit_test(test_histogram),     cmocka_unit_test(test_lookup_and_json),
		cmocka_unit_test(test_too_many_labels), cmocka_unit_test(test_json_exact_doubles),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
