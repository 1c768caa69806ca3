/* onepanel's version from onepanel.version_command; see opversion.h. */
#include "opversion.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cJSON.h>

#include "config.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "spawn.h"

#define MAX_OUTPUT 4096

enum vstate { VS_OFF, VS_UNKNOWN, VS_RUNNING, VS_KNOWN, VS_FAILED };
static const char *const vstate_names[] = { "off", "unknown", "running", "known", "failed" };

struct opversion {
	struct loop *loop;
	struct journal *journal;
	char *command;          /* onepanel.version_command, NULL when off */
	char *config_file;      /* for {config} in the command */
	struct spawn *sp;       /* the command, while it runs */
	struct loop_timer *kick; /* runs it from the loop, not from inside a journal append */
	enum vstate state;
	char version[OPVERSION_MAX];
	char error[256];
	char last_logged[256];  /* one log line per distinct failure */
};

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

int opversion_parse(const char *out, size_t len, char *ver, size_t verlen)
{
	const char *p = out, *end = out + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *s = p, *e = nl ? nl : end;

		p = nl ? nl + 1 : end;
		/* after "version:" when the line says so */
		for (const char *q = s; q + 8 <= e; q++) {
			if (!strncmp(q, "version:", 8)) {
				s = q + 8;
				break;
			}
		}
		while (s < e && blank(*s))
			s++;
		while (e > s && blank(e[-1]))
			e--;
		if (s == e)
			continue;
		size_t n = (size_t)(e - s), o = 0;
		if (verlen == 0)
			return 0;
		if (n > verlen - 1)
			n = verlen - 1;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)s[i];
			ver[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
		}
		ver[o] = '\0';
		return 0;
	}
	return -ENOENT;
}

static void fail(struct opversion *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct opversion *v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v->error, sizeof(v->error), fmt, ap);
	va_end(ap);
	v->state = VS_FAILED;
	v->version[0] = '\0';
	if (strcmp(v->last_logged, v->error)) {
		log_warn("onepanel: version_command: %s", v->error);
		snprintf(v->last_logged, sizeof(v->last_logged), "%s", v->error);
	}
}

static void done(void *arg, struct spawn_result *r)
{
	struct opversion *v = arg;

	v->sp = NULL;
	if (r->exec_failed) {
		fail(v, "cannot run it: %s", strerror(r->exec_errno));
	} else if (r->timed_out) {
		fail(v, "timed out after %d ms", OPVERSION_TIMEOUT_MS);
	} else if (!spawn_result_ok(r)) {
		if (r->status >= 0 && WIFSIGNALED(r->status))
			fail(v, "killed by signal %d", WTERMSIG(r->status));
		else
			fail(v, "exited with status %d", r->status >= 0 ? WEXITSTATUS(r->status) : -1);
	} else if (opversion_parse(r->output, r->output_len, v->version, sizeof(v->version))) {
		fail(v, "printed nothing");
	} else {
		v->state = VS_KNOWN;
		v->error[0] = '\0';
		v->last_logged[0] = '\0';
		log_info("onepanel: version %s", v->version);
	}
}

/* The kick timer, armed by schedule(): state is VS_RUNNING. */
static void run(void *arg)
{
	struct opversion *v = arg;
	char **argv = NULL;
	int err = config_split_command(v->command, v->config_file, &argv);

	if (!err)
		err = spawn_start(v->loop, argv, OPVERSION_TIMEOUT_MS, MAX_OUTPUT, done, v, &v->sp);
	config_free_argv(argv);
	if (err)
		fail(v, "cannot run it: %s", strerror(-err));
}

/* Whatever was known or under way is gone; the state is now st. */
static void forget(struct opversion *v, enum vstate st)
{
	loop_timer_disarm(v->kick);
	spawn_cancel(v->sp);
	v->sp = NULL;
	v->state = st;
	v->version[0] = '\0';
	v->error[0] = '\0';
}

/* From now on the version is being found out again: what was known
 * belonged to another process or command. The run itself starts from the
 * loop (not from inside a journal append). */
static void schedule(struct opversion *v)
{
	forget(v, VS_RUNNING);
	if (loop_timer_arm(v->kick, 1, 0))
		fail(v, "cannot arm a timer");
}

static void on_event(void *arg, const struct event *e)
{
	struct opversion *v = arg;

	if (e->type == EV_ONEPANEL_FOUND && v->command)
		schedule(v);
}

struct opversion *opversion_new(struct loop *l, struct journal *j)
{
	struct opversion *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->loop = l;
	v->journal = j;
	v->kick = loop_timer_new(l, run, v);
	if (!v->kick || journal_add_listener(j, on_event, v)) {
		loop_timer_free(l, v->kick);
		free(v);
		return NULL;
	}
	return v;
}

void opversion_free(struct opversion *v)
{
	if (!v)
		return;
	journal_remove_listener(v->journal, on_event, v);
	spawn_cancel(v->sp);
	loop_timer_free(v->loop, v->kick);
	free(v->command);
	free(v->config_file);
	free(v);
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

int opversion_configure(struct opversion *v, const struct onepanel_config *cfg, bool running)
{
	const char *cmd = cfg && cfg->configured ? cfg->version_command : NULL;
	const char *cf = cfg ? cfg->config_file : NULL;
	bool changed = !same(cmd, v->command) || !same(cf, v->config_file);
	char *nc = NULL, *nf = NULL;

	if (!changed)
		return 0;
	if ((cmd && !(nc = strdup(cmd))) || (cf && !(nf = strdup(cf)))) {
		free(nc);
		return -ENOMEM;
	}
	free(v->command);
	free(v->config_file);
	v->command = nc;
	v->config_file = nf;
	v->last_logged[0] = '\0';
	if (!nc)
		forget(v, VS_OFF);
	else if (running)
		schedule(v);
	else
		forget(v, VS_UNKNOWN);	/* until onepanel is found */
	return 0;
}

const char *opversion_get(const struct opversion *v)
{
	return v && v->state == VS_KNOWN ? v->version : "";
}

void opversion_status_json(const struct opversion *v, cJSON *op)
{
	if (!v || v->state == VS_OFF)
		return;
	cJSON_AddStringToObject(op, "version_state", vstate_names[v->state]);
	if (v->state == VS_KNOWN)
		cJSON_AddStringToObject(op, "version", v->version);
	if (v->state == VS_FAILED)
		cJSON_AddStringToObject(op, "version_error", v->error);
}

int opversion_collect(const struct opversion *v, struct metrics *m)
{
	int err;

	if (!v || v->state == VS_OFF)
		return 0;
	err = metrics_declare(m, "onepanel_info", MT_GAUGE,
			      "onepanel's version (onepanel.version_command); 1 while known.");
	if (err || v->state != VS_KNOWN)
		return err;
	return metrics_add(m, "onepanel_info", 1, "version", v->version, NULL);
}
