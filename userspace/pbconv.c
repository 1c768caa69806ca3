#include "pbconv.h"
#include "probes.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "event.h"
#include "grpc_server.h"
#include "journal.h"
#include "loop.h"
#include "metrics.h"
#include "mgmt.h"
#include "onepanel.h"
#include "opversion.h"
#include "oneshield/agent/v1/agent.pb-c.h"
#include "rest.h"
#include "cfgfs.h"
#include "cfgapply.h"

/* ---- a bump arena for the protobuf-c object graph ---- */

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct arena {
	struct chunk *head;
	bool oom;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (!a->head || a->head->cap - a->head->used < n) {
		size_t cap = n > 16384 ? n : 16384;
		struct chunk *c = malloc(sizeof(*c) + cap);
		if (!c) {
			a->oom = true;
			return NULL;
		}
		c->next = a->head;
		c->used = 0;
		c->cap = cap;
		a->head = c;
	}
	void *p = (char *)a->head->data + a->head->used;
	a->head->used += n;
	return p;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct chunk *c = a->head;
		a->head = c->next;
		free(c);
	}
}

#define NEW(a, type, init)                                                                                             \
	({                                                                                                             \
		type *p_ = arena_alloc(a, sizeof(type));                                                               \
		if (p_) {                                                                                              \
			type v_ = init;                                                                                \
			*p_ = v_;                                                                                      \
		}                                                                                                      \
		p_;                                                                                                    \
	})

static int pack(const ProtobufCMessage *msg, struct buf *out)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	if (buf_reserve(out, n))
		return -ENOMEM;
	protobuf_c_message_pack(msg, (uint8_t *)out->data + out->len);
	out->len += n;
	return 0;
}

/* ---- events ---- */

static Oneshield__Agent__V1__Level level_of(enum event_level l)
{
	switch (l) {
	case EL_DEBUG: return ONESHIELD__AGENT__V1__LEVEL__LEVEL_DEBUG;
	case EL_INFO: return ONESHIELD__AGENT__V1__LEVEL__LEVEL_INFO;
	case EL_NOTICE: return ONESHIELD__AGENT__V1__LEVEL__LEVEL_NOTICE;
	case EL_WARNING: return ONESHIELD__AGENT__V1__LEVEL__LEVEL_WARNING;
	case EL_ERROR: return ONESHIELD__AGENT__V1__LEVEL__LEVEL_ERROR;
	case EL_CRITICAL: return ONESHIELD__AGENT__V1__LEVEL__LEVEL_CRITICAL;
	}
	return ONESHIELD__AGENT__V1__LEVEL__LEVEL_UNSPECIFIED;
}

int pb_event(const struct event *e, struct buf *out)
{
	Oneshield__Agent__V1__Event m = ONESHIELD__AGENT__V1__EVENT__INIT;
	Oneshield__Agent__V1__Event__FieldsEntry ent[EVENT_MAX_FIELDS];
	Oneshield__Agent__V1__Event__FieldsEntry *ptr[EVENT_MAX_FIELDS];
	/* The enum numbers are the proto's (event.h says so). */
	m.seq = e->type == EV_EVENTS_LOST ? e->lost_to : e->seq;
	m.type = (Oneshield__Agent__V1__EventType)e->type;
	m.time_unix_nano = e->time_ns;
	m.level = level_of(e->level);
	m.message = e->message;
	if (e->correlation_id)
		m.correlation_id = e->correlation_id;
	m.pid = e->pid;
	if (e->has_exit) {
		if (e->signal) {
			m.exit_case = ONESHIELD__AGENT__V1__EVENT__EXIT_SIGNAL;
			m.signal = e->signal;
		} else {
			m.exit_case = ONESHIELD__AGENT__V1__EVENT__EXIT_EXIT_CODE;
			m.exit_code = e->exit_code;
		}
	}
	for (size_t i = 0; i < e->nfields; i++) {
		Oneshield__Agent__V1__Event__FieldsEntry init = ONESHIELD__AGENT__V1__EVENT__FIELDS_ENTRY__INIT;
		ent[i] = init;
		ent[i].key = e->fields[2 * i];
		ent[i].value = e->fields[2 * i + 1];
		ptr[i] = &ent[i];
	}
	m.n_fields = e->nfields;
	m.fields = ptr;
	m.lost_from = e->lost_from;
	m.lost_to = e->lost_to;
	return pack(&m.base, out);
}

/* ---- status ---- */

static int64_t unix_ns(double s)
{
	return (int64_t)(s * 1e9);
}

int pb_status(const struct agent *a, struct buf *out)
{
	Oneshield__Agent__V1__Status st = ONESHIELD__AGENT__V1__STATUS__INIT;
	Oneshield__Agent__V1__OnepanelStatus op = ONESHIELD__AGENT__V1__ONEPANEL_STATUS__INIT;
	Oneshield__Agent__V1__EventsStatus ev = ONESHIELD__AGENT__V1__EVENTS_STATUS__INIT;
	Oneshield__Agent__V1__MetricsStatus ms = ONESHIELD__AGENT__V1__METRICS_STATUS__INIT;
	Oneshield__Agent__V1__ApiStatus api = ONESHIELD__AGENT__V1__API_STATUS__INIT;
	Oneshield__Agent__V1__EbpfStatus eb = ONESHIELD__AGENT__V1__EBPF_STATUS__INIT;
	Oneshield__Agent__V1__OneshieldStatus os = ONESHIELD__AGENT__V1__ONESHIELD_STATUS__INIT;
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	st.version = (char *)OS_VERSION;
	st.hostname = host;
	st.pid = getpid();
	st.started_unix_nano = unix_ns(a->started_unix);
	st.uptime_seconds = (double)(loop_now_ms() - a->started_mono_ms) / 1000.0;
	st.config_path = a->cfg->path ? a->cfg->path : (char *)"";

	struct onepanel_state s;
	onepanel_get_state(a->onepanel, &s);
	st.mode = (char *)s.mode;
	st.mode_reason = (char *)s.mode_reason;
	eb.process_events = (char *)s.process_events;
	eb.process_events_transport = (char *)s.process_events_transport;
	eb.scheduler_delay = (char *)s.scheduler_delay;
	eb.scheduler_delay_reason = (char *)s.scheduler_delay_reason;
	eb.syscall_investigation = a->probes ? (char *)probes_state(a->probes) : (char *)"";
	st.ebpf = &eb;
	op.workers = s.workers;
	op.configured = s.configured;
	op.state = (char *)(!s.configured ? "not_configured" : s.running ? "running" : "stopped");
	if (s.running) {
		op.pid = s.pid;
		op.exe = s.exe;
		op.started_unix_nano = unix_ns(s.start_time);
	}
	if (s.configured) {
		op.since_unix_nano = unix_ns(s.since);
		op.restarts = s.restarts;
		op.tracking = (char *)s.tracking;
		if (a->cfg->onepanel.binary)
			op.binary = a->cfg->onepanel.binary;
		if (a->cfg->onepanel.config_file)
			op.config_file = a->cfg->onepanel.config_file;
		op.version = (char *)opversion_get(a->opversion);
	}
	if (s.has_last_exit) {
		if (s.last_exit_signal) {
			op.last_exit_case = ONESHIELD__AGENT__V1__ONEPANEL_STATUS__LAST_EXIT_LAST_EXIT_SIGNAL;
			op.last_exit_signal = s.last_exit_signal;
		} else {
			op.last_exit_case = ONESHIELD__AGENT__V1__ONEPANEL_STATUS__LAST_EXIT_LAST_EXIT_CODE;
			op.last_exit_code = s.last_exit_code;
		}
	}
	st.onepanel = &op;

	ev.first_seq = journal_first_seq(a->journal);
	ev.last_seq = journal_last_seq(a->journal);
	ev.capacity = journal_capacity(a->journal);
	ev.lost_by_subscribers = a->events_lost_subscribers;
	st.events = &ev;

	ms.interval_seconds = (double)a->cfg->metrics.interval_ms / 1000.0;
	ms.collections = a->collections;
	ms.last_collect_seconds = a->last_collect_seconds;
	ms.series = a->snapshot ? metrics_sample_count(a->snapshot) : 0;
	st.metrics = &ms;

	api.rest_listen = a->cfg->api.rest_listen ? a->cfg->api.rest_listen : (char *)"off";
	api.grpc_listen = a->cfg->api.grpc_listen ? a->cfg->api.grpc_listen : (char *)"off";
	api.sse_clients = (uint32_t)rest_sse_clients(a->rest);
	api.grpc_streams = (uint32_t)grpc_api_streams(a->grpc);
	api.grpc_subscribers = (uint32_t)grpc_api_subscribers(a->grpc);
	st.api = &api;
	mgmt_plugin_status_pb(a->mgmt, &os);
	st.oneshield = &os;
	return pack(&st.base, out);
}

/* ---- metrics ---- */

static Oneshield__Agent__V1__MetricType mtype(enum metric_type t)
{
	switch (t) {
	case MT_COUNTER: return ONESHIELD__AGENT__V1__METRIC_TYPE__METRIC_TYPE_COUNTER;
	case MT_GAUGE: return ONESHIELD__AGENT__V1__METRIC_TYPE__METRIC_TYPE_GAUGE;
	case MT_HISTOGRAM: return ONESHIELD__AGENT__V1__METRIC_TYPE__METRIC_TYPE_HISTOGRAM;
	}
	return ONESHIELD__AGENT__V1__METRIC_TYPE__METRIC_TYPE_UNSPECIFIED;
}

static Oneshield__Agent__V1__Sample *sample_pb(struct arena *ar, const struct metric_sample_view *v, bool hist)
{
	Oneshield__Agent__V1__Sample *s = NEW(ar, Oneshield__Agent__V1__Sample, ONESHIELD__AGENT__V1__SAMPLE__INIT);
	if (!s)
		return NULL;
	s->n_labels = v->npairs;
	s->labels = arena_alloc(ar, (v->npairs ? v->npairs : 1) * sizeof(*s->labels));
	if (!s->labels)
		return NULL;
	for (size_t k = 0; k < v->npairs; k++) {
		Oneshield__Agent__V1__Label *l = NEW(ar, Oneshield__Agent__V1__Label, ONESHIELD__AGENT__V1__LABEL__INIT);
		if (!l)
			return NULL;
		l->name = (char *)v->labels[2 * k];
		l->value = (char *)v->labels[2 * k + 1];
		s->labels[k] = l;
	}
	if (!hist) {
		s->value = v->value;
		return s;
	}
	Oneshield__Agent__V1__Histogram *h =
		NEW(ar, Oneshield__Agent__V1__Histogram, ONESHIELD__AGENT__V1__HISTOGRAM__INIT);
	if (!h)
		return NULL;
	h->sum = v->sum;
	h->count = v->count;
	h->n_buckets = v->nbuckets;
	h->buckets = arena_alloc(ar, (v->nbuckets ? v->nbuckets : 1) * sizeof(*h->buckets));
	if (!h->buckets)
		return NULL;
	for (size_t k = 0; k < v->nbuckets; k++) {
		Oneshield__Agent__V1__Bucket *b = NEW(ar, Oneshield__Agent__V1__Bucket, ONESHIELD__AGENT__V1__BUCKET__INIT);
		if (!b)
			return NULL;
		b->upper_bound = v->upper[k];
		b->cumulative_count = v->cumulative[k];
		h->buckets[k] = b;
	}
	s->histogram = h;
	return s;
}

int pb_metrics(const struct metrics *m, const char *prefix, int64_t time_unix_nano, struct buf *out)
{
	struct arena ar = { 0 };
	Oneshield__Agent__V1__MetricsSnapshot snap = ONESHIELD__AGENT__V1__METRICS_SNAPSHOT__INIT;
	size_t nf = metrics_family_count(m), plen = prefix ? strlen(prefix) : 0;
	int err = -ENOMEM;
	snap.time_unix_nano = time_unix_nano;
	snap.families = arena_alloc(&ar, (nf ? nf : 1) * sizeof(*snap.families));
	if (!snap.families)
		goto out;
	for (size_t i = 0; i < nf; i++) {
		struct metric_family_view fv;
		metrics_family_at(m, i, &fv);
		if (!fv.nsamples || (plen && strncmp(fv.name, prefix, plen) != 0))
			continue;
		Oneshield__Agent__V1__MetricFamily *f =
			NEW(&ar, Oneshield__Agent__V1__MetricFamily, ONESHIELD__AGENT__V1__METRIC_FAMILY__INIT);
		if (!f)
			goto out;
		f->name = (char *)fv.name;
		f->help = (char *)fv.help;
		f->type = mtype(fv.type);
		f->samples = arena_alloc(&ar, fv.nsamples * sizeof(*f->samples));
		if (!f->samples)
			goto out;
		for (size_t j = 0; j < fv.nsamples; j++) {
			struct metric_sample_view sv;
			metrics_sample_at(m, i, j, &sv);
			if (!(f->samples[j] = sample_pb(&ar, &sv, fv.type == MT_HISTOGRAM)))
				goto out;
		}
		f->n_samples = fv.nsamples;
		snap.families[snap.n_families++] = f;
	}
	err = pack(&snap.base, out);
out:
	arena_free(&ar);
	return err;
}

/* ---- configuration management ---- */

static char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : (char *)"";
}

static double jnum(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static bool jbool(const cJSON *o, const char *k)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

int pb_config_listing(const cJSON *j, struct buf *out)
{
	struct arena ar = { 0 };
	Oneshield__Agent__V1__ConfigListing l = ONESHIELD__AGENT__V1__CONFIG_LISTING__INIT;
	const cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
	size_t n = (size_t)cJSON_GetArraySize(files);
	int err = -ENOMEM;
	l.files = arena_alloc(&ar, (n ? n : 1) * sizeof(*l.files));
	if (!l.files)
		goto out;
	const cJSON *f;
	cJSON_ArrayForEach(f, files)
	{
		Oneshield__Agent__V1__ConfigFileInfo *fi =
			NEW(&ar, Oneshield__Agent__V1__ConfigFileInfo, ONESHIELD__AGENT__V1__CONFIG_FILE_INFO__INIT);
		if (!fi)
			goto out;
		fi->path = jstr(f, "path");
		fi->size = (uint64_t)jnum(f, "size");
		fi->mode = (uint32_t)strtoul(jstr(f, "mode"), NULL, 8);
		const cJSON *mt = cJSON_GetObjectItemCaseSensitive(f, "mtime_unix_nano");
		/* a raw number in the JSON: parse the printed digits, not a double */
		char *txt = mt ? cJSON_PrintUnformatted(mt) : NULL;
		fi->mtime_unix_nano = txt ? strtoll(txt, NULL, 10) : 0;
		cJSON_free(txt);
		fi->sha256 = jstr(f, "sha256");
		fi->too_large = jbool(f, "too_large");
		l.files[l.n_files++] = fi;
	}
	l.truncated = jbool(j, "truncated");
	err = pack(&l.base, out);
out:
	arena_free(&ar);
	return err;
}

int pb_config_file(const cJSON *j, struct buf *out)
{
	Oneshield__Agent__V1__ConfigFile f = ONESHIELD__AGENT__V1__CONFIG_FILE__INIT;
	uint8_t *data = NULL;
	size_t len = 0;
	f.path = jstr(j, "path");
	f.size = (uint64_t)jnum(j, "size");
	f.sha256 = jstr(j, "sha256");
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "content_base64");
	if (cJSON_IsString(c)) {
		f.content.data = (uint8_t *)c->valuestring;
		f.content.len = strlen(c->valuestring);
	} else if (cJSON_IsString(b)) {
		if (cfgfs_base64_decode(b->valuestring, strlen(b->valuestring), &data, &len))
			return -EINVAL;
		f.content.data = data;
		f.content.len = len;
	}
	int err = pack(&f.base, out);
	free(data);
	return err;
}

int pb_apply_result(const cJSON *j, struct buf *out)
{
	struct arena ar = { 0 };
	Oneshield__Agent__V1__ApplyConfigResult r = ONESHIELD__AGENT__V1__APPLY_CONFIG_RESULT__INIT;
	Oneshield__Agent__V1__ValidatorResult v = ONESHIELD__AGENT__V1__VALIDATOR_RESULT__INIT;
	int err = -ENOMEM;
	r.correlation_id = jstr(j, "correlation_id");
	r.status = jstr(j, "status");
	r.message = jstr(j, "message");
	r.reloaded = jbool(j, "reloaded");
	r.dry_run = jbool(j, "dry_run");
	r.duration_ms = jnum(j, "duration_ms");
	const cJSON *vj = cJSON_GetObjectItemCaseSensitive(j, "validator");
	if (cJSON_IsObject(vj)) {
		if (cJSON_GetObjectItemCaseSensitive(vj, "exit_code")) {
			v.end_case = ONESHIELD__AGENT__V1__VALIDATOR_RESULT__END_EXIT_CODE;
			v.exit_code = (int32_t)jnum(vj, "exit_code");
		} else if (cJSON_GetObjectItemCaseSensitive(vj, "signal")) {
			v.end_case = ONESHIELD__AGENT__V1__VALIDATOR_RESULT__END_SIGNAL;
			v.signal = (int32_t)jnum(vj, "signal");
		}
		v.timed_out = jbool(vj, "timed_out");
		v.output = jstr(vj, "output");
		v.error = jstr(vj, "error");
		r.validator = &v;
	}
	const cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
	size_t n = (size_t)cJSON_GetArraySize(files);
	r.files = arena_alloc(&ar, (n ? n : 1) * sizeof(*r.files));
	const cJSON *evs = cJSON_GetObjectItemCaseSensitive(j, "events");
	size_t ne = (size_t)cJSON_GetArraySize(evs);
	r.events = arena_alloc(&ar, (ne ? ne : 1) * sizeof(*r.events));
	if (!r.files || !r.events)
		goto out;
	const cJSON *f;
	cJSON_ArrayForEach(f, files)
	{
		Oneshield__Agent__V1__FileResult *fr =
			NEW(&ar, Oneshield__Agent__V1__FileResult, ONESHIELD__AGENT__V1__FILE_RESULT__INIT);
		if (!fr)
			goto out;
		fr->path = jstr(f, "path");
		fr->action = jstr(f, "action");
		fr->existed = jbool(f, "existed");
		fr->sha256_before = jstr(f, "sha256_before");
		fr->sha256_after = jstr(f, "sha256_after");
		r.files[r.n_files++] = fr;
	}
	cJSON_ArrayForEach(f, evs)
		r.events[r.n_events++] = (uint64_t)f->valuedouble;
	err = pack(&r.base, out);
out:
	arena_free(&ar);
	return err;
}

/* ---- syscall investigations ---- */

/* "2024-05-01T12:34:56.789Z" (probes.c's add_time) to unix nanoseconds; 0
 * when absent or not in that form. */
static int64_t jtime_ns(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	struct tm tm;
	int ms = 0, used = 0;
	if (!cJSON_IsString(v))
		return 0;
	memset(&tm, 0, sizeof(tm));
	if (sscanf(v->valuestring, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &used) != 7 ||
	    used == 0 || v->valuestring[used] != '\0')
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return 0;
	return (int64_t)t * 1000000000LL + (int64_t)ms * 1000000LL;
}

static uint64_t jcount(const cJSON *o, const char *k)
{
	double d = jnum(o, k);
	return d > 0 ? (uint64_t)d : 0;
}

static Oneshield__Agent__V1__SyscallStat *syscall_pb(struct arena *ar, const cJSON *s)
{
	Oneshield__Agent__V1__SyscallStat *m =
		NEW(ar, Oneshield__Agent__V1__SyscallStat, ONESHIELD__AGENT__V1__SYSCALL_STAT__INIT);
	if (!m)
		return NULL;
	m->name = jstr(s, "name");
	m->nr = (int32_t)jnum(s, "nr");
	m->count = jcount(s, "count");
	m->errors = jcount(s, "errors");
	m->p50_us = jnum(s, "p50_us");
	m->p90_us = jnum(s, "p90_us");
	m->p99_us = jnum(s, "p99_us");
	m->sum_us = jnum(s, "sum_us");
	const cJSON *bs = cJSON_GetObjectItemCaseSensitive(s, "buckets");
	size_t n = (size_t)cJSON_GetArraySize(bs);
	m->buckets = arena_alloc(ar, (n ? n : 1) * sizeof(*m->buckets));
	if (!m->buckets)
		return NULL;
	const cJSON *b;
	cJSON_ArrayForEach(b, bs)
	{
		Oneshield__Agent__V1__SyscallBucket *pb =
			NEW(ar, Oneshield__Agent__V1__SyscallBucket, ONESHIELD__AGENT__V1__SYSCALL_BUCKET__INIT);
		if (!pb)
			return NULL;
		const cJSON *le = cJSON_GetObjectItemCaseSensitive(b, "le_us");
		pb->le_us = cJSON_IsNumber(le) ? le->valuedouble : HUGE_VAL; /* "+Inf" */
		pb->count = jcount(b, "count");
		m->buckets[m->n_buckets++] = pb;
	}
	return m;
}

int pb_syscall_investigation(const cJSON *j, struct buf *out)
{
	struct arena ar = { 0 };
	Oneshield__Agent__V1__SyscallInvestigation m = ONESHIELD__AGENT__V1__SYSCALL_INVESTIGATION__INIT;
	int err = -ENOMEM;
	m.state = jstr(j, "state");
	m.reason = jstr(j, "reason");
	m.mode = jstr(j, "mode");
	m.attached = jbool(j, "attached");
	m.max_duration_s = jnum(j, "max_duration_s");
	m.requested_s = jnum(j, "requested_s");
	m.started_unix_nano = jtime_ns(j, "started_at");
	m.ends_unix_nano = jtime_ns(j, "ends_at");
	m.ended_unix_nano = jtime_ns(j, "ended_at");
	m.ran_s = jnum(j, "ran_s");
	m.targets = (uint32_t)jcount(j, "targets");
	m.drops = jcount(j, "drops");
	const cJSON *dr = cJSON_GetObjectItemCaseSensitive(j, "drops_by_reason");
	m.drops_no_start = jcount(dr, "no_start");
	m.drops_nr_out_of_range = jcount(dr, "nr_out_of_range");
	const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "syscalls");
	size_t n = (size_t)cJSON_GetArraySize(sc);
	m.syscalls = arena_alloc(&ar, (n ? n : 1) * sizeof(*m.syscalls));
	if (!m.syscalls)
		goto out;
	const cJSON *s;
	cJSON_ArrayForEach(s, sc)
	{
		if (!(m.syscalls[m.n_syscalls] = syscall_pb(&ar, s)))
			goto out;
		m.n_syscalls++;
	}
	err = pack(&m.base, out);
out:
	arena_free(&ar);
	return err;
}

/* ---- requests and status codes shared by the Agent service and the One
 * Shield client (mgmt.c) ---- */

int pb_apply_request(const Oneshield__Agent__V1__ApplyConfigRequest *req, const char *peer,
		     struct cfgapply_req **out)
{
	struct cfgapply_req *ar = calloc(1, sizeof(*ar));
	bool ok = ar != NULL;
	*out = NULL;
	if (ok && req->n_files)
		ok = (ar->files = calloc(req->n_files, sizeof(*ar->files))) != NULL;
	for (size_t i = 0; ok && i < req->n_files; i++) {
		const Oneshield__Agent__V1__FileChange *fc = req->files[i];
		struct cfgapply_file *f = &ar->files[i];
		ar->nfiles = i + 1;
		ok = (f->path = strdup(fc->path)) != NULL;
		if (fc->change_case == ONESHIELD__AGENT__V1__FILE_CHANGE__CHANGE_DELETE && fc->delete_) {
			f->del = true;
		} else if (ok) {
			f->len = fc->content.len;
			ok = (f->data = malloc(f->len ? f->len : 1)) != NULL;
			if (ok && f->len)
				memcpy(f->data, fc->content.data, f->len);
		}
	}
	if (!ok) {
		cfgapply_req_free(ar);
		return -ENOMEM;
	}
	ar->dry_run = req->dry_run;
	ar->reload = !req->no_reload;
	snprintf(ar->peer, sizeof(ar->peer), "%s", peer);
	*out = ar;
	return 0;
}

int pb_code_from_http(int http)
{
	switch (http) {
	case 200: return 0;	/* OK */
	case 400: return 3;	/* INVALID_ARGUMENT */
	case 403: return 7;	/* PERMISSION_DENIED */
	case 404: return 5;	/* NOT_FOUND */
	case 409: return 10;	/* ABORTED */
	case 413: return 8;	/* RESOURCE_EXHAUSTED */
	case 429: return 8;	/* RESOURCE_EXHAUSTED (rate limited) */
	case 422: return 9;	/* FAILED_PRECONDITION */
	case 503: return 14;	/* UNAVAILABLE */
	case 507: return 8;	/* RESOURCE_EXHAUSTED */
	default: return 13;	/* INTERNAL */
	}
}

int pb_code_from_probes(int rc)
{
	switch (rc) {
	case 0: return 0;
	case -EINVAL: return 3;	/* INVALID_ARGUMENT */
	case -EBUSY: return 10;	/* ABORTED */
	case -ESRCH:
	case -EOPNOTSUPP: return 9;	/* FAILED_PRECONDITION */
	default: return 14;	/* UNAVAILABLE */
	}
}

int pb_read_message(struct grpc_byte_buffer *bb, uint8_t **data, size_t *len)
{
	grpc_byte_buffer_reader r;

	if (!grpc_byte_buffer_reader_init(&r, bb))
		return -EINVAL;
	grpc_slice s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	*len = GRPC_SLICE_LENGTH(s);
	*data = malloc(*len ? *len : 1);
	if (*data)
		memcpy(*data, GRPC_SLICE_START_PTR(s), *len);
	grpc_slice_unref(s);
	return *data ? 0 : -ENOMEM;
}
