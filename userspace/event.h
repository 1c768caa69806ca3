/* Agent events: types, levels and the event record.
 *
 * Type names are API (DESIGN.md: never renamed). The numeric values are the
 * ones of the EventType enum in proto/ so the gRPC side maps them 1:1; new
 * types are appended, never renumbered.
 *
 * An event owns its strings. Structured fields that most consumers filter on
 * (pid, exit code, signal, correlation id) are typed members; anything else
 * goes into the small key/value list. */
#ifndef OS_EVENT_H
#define OS_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cJSON;

enum event_type {
	EV_UNSPECIFIED = 0,
	EV_AGENT_START = 1,
	EV_AGENT_STOP = 2,
	EV_ONEPANEL_FOUND = 3,
	EV_ONEPANEL_STOP = 4,
	EV_ONEPANEL_RELOAD_SUCCESS = 5,
	EV_ONEPANEL_RELOAD_FAILED = 6,
	EV_CONFIG_APPLY_SUCCESS = 7,
	EV_CONFIG_APPLY_FAILURE = 8,
	EV_EVENTS_LOST = 9,
	EV_AGENT_CONFIG_RELOADED = 10,
	EV_AGENT_CONFIG_RELOAD_FAILED = 11,
	EV_TEST = 12,            /* only from the test generator (ONESHIELD_TEST_EVENTS=1) */
	EV_CONFIG_ROLLBACK_SUCCESS = 13,
	EV_CONFIG_ROLLBACK_FAILURE = 14,
	EV_ONEPANEL_WORKER_START = 15, /* the master forked a child process */
	EV_ONEPANEL_WORKER_STOP = 16,  /* a child of the master exited */
	EV_ONEPANEL_CRITICAL_ERROR = 17, /* crit/alert/emerg line in an error log */
	EV_ONEPANEL_PANIC = 18,        /* a panic record in an error log */
	EV__COUNT
};

enum event_level { EL_DEBUG = 0, EL_INFO, EL_NOTICE, EL_WARNING, EL_ERROR, EL_CRITICAL };

#define EVENT_MAX_FIELDS 8

struct event {
	uint64_t seq;            /* set by journal_append */
	int64_t time_ns;         /* unix nanoseconds */
	enum event_type type;
	enum event_level level;
	char *message;
	pid_t pid;               /* 0 = none */
	bool has_exit;           /* exit_code / signal meaningful */
	int exit_code;           /* exit status when exited normally */
	int signal;              /* terminating signal, 0 if exited normally */
	char *correlation_id;    /* NULL = none */
	size_t nfields;
	char *fields[2 * EVENT_MAX_FIELDS];
	/* for EV_EVENTS_LOST markers: the range of seqs they stand for */
	uint64_t lost_from, lost_to;
};

const char *event_type_name(enum event_type t);        /* "AGENT_START_MESSAGE"; NULL if out of range */
int event_type_parse(const char *name, enum event_type *out); /* 0 or -EINVAL; accepts exact names */
const char *event_level_name(enum event_level l);     /* "info" ... */

/* Allocate an event stamped with the current time; message is printf-style. */
struct event *event_new(enum event_type type, enum event_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int event_set_field(struct event *e, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int event_set_correlation(struct event *e, const char *id);
void event_free(struct event *e);                     /* accepts NULL */
struct event *event_lost_marker(uint64_t from, uint64_t to); /* EVENTS_LOST_MESSAGE for seqs [from, to] */

/* {"seq","type","time","time_unix_nano","level","message", "pid"?, "exit_code"?, "signal"?,
 *  "correlation_id"?, "fields":{}, "lost_from"?, "lost_to"?} */
struct cJSON *event_to_json(const struct event *e);

#endif
