/* Metric snapshot storage and rendering.
 *
 * Families live in one array in declaration order; each family keeps its own
 * array of samples, so rendering is a single pass with HELP/TYPE once per
 * family, as the exposition format requires. Lookup of a family by name is
 * linear with a one-entry cache: collectors add runs of samples to the same
 * family, and a snapshot holds a few hundred samples at most. */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sample {
	char *labels[2 * METRIC_MAX_LABELS];
	size_t npairs;
	double value;
	/* histogram only */
	size_t nbuckets;
	double *upper;
	uint64_t *cumulative;
	double sum;
	uint64_t count;
};

struct family {
	char *name;
	char *help;
	enum metric_type type;
	struct sample *samples;
	size_t nsamples, cap;
};

struct metrics {
	struct family *fam;
	size_t nfam, cap;
	size_t last; /* cache for find */
	size_t nsamples;
};

struct metrics *metrics_new(void)
{
	return calloc(1, sizeof(struct metrics));
}

static void sample_free(struct sample *s)
{
	for (size_t i = 0; i < 2 * s->npairs; i++)
		free(s->labels[i]);
	free(s->upper);
	free(s->cumulative);
}

void metrics_reset(struct metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfam; i++) {
		struct family *f = &m->fam[i];
		for (size_t j = 0; j < f->nsamples; j++)
			sample_free(&f->samples[j]);
		free(f->samples);
		free(f->name);
		free(f->help);
	}
	m->nfam = 0;
	m->nsamples = 0;
	m->last = 0;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	metrics_reset(m);
	free(m->fam);
	free(m);
}

static struct family *find(const struct metrics *m, const char *name)
{
	struct metrics *mm = (struct metrics *)m;
	if (m->last < m->nfam && strcmp(m->fam[m->last].name, name) == 0)
		return &mm->fam[m->last];
	for (size_t i = 0; i < m->nfam; i++) {
		if (strcmp(m->fam[i].name, name) == 0) {
			mm->last = i;
			return &mm->fam[i];
		}
	}
	return NULL;
}

static int valid_name(const char *s, int allow_colon)
{
	if (!s || !*s)
		return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			 (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

int metrics_declare(struct metrics *m, const char *name, enum metric_type type, const char *help)
{
	struct family *f = find(m, name);
	if (f)
		return f->type == type ? 0 : -EINVAL;
	if (!valid_name(name, 1))
		return -EINVAL;
	if (m->nfam == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 32;
		struct family *p = realloc(m->fam, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		m->fam = p;
		m->cap = cap;
	}
	f = &m->fam[m->nfam];
	memset(f, 0, sizeof(*f));
	f->name = strdup(name);
	f->help = strdup(help ? help : "");
	f->type = type;
	if (!f->name || !f->help) {
		free(f->name);
		free(f->help);
		return -ENOMEM;
	}
	m->last = m->nfam++;
	return 0;
}

static int check_labels(size_t npairs, const char *const *kv)
{
	if (npairs > METRIC_MAX_LABELS)
		return -E2BIG;
	for (size_t i = 0; i < npairs; i++)
		if (!valid_name(kv[2 * i], 0) || strncmp(kv[2 * i], "__", 2) == 0 || !kv[2 * i + 1])
			return -EINVAL;
	return 0;
}

/* Labels must have passed check_labels. */
static struct sample *new_sample(struct metrics *m, struct family *f, size_t npairs, const char *const *kv)
{
	if (f->nsamples == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 4;
		struct sample *p = realloc(f->samples, cap * sizeof(*p));
		if (!p)
			return NULL;
		f->samples = p;
		f->cap = cap;
	}
	struct sample *s = &f->samples[f->nsamples];
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < 2 * npairs; i++) {
		s->labels[i] = strdup(kv[i]);
		if (!s->labels[i]) {
			s->npairs = (i + 1) / 2;
			sample_free(s);
			return NULL;
		}
		s->npairs = (i + 2) / 2;
	}
	s->npairs = npairs;
	f->nsamples++;
	m->nsamples++;
	return s;
}

static size_t collect_pairs(va_list ap, const char **kv)
{
	size_t n = 0;
	const char *k;
	while ((k = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);
		if (n >= 2 * METRIC_MAX_LABELS)
			return METRIC_MAX_LABELS + 1;
		kv[n++] = k;
		kv[n++] = v;
	}
	return n / 2;
}

int metrics_addv(struct metrics *m, const char *name, double value, size_t npairs, const char *const *kv)
{
	struct family *f = find(m, name);
	if (!f)
		return -ENOENT;
	if (f->type == MT_HISTOGRAM)
		return -EINVAL;
	int r = check_labels(npairs, kv);
	if (r)
		return r;
	struct sample *s = new_sample(m, f, npairs, kv);
	if (!s)
		return -ENOMEM;
	s->value = value;
	return 0;
}

int metrics_add(struct metrics *m, const char *name, double value, ...)
{
	const char *kv[2 * METRIC_MAX_LABELS + 2];
	va_list ap;
	va_start(ap, value);
	size_t n = collect_pairs(ap, kv);
	va_end(ap);
	if (n > METRIC_MAX_LABELS)
		return -E2BIG;
	return metrics_addv(m, name, value, n, kv);
}

int metrics_add_histogram(struct metrics *m, const char *name, size_t nbuckets, const double *upper,
			  const uint64_t *cumulative, double sum, uint64_t count, ...)
{
	const char *kv[2 * METRIC_MAX_LABELS + 2];
	va_list ap;
	va_start(ap, count);
	size_t n = collect_pairs(ap, kv);
	va_end(ap);
	if (n > METRIC_MAX_LABELS)
		return -E2BIG;
	struct family *f = find(m, name);
	if (!f)
		return -ENOENT;
	if (f->type != MT_HISTOGRAM || check_labels(n, kv))
		return -EINVAL;
	for (size_t i = 1; i < nbuckets; i++)
		if (!(upper[i] > upper[i - 1]) || cumulative[i] < cumulative[i - 1])
			return -EINVAL;
	double *u = malloc((nbuckets ? nbuckets : 1) * sizeof(*u));
	uint64_t *c = malloc((nbuckets ? nbuckets : 1) * sizeof(*c));
	struct sample *s = (u && c) ? new_sample(m, f, n, kv) : NULL;
	if (!s) {
		free(u);
		free(c);
		return -ENOMEM;
	}
	if (nbuckets) {
		memcpy(u, upper, nbuckets * sizeof(*u));
		memcpy(c, cumulative, nbuckets * sizeof(*c));
	}
	s->nbuckets = nbuckets;
	s->upper = u;
	s->cumulative = c;
	s->sum = sum;
	s->count = count;
	return 0;
}

int metrics_family_at(const struct metrics *m, size_t i, struct metric_family_view *out)
{
	if (i >= m->nfam)
		return -ENOENT;
	const struct family *f = &m->fam[i];
	out->name = f->name;
	out->help = f->help;
	out->type = f->type;
	out->nsamples = f->nsamples;
	return 0;
}

int metrics_sample_at(const struct metrics *m, size_t family, size_t i, struct metric_sample_view *out)
{
	if (family >= m->nfam || i >= m->fam[family].nsamples)
		return -ENOENT;
	const struct sample *s = &m->fam[family].samples[i];
	out->npairs = s->npairs;
	out->labels = (const char *const *)s->labels;
	out->value = s->value;
	out->nbuckets = s->nbuckets;
	out->upper = s->upper;
	out->cumulative = s->cumulative;
	out->sum = s->sum;
	out->count = s->count;
	return 0;
}

size_t metrics_family_count(const struct metrics *m)
{
	return m->nfam;
}

size_t metrics_sample_count(const struct metrics *m)
{
	return m->nsamples;
}

static int sample_matches(const struct sample *s, size_t n, const char *const *kv)
{
	for (size_t i = 0; i < n; i++) {
		int found = 0;
		for (size_t j = 0; j < s->npairs && !found; j++)
			found = strcmp(s->labels[2 * j], kv[2 * i]) == 0 && strcmp(s->labels[2 * j + 1], kv[2 * i + 1]) == 0;
		if (!found)
			return 0;
	}
	return 1;
}

int metrics_lookup(const struct metrics *m, const char *name, double *value, ...)
{
	const char *kv[2 * METRIC_MAX_LABELS + 2];
	va_list ap;
	va_start(ap, value);
	size_t n = collect_pairs(ap, kv);
	va_end(ap);
	if (n > METRIC_MAX_LABELS)
		return -E2BIG;
	const struct family *f = find(m, name);
	if (!f)
		return -ENOENT;
	for (size_t i = 0; i < f->nsamples; i++) {
		if (sample_matches(&f->samples[i], n, kv)) {
			*value = f->type == MT_HISTOGRAM ? (double)f->samples[i].count : f->samples[i].value;
			return 0;
		}
	}
	return -ENOENT;
}

/* Prometheus float: integers exactly, others with enough digits to round-trip
 * the values we produce, and the spellings the format defines for specials. */
static void fmt_value(struct buf *b, double v)
{
	if (isnan(v))
		buf_puts(b, "NaN");
	else if (isinf(v))
		buf_puts(b, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		buf_printf(b, "%.0f", v);
	else {
		/* shortest form that reads back as the same double */
		char t[40];
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(t, sizeof(t), "%.*g", prec, v);
			if (strtod(t, NULL) == v)
				break;
		}
		buf_puts(b, t);
	}
}

static void escape(struct buf *b, const char *s, int quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			buf_puts(b, "\\\\");
		else if (*s == '\n')
			buf_puts(b, "\\n");
		else if (quote && *s == '"')
			buf_puts(b, "\\\"");
		else
			buf_append(b, s, 1);
	}
}

static void labels(struct buf *b, const struct sample *s, const char *le)
{
	if (!s->npairs && !le)
		return;
	buf_puts(b, "{");
	for (size_t i = 0; i < s->npairs; i++) {
		if (i)
			buf_puts(b, ",");
		buf_puts(b, s->labels[2 * i]);
		buf_puts(b, "=\"");
		escape(b, s->labels[2 * i + 1], 1);
		buf_puts(b, "\"");
	}
	if (le) {
		buf_printf(b, "%sle=\"%s\"", s->npairs ? "," : "", le);
	}
	buf_puts(b, "}");
}

static const char *type_name(enum metric_type t)
{
	switch (t) {
	case MT_COUNTER: return "counter";
	case MT_GAUGE: return "gauge";
	case MT_HISTOGRAM: return "histogram";
	}
	return "untyped";
}

static int prefix_ok(const char *name, const char *prefix)
{
	return !prefix || !*prefix || strncmp(name, prefix, strlen(prefix)) == 0;
}

int metrics_render_prom(const struct metrics *m, const char *prefix, struct buf *b)
{
	for (size_t i = 0; i < m->nfam; i++) {
		const struct family *f = &m->fam[i];
		if (!f->nsamples || !prefix_ok(f->name, prefix))
			continue;
		buf_printf(b, "# HELP %s ", f->name);
		escape(b, f->help, 0);
		buf_printf(b, "\n# TYPE %s %s\n", f->name, type_name(f->type));
		for (size_t j = 0; j < f->nsamples; j++) {
			const struct sample *s = &f->samples[j];
			if (f->type != MT_HISTOGRAM) {
				buf_puts(b, f->name);
				labels(b, s, NULL);
				buf_puts(b, " ");
				fmt_value(b, s->value);
				buf_puts(b, "\n");
				continue;
			}
			for (size_t k = 0; k < s->nbuckets; k++) {
				struct buf le;
				buf_init(&le);
				fmt_value(&le, s->upper[k]);
				buf_printf(b, "%s_bucket", f->name);
				labels(b, s, le.data ? le.data : "0");
				buf_free(&le);
				buf_printf(b, " %llu\n", (unsigned long long)s->cumulative[k]);
			}
			buf_printf(b, "%s_bucket", f->name);
			labels(b, s, "+Inf");
			buf_printf(b, " %llu\n%s_sum", (unsigned long long)s->count, f->name);
			labels(b, s, NULL);
			buf_puts(b, " ");
			fmt_value(b, s->sum);
			buf_printf(b, "\n%s_count", f->name);
			labels(b, s, NULL);
			buf_printf(b, " %llu\n", (unsigned long long)s->count);
		}
	}
	return b->oom ? -ENOMEM : 0;
}

/* JSON numbers cannot be NaN/Inf: those become strings, as in Prometheus'
 * own JSON API. */
static cJSON *json_number(double v)
{
	if (isnan(v))
		return cJSON_CreateString("NaN");
	if (isinf(v))
		return cJSON_CreateString(v > 0 ? "+Inf" : "-Inf");
	/* cJSON prints 15 significant digits whenever that is within an
	 * epsilon; /v1/metrics must carry the same value as /metrics. */
	struct buf b;
	buf_init(&b);
	fmt_value(&b, v);
	cJSON *n = b.data ? cJSON_CreateRaw(b.data) : NULL;
	buf_free(&b);
	return n;
}

cJSON *metrics_to_json(const struct metrics *m, const char *prefix)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(root, "metrics");
	if (!arr)
		goto oom;
	for (size_t i = 0; i < m->nfam; i++) {
		const struct family *f = &m->fam[i];
		if (!f->nsamples || !prefix_ok(f->name, prefix))
			continue;
		cJSON *jf = cJSON_CreateObject();
		if (!jf)
			goto oom;
		cJSON_AddItemToArray(arr, jf);
		cJSON_AddStringToObject(jf, "name", f->name);
		cJSON_AddStringToObject(jf, "type", type_name(f->type));
		cJSON_AddStringToObject(jf, "help", f->help);
		cJSON *js = cJSON_AddArrayToObject(jf, "samples");
		if (!js)
			goto oom;
		for (size_t j = 0; j < f->nsamples; j++) {
			const struct sample *s = &f->samples[j];
			cJSON *o = cJSON_CreateObject();
			if (!o)
				goto oom;
			cJSON_AddItemToArray(js, o);
			cJSON *jl = cJSON_AddObjectToObject(o, "labels");
			for (size_t k = 0; jl && k < s->npairs; k++)
				cJSON_AddStringToObject(jl, s->labels[2 * k], s->labels[2 * k + 1]);
			if (f->type != MT_HISTOGRAM) {
				cJSON_AddItemToObject(o, "value", json_number(s->value));
				continue;
			}
			cJSON *jb = cJSON_AddArrayToObject(o, "buckets");
			for (size_t k = 0; jb && k < s->nbuckets; k++) {
				cJSON *e = cJSON_CreateObject();
				cJSON_AddItemToArray(jb, e);
				cJSON_AddItemToObject(e, "le", json_number(s->upper[k]));
				char cnt[24];
				snprintf(cnt, sizeof(cnt), "%llu", (unsigned long long)s->cumulative[k]);
				cJSON_AddRawToObject(e, "count", cnt);
			}
			cJSON_AddItemToObject(o, "sum", json_number(s->sum));
			char cnt[24];
			snprintf(cnt, sizeof(cnt), "%llu", (unsigned long long)s->count);
			cJSON_AddRawToObject(o, "count", cnt);
		}
	}
	return root;
oom:
	cJSON_Delete(root);
	return NULL;
}
