/* Metric snapshot: the families and samples collected in one sampling pass.
 *
 * Collectors declare a family once per snapshot (name, type, help) and add
 * samples to it; renderers turn a snapshot into Prometheus text or JSON (and
 * later protobuf). A snapshot is built whole by the core loop at each
 * interval and then only read, so the REST handlers answer from the last
 * complete snapshot and a scrape never sees a half-collected state.
 *
 * The snapshot owns copies of every string passed in. Labels are given as
 * NULL-terminated name/value pairs; at most METRIC_MAX_LABELS pairs.
 * Histogram buckets are upper bounds (ascending, without +Inf) with
 * cumulative counts, as in Prometheus. */
#ifndef OS_METRICS_H
#define OS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct cJSON;

enum metric_type { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM };

#define METRIC_MAX_LABELS 6

struct metrics;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);          /* accepts NULL */
void metrics_reset(struct metrics *m);         /* drop families and samples */

/* Declare a family; declaring an existing name again is a no-op that
 * returns 0 if the type matches and -EINVAL if it does not. */
int metrics_declare(struct metrics *m, const char *name, enum metric_type type, const char *help);

/* Add a sample: name of a declared family, value, then label pairs
 * ("cpu", "0", "mode", "user", NULL). -ENOENT for an undeclared family. */
int metrics_add(struct metrics *m, const char *name, double value, ...) __attribute__((sentinel));
int metrics_addv(struct metrics *m, const char *name, double value, size_t npairs, const char *const *kv);

/* Histogram sample; upper[] ascending, cumulative[] the count <= upper[i]. */
int metrics_add_histogram(struct metrics *m, const char *name, size_t nbuckets, const double *upper,
			  const uint64_t *cumulative, double sum, uint64_t count, ...) __attribute__((sentinel));

/* Read-only views for renderers elsewhere (protobuf). Pointers stay valid
 * until the snapshot is reset or freed. */
struct metric_family_view {
	const char *name;
	const char *help;
	enum metric_type type;
	size_t nsamples;
};
struct metric_sample_view {
	size_t npairs;
	const char *const *labels;   /* name0, value0, name1, value1, ... */
	double value;
	size_t nbuckets;             /* histograms */
	const double *upper;
	const uint64_t *cumulative;
	double sum;
	uint64_t count;
};
int metrics_family_at(const struct metrics *m, size_t i, struct metric_family_view *out);
int metrics_sample_at(const struct metrics *m, size_t family, size_t i, struct metric_sample_view *out);

size_t metrics_family_count(const struct metrics *m);
size_t metrics_sample_count(const struct metrics *m);
/* Value of the first sample of a family whose labels include all given
 * pairs; -ENOENT when none. For tests and status summaries. */
int metrics_lookup(const struct metrics *m, const char *name, double *value, ...) __attribute__((sentinel));

/* Prometheus text exposition format 0.0.4 with HELP and TYPE lines.
 * prefix filters families by name prefix (NULL or "" = all). */
int metrics_render_prom(const struct metrics *m, const char *prefix, struct buf *out);
/* {"metrics":[{"name","type","help","samples":[{"labels":{},"value"}|
 *  {"labels":{},"buckets":[{"le","count"}],"sum","count"}]}]} */
struct cJSON *metrics_to_json(const struct metrics *m, const char *prefix);

#endif
