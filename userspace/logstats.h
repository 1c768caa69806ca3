/* Per-log statistics from parsed access-log records (and error-log counts)
 * turned into metric families with a "log" label.
 *
 * Cumulative counters: requests by status class and by code (a fixed set
 * of standard and nginx codes; any other code is "other"), by method and
 * by protocol, response bytes ($bytes_sent when logged, else
 * $body_bytes_sent), request bytes ($request_length), Prometheus
 * histograms of $request_time and $upstream_response_time (sum over the
 * upstream list), lines parsed, malformed and truncated.
 *
 * Sliding-window quantiles: p50/p90/p99 of request and upstream time over
 * the last LOGSTATS_WINDOW_SECONDS, kept as LOGSTATS_SLOTS slots of
 * LOGSTATS_SLOT_SECONDS each (the window is the current slot and the
 * previous ones, so 55-60 s) of log-linear histograms over integer
 * microseconds: exact below 16 us, then 16 buckets per power of two.
 * No sample is stored. A quantile is the nearest-rank value (the smallest
 * recorded value v with at least ceil(q*n) values <= v) estimated as the
 * middle of its bucket, so it is within 1/32 (3.125 %) of the exact
 * nearest-rank value, for values up to 2^36 us (19 h; larger values are
 * clamped there). nginx logs times with millisecond resolution, so the
 * input itself is exact to 1 ms.
 *
 * Time ("now", seconds, any origin >= 0, typically CLOCK_REALTIME or
 * CLOCK_MONOTONIC) is passed in; nothing here reads a clock. Records that
 * arrive with a now older than the window are counted but not windowed.
 *
 * Metric families (all with label log="<log_label>"):
 *   onepanel_http_requests_total{status_class="1xx".."5xx"|"other"}   counter
 *   onepanel_http_responses_total{code="200"|...|"other"}            counter (codes seen)
 *   onepanel_http_requests_by_method_total{method}                   counter
 *   onepanel_http_requests_by_protocol_total{protocol}               counter
 *   onepanel_http_response_bytes_total, onepanel_http_request_bytes_total
 *   onepanel_http_request_duration_seconds                           histogram
 *   onepanel_http_upstream_response_seconds                          histogram
 *   onepanel_http_request_duration_quantile_seconds{percentile="50"|"90"|"99"}
 *                                                                    gauge (NaN: empty window)
 *   onepanel_http_upstream_response_quantile_seconds{percentile}     gauge
 *     (label "percentile", not "quantile": promtool reserves "quantile"
 *      for summaries, and the snapshot has no summary type)
 *   onepanel_log_lines_total, onepanel_log_lines_malformed_total,
 *   onepanel_log_lines_truncated_total                               counter
 * and from an errlog:
 *   onepanel_error_log_lines_total{level}                            counter
 *   onepanel_error_log_continuation_lines_total                      counter
 *   onepanel_error_log_critical_total (lines at crit and above)      counter
 *   onepanel_error_log_panics_total                                  counter
 *   onepanel_error_log_pattern_matches_total                         counter
 *   onepanel_error_log_records_total{kind}                           counter
 *   onepanel_error_log_records_suppressed_total                      counter
 * Label values come from fixed sets only (never paths, addresses or user
 * agents), so cardinality is bounded per log.
 *
 * Ownership: struct logstats is owned by the caller (one per log file);
 * it is not thread-safe. */
#ifndef OS_LOGSTATS_H
#define OS_LOGSTATS_H

#include <stddef.h>
#include <stdint.h>

#define LOGSTATS_SLOT_SECONDS 5
#define LOGSTATS_SLOTS 12
#define LOGSTATS_WINDOW_SECONDS (LOGSTATS_SLOT_SECONDS * LOGSTATS_SLOTS)

struct logrec;
struct logfmt;
struct errlog_counts;
struct metrics;
struct cJSON;

enum logstats_hist { LSH_REQUEST_TIME, LSH_UPSTREAM_TIME, LSH__COUNT };

struct logstats;

struct logstats *logstats_new(void);         /* NULL on ENOMEM */
void logstats_free(struct logstats *s);      /* accepts NULL */

/* Account one parsed record at caller time now. */
void logstats_add(struct logstats *s, const struct logrec *r, double now);
void logstats_malformed(struct logstats *s);
/* A line the tailer cut (longer than its buffer); parse what was kept or
 * not, as the caller prefers: this only counts. */
void logstats_truncated(struct logstats *s);

/* Parse a line with f and account it (or count it malformed). Returns the
 * logfmt_parse() result. */
int logstats_feed(struct logstats *s, const struct logfmt *f, const char *line, size_t len, double now);

uint64_t logstats_requests(const struct logstats *s);

/* Quantiles q[0..n) (each in [0,1]) of a windowed histogram at time now;
 * out[i] in seconds, NaN when the window is empty. Returns the number of
 * values in the window. */
uint64_t logstats_quantiles(const struct logstats *s, enum logstats_hist h, double now, const double *q,
			    size_t n, double *out);

/* Add this log's families to m (declaring them as needed). s or ec may be
 * NULL (an error log has only ec; an access log has only s). 0 or the
 * first error from m (-ENOMEM, -EINVAL for a name clash). */
int logstats_collect(const struct logstats *s, const struct errlog_counts *ec, double now, struct metrics *m,
		     const char *log_label);

/* Summary for /v1/status:
 * {"lines","malformed","truncated","requests",
 *  "status":{"1xx",...,"other"},"response_bytes","request_bytes",
 *  "request_time":{"window_seconds","count","p50","p90","p99"} (null when empty),
 *  "upstream_response_time":{...},
 *  "errors":{"lines":{"debug",...},"continuation","critical","panics",
 *            "records","suppressed"}}
 * Either part is left out when its pointer is NULL. NULL on ENOMEM. */
struct cJSON *logstats_to_json(const struct logstats *s, const struct errlog_counts *ec, double now);

#endif
