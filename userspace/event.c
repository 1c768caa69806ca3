#include "event.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const type_names[EV__COUNT] = {
	[EV_UNSPECIFIED] = "EVENT_TYPE_UNSPECIFIED",
	[EV_AGENT_START] = "AGENT_START_MESSAGE",
	[EV_AGENT_STOP] = "AGENT_STOP_MESSAGE",
	[EV_ONEPANEL_FOUND] = "ONEPANEL_FOUND_MESSAGE",
	[EV_ONEPANEL_STOP] = "ONEPANEL_STOP_MESSAGE",
	[EV_ONEPANEL_RELOAD_SUCCESS] = "ONEPANEL_RELOAD_SUCCESS_MESSAGE",
	[EV_ONEPANEL_RELOAD_FAILED] = "ONEPANEL_RELOAD_FAILED_MESSAGE",
	[EV_CONFIG_APPLY_SUCCESS] = "CONFIG_APPLY_SUCCESS_MESSAGE",
	[EV_CONFIG_APPLY_FAILURE] = "CONFIG_APPLY_FAILURE_MESSAGE",
	[EV_EVENTS_LOST] = "EVENTS_LOST_MESSAGE",
	[EV_AGENT_CONFIG_RELOADED] = "AGENT_CONFIG_RELOADED_MESSAGE",
	[EV_AGENT_CONFIG_RELOAD_FAILED] = "AGENT_CONFIG_RELOAD_FAILED_MESSAGE",
	[EV_TEST] = "TEST_EVENT_MESSAGE",
	[EV_CONFIG_ROLLBACK_SUCCESS] = "CONFIG_ROLLBACK_SUCCESS_MESSAGE",
	[EV_CONFIG_ROLLBACK_FAILURE] = "CONFIG_ROLLBACK_FAILURE_MESSAGE",
	[EV_ONEPANEL_WORKER_START] = "ONEPANEL_WORKER_START_MESSAGE",
	[EV_ONEPANEL_WORKER_STOP] = "ONEPANEL_WORKER_STOP_MESSAGE",
	[EV_ONEPANEL_CRITICAL_ERROR] = "ONEPANEL_CRITICAL_ERROR_MESSAGE",
	[EV_ONEPANEL_PANIC] = "ONEPANEL_PANIC_MESSAGE",
};

const char *event_type_name(enum event_type t)
{
	if ((int)t < 0 || t >= EV__COUNT)
		return NULL;
	return type_names[t];
}

int event_type_parse(const char *name, enum event_type *out)
{
	for (int i = 1; i < EV__COUNT; i++) {
		if (strcmp(name, type_names[i]) == 0) {
			*out = (enum event_type)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *event_level_name(enum event_level l)
{
	static const char *const n[] = { "debug", "info", "notice", "warning", "error", "critical" };
	if ((int)l < 0 || (size_t)l >= sizeof(n) / sizeof(n[0]))
		return "info";
	return n[l];
}

static char *vfmt(const char *fmt, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		return NULL;
	return s;
}

struct event *event_new(enum event_type type, enum event_level level, const char *fmt, ...)
{
	struct event *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	e->time_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	e->type = type;
	e->level = level;
	va_list ap;
	va_start(ap, fmt);
	e->message = vfmt(fmt, ap);
	va_end(ap);
	if (!e->message) {
		free(e);
		return NULL;
	}
	return e;
}

int event_set_field(struct event *e, const char *key, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *v = vfmt(fmt, ap);
	va_end(ap);
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < e->nfields; i++) {
		if (strcmp(e->fields[2 * i], key) == 0) {
			free(e->fields[2 * i + 1]);
			e->fields[2 * i + 1] = v;
			return 0;
		}
	}
	if (e->nfields == EVENT_MAX_FIELDS) {
		free(v);
		return -E2BIG;
	}
	char *k = strdup(key);
	if (!k) {
		free(v);
		return -ENOMEM;
	}
	e->fields[2 * e->nfields] = k;
	e->fields[2 * e->nfields + 1] = v;
	e->nfields++;
	return 0;
}

int event_set_correlation(struct event *e, const char *id)
{
	char *c = id ? strdup(id) : NULL;
	if (id && !c)
		return -ENOMEM;
	free(e->correlation_id);
	e->correlation_id = c;
	return 0;
}

void event_free(struct event *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < 2 * e->nfields; i++)
		free(e->fields[i]);
	free(e->message);
	free(e->correlation_id);
	free(e);
}

struct event *event_lost_marker(uint64_t from, uint64_t to)
{
	uint64_t n = to - from + 1;
	struct event *e = event_new(EV_EVENTS_LOST, EL_WARNING, "%llu events lost (seq %llu..%llu)",
				    (unsigned long long)n, (unsigned long long)from, (unsigned long long)to);
	if (!e)
		return NULL;
	e->lost_from = from;
	e->lost_to = to;
	event_set_field(e, "count", "%llu", (unsigned long long)n);
	return e;
}

cJSON *event_to_json(const struct event *e)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	char ts[64];
	time_t sec = (time_t)(e->time_ns / 1000000000LL);
	struct tm tm;
	gmtime_r(&sec, &tm);
	size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%06lldZ", (long long)(e->time_ns % 1000000000LL) / 1000);

	cJSON_AddNumberToObject(o, "seq", (double)e->seq);
	cJSON_AddStringToObject(o, "type", event_type_name(e->type) ? event_type_name(e->type) : "UNKNOWN");
	cJSON_AddStringToObject(o, "time", ts);
	/* exact: a double cannot hold nanoseconds since 1970 */
	char ns[32];
	snprintf(ns, sizeof(ns), "%lld", (long long)e->time_ns);
	cJSON_AddRawToObject(o, "time_unix_nano", ns);
	cJSON_AddStringToObject(o, "level", event_level_name(e->level));
	cJSON_AddStringToObject(o, "message", e->message);
	if (e->pid)
		cJSON_AddNumberToObject(o, "pid", e->pid);
	if (e->has_exit) {
		if (e->signal)
			cJSON_AddNumberToObject(o, "signal", e->signal);
		else
			cJSON_AddNumberToObject(o, "exit_code", e->exit_code);
	}
	if (e->correlation_id)
		cJSON_AddStringToObject(o, "correlation_id", e->correlation_id);
	cJSON *f = cJSON_AddObjectToObject(o, "fields");
	for (size_t i = 0; f && i < e->nfields; i++)
		cJSON_AddStringToObject(f, e->fields[2 * i], e->fields[2 * i + 1]);
	if (e->type == EV_EVENTS_LOST) {
		cJSON_AddNumberToObject(o, "lost_from", (double)e->lost_from);
		cJSON_AddNumberToObject(o, "lost_to", (double)e->lost_to);
	}
	return o;
}
