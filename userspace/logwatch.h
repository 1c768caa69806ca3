/* onepanel's access and error logs, followed and turned into metrics and
 * events.
 *
 * One tailer (logtail.h: inotify, rotation-safe) per configured log. Access
 * log lines go through the format compiled once from the config (logfmt.h)
 * into per-log statistics (logstats.h); error log lines into the error-log
 * record assembler (errlog.h), whose critical-error and panic records become
 * ONEPANEL_CRITICAL_ERROR_MESSAGE / ONEPANEL_PANIC_MESSAGE events (rate
 * limited there; what was suppressed is counted and said in the next event).
 * A 1 s timer ends multi-line records no further line arrives for.
 *
 * Errors opening a log (missing file, permission) are not fatal: the tailer
 * waits for the file and the state shows in /v1/status per log.
 *
 * Owned by the core loop. */
#ifndef OS_LOGWATCH_H
#define OS_LOGWATCH_H

#include <stddef.h>

struct cJSON;
struct journal;
struct loop;
struct metrics;
struct onepanel_config;

struct logwatch;

/* Start following cfg's access_logs and error_logs (cfg is copied). NULL
 * only on ENOMEM; a log that cannot be set up is logged and shown in the
 * status. */
struct logwatch *logwatch_new(struct loop *l, struct journal *j, const struct onepanel_config *cfg);
void logwatch_free(struct logwatch *w); /* accepts NULL */
/* Agent config reload: logs whose spec is unchanged keep their tailer,
 * position and counters; others are closed or started. */
int logwatch_reconfigure(struct logwatch *w, const struct onepanel_config *cfg);
/* Read what the files hold now (shutdown, tests). */
void logwatch_poll(struct logwatch *w);
int logwatch_collect(struct logwatch *w, struct metrics *m);
/* [{"path","kind":"access"|"error","format"?,"state","open","errno"?,"error"?,
 *   "lines","bytes","truncated","rotations","truncations", ...stats}] */
struct cJSON *logwatch_status_json(struct logwatch *w);

#endif
