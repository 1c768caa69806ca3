/* onepanel's own version, for the fleet: "which hosts still run 1.22.0?".
 *
 * From onepanel.version_command (e.g. "/usr/sbin/nginx -v"), run like the
 * validator (spawn.h: no shell, a clean environment, its own process group,
 * limits, a timeout) each time onepanel is found -- a restart may be an
 * upgrade -- and when a reload of the agent's config changes the command
 * while onepanel runs. Off when the key is absent: onepanel's flags are
 * unknown to us, and running its binary with a guessed flag could start a
 * second server.
 *
 * The version is the first non-blank line of the command's output (stdout
 * and stderr), after "version:" when that appears ("nginx version:
 * nginx/1.22.1" gives "nginx/1.22.1"), blanks trimmed, bytes outside
 * printable ASCII replaced by '?', at most OPVERSION_MAX - 1 bytes. A
 * command that fails (non-zero exit, timeout, no output, exec error) leaves
 * no version and says why in the status; the previous version is forgotten
 * at each run, so a stale one is never reported for a new binary.
 *
 * Shown as /v1/status onepanel.version (and version_error), gRPC
 * OnepanelStatus.version, One Shield's Hello.onepanel_version and the metric
 * onepanel_info{version="..."} 1. Owned by the core loop. */
#ifndef OS_OPVERSION_H
#define OS_OPVERSION_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;
struct journal;
struct loop;
struct metrics;
struct onepanel_config;

#define OPVERSION_MAX 128
#define OPVERSION_TIMEOUT_MS 10000

struct opversion;

/* Listens to j for ONEPANEL_FOUND_MESSAGE. NULL on no memory. */
struct opversion *opversion_new(struct loop *l, struct journal *j);
void opversion_free(struct opversion *v); /* accepts NULL; kills a running command */
/* Take cfg's version_command (copied). When it differs from the one held
 * and onepanel is running, run it now. 0 or -ENOMEM. */
int opversion_configure(struct opversion *v, const struct onepanel_config *cfg, bool running);
/* The version, "" when unknown. */
const char *opversion_get(const struct opversion *v);
/* "version" / "version_error" / "version_state" into a status object. */
void opversion_status_json(const struct opversion *v, struct cJSON *op);
/* onepanel_info{version} 1, when a version is known. */
int opversion_collect(const struct opversion *v, struct metrics *m);

/* The rule above, on a command's output: 0 with ver set, or -ENOENT when
 * there is no non-blank line. */
int opversion_parse(const char *out, size_t len, char *ver, size_t verlen);

#endif
