/* Config apply: validate, write atomically, reload, verify, roll back.
 *
 * One apply at a time, driven by the core loop as a state machine:
 *
 *   check paths and limits (nothing touched yet: 400/403/413/409)
 *   -> back up every file -> write each atomically (cfgfs)
 *   -> run validate_command (spawn; no shell, timeout, bounded output)
 *        fail: restore -> CONFIG_APPLY_FAILURE                    "invalid"
 *        dry run: restore                                          "dry_run_ok"
 *        onepanel not running / reload false: keep, no signal      "applied"
 *   -> send reload_signal, verify within reload_timeout: the master alive,
 *      no emerg/alert/crit/panic line added to the error logs, and where
 *      it has workers, a new generation forked (else a 1 s settle)
 *        ok: ONEPANEL_RELOAD_SUCCESS, CONFIG_APPLY_SUCCESS          "applied"
 *        fail: ONEPANEL_RELOAD_FAILED, restore, signal, verify again
 *              -> CONFIG_ROLLBACK_SUCCESS | _FAILURE, CONFIG_APPLY_FAILURE
 *                                  "reload_failed_rolled_back" | "rollback_failed"
 *
 * Every event carries the apply's correlation id; the result lists their
 * sequence numbers. Requests come from REST (and gRPC) already parsed into
 * struct cfgapply_req. */
#ifndef OS_CFGAPPLY_H
#define OS_CFGAPPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;
struct cJSON;
struct cfgapply;

struct cfgapply_file {
	char *path;         /* as requested */
	uint8_t *data;      /* new content (NULL for delete) */
	size_t len;
	bool del;
};

struct cfgapply_req {
	struct cfgapply_file *files;
	size_t nfiles;
	bool dry_run;
	bool reload;
	char peer[320];     /* who asked, for the audit log (with the client certificate subject under mTLS) */
};

void cfgapply_req_free(struct cfgapply_req *r);    /* accepts NULL */

struct cfgfs_limits;
/* The apply limits of the agent's configuration. */
void cfgapply_limits(const struct agent *a, struct cfgfs_limits *lim);
/* Limits (count, sizes) and repeated paths: 0, -EINVAL (400) or -EFBIG (413). */
int cfgapply_req_check(const struct cfgapply_req *r, const struct cfgfs_limits *lim, char *err, size_t errlen);

/* JSON body of POST /v1/config/apply -> request. 0, or -EINVAL with a
 * message (malformed: 400) / -EFBIG (limits: 413). */
int cfgapply_parse_json(const char *body, size_t len, const struct cfgfs_limits *lim, struct cfgapply_req **out,
			char *err, size_t errlen);

/* The outcome: a JSON object (see README) and its HTTP status. */
typedef void (*cfgapply_done_fn)(void *arg, struct cJSON *result, int http_status);

struct cfgapply *cfgapply_new(struct agent *a);
void cfgapply_free(struct cfgapply *ca);           /* cancels a running apply (no callback) */
/* Takes req. Either finishes at once (returns 1, *result and *http_status
 * set, the callback is not called) or runs on (returns 0; fn is called
 * once from the loop). */
int cfgapply_start(struct cfgapply *ca, struct cfgapply_req *req, cfgapply_done_fn fn, void *arg,
		   struct cJSON **result, int *http_status);
/* Abort a running apply (agent shutdown): its files are restored and the
 * callback gets 503. */
void cfgapply_abort(struct cfgapply *ca);
bool cfgapply_busy(const struct cfgapply *ca);

/* GET /v1/config and /v1/config/file?path= (status code in *http_status). */
struct cJSON *cfgapply_list_json(struct agent *a, int *http_status);
struct cJSON *cfgapply_file_json(struct agent *a, const char *path, int *http_status);

#endif
