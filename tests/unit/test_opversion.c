/* onepanel's version from onepanel.version_command (opversion.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "journal.h"
#include "loop.h"
#include "metrics.h"
#include "opversion.h"

#define DEADLINE_MS 10000

static void expect_parse(const char *out, const char *want)
{
	char v[OPVERSION_MAX];

	assert_int_equal(opversion_parse(out, strlen(out), v, sizeof(v)), 0);
	assert_string_equal(v, want);
}

static void test_parse(void **state)
{
	char v[OPVERSION_MAX], big[600];

	(void)state;
	expect_parse("nginx version: nginx/1.22.1\n", "nginx/1.22.1");
	expect_parse("onepanel-sim version: onepanel-sim/0.3.0\n", "onepanel-sim/0.3.0");
	expect_parse("\n  \n\tServer 2.4.57 (Debian)  \r\nbuilt by gcc\n", "Server 2.4.57 (Debian)");
	expect_parse("x 1.0", "x 1.0");                           /* no newline at the end */
	expect_parse("version:   \nv9\n", "v9");                    /* nothing after "version:" */
	expect_parse("a\x01\xff" "b\n", "a??b");                     /* not printable ASCII */
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(opversion_parse(big, strlen(big), v, sizeof(v)), 0);
	assert_int_equal(strlen(v), OPVERSION_MAX - 1);
	assert_int_equal(opversion_parse("", 0, v, sizeof(v)), -ENOENT);
	assert_int_equal(opversion_parse(" \n\t\r\n", 5, v, sizeof(v)), -ENOENT);
	/* len bounds the text, not a NUL */
	assert_int_equal(opversion_parse("abc\nlater", 2, v, sizeof(v)), 0);
	assert_string_equal(v, "ab");
}

struct fixture {
	struct loop *l;
	struct journal *j;
	struct opversion *v;
	struct onepanel_config cfg;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->l = loop_new();
	f->j = journal_new(64);
	assert_non_null(f->l);
	assert_non_null(f->j);
	f->v = opversion_new(f->l, f->j);
	assert_non_null(f->v);
	f->cfg.configured = true;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	opversion_free(f->v);
	journal_free(f->j);
	loop_free(f->l);
	free(f);
	return 0;
}

static const char *state_of(const struct opversion *v, char *buf, size_t len)
{
	cJSON *o = cJSON_CreateObject();
	const cJSON *s;

	opversion_status_json(v, o);
	s = cJSON_GetObjectItem(o, "version_state");
	snprintf(buf, len, "%s", cJSON_IsString(s) ? s->valuestring : "(none)");
	cJSON_Delete(o);
	return buf;
}

/* A run was asked for: the state says so at once; run the loop until it
 * is over. */
static void settle(struct fixture *f)
{
	char b[32];
	uint64_t end = loop_now_ms() + DEADLINE_MS;

	assert_string_equal(state_of(f->v, b, sizeof(b)), "running");
	assert_string_equal(opversion_get(f->v), "");
	while (loop_now_ms() < end) {
		if (strcmp(state_of(f->v, b, sizeof(b)), "running"))
			return;
		loop_run_once(f->l, 100);
	}
	fail_msg("version_state still %s after %d ms", state_of(f->v, b, sizeof(b)), DEADLINE_MS);
}

static void status(struct fixture *f, const char *key, char *buf, size_t len)
{
	cJSON *o = cJSON_CreateObject();
	const cJSON *s;

	opversion_status_json(f->v, o);
	s = cJSON_GetObjectItem(o, key);
	snprintf(buf, len, "%s", cJSON_IsString(s) ? s->valuestring : "(none)");
	cJSON_Delete(o);
}

static void found(struct fixture *f)
{
	struct event *e = event_new(EV_ONEPANEL_FOUND, EL_INFO, "found");

	assert_non_null(e);
	journal_append(f->j, e);
}

static void test_off(void **state)
{
	struct fixture *f = *state;
	struct metrics *m = metrics_new();
	char b[64];

	/* no command: nothing in the status or the metrics, FOUND runs nothing */
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	found(f);
	assert_int_equal(loop_run_once(f->l, 20), 0);
	assert_string_equal(state_of(f->v, b, sizeof(b)), "(none)");
	assert_string_equal(opversion_get(f->v), "");
	assert_int_equal(opversion_collect(f->v, m), 0);
	assert_int_equal(metrics_sample_count(m), 0);
	metrics_free(m);
}

static void test_found_runs_it(void **state)
{
	struct fixture *f = *state;
	struct metrics *m = metrics_new();
	char b[256];
	double val;

	f->cfg.version_command = "/bin/sh -c 'echo \"sim version: sim/$(cat {config})\" >&2'";
	f->cfg.config_file = "/proc/sys/kernel/ostype";
	/* configured while onepanel is not running: waits for it */
	assert_int_equal(opversion_configure(f->v, &f->cfg, false), 0);
	assert_int_equal(loop_run_once(f->l, 20), 0);
	assert_string_equal(state_of(f->v, b, sizeof(b)), "unknown");
	found(f);
	settle(f);
	assert_string_equal(state_of(f->v, b, sizeof(b)), "known");
	assert_string_equal(opversion_get(f->v), "sim/Linux");
	status(f, "version", b, sizeof(b));
	assert_string_equal(b, "sim/Linux");
	assert_int_equal(opversion_collect(f->v, m), 0);
	assert_int_equal(metrics_lookup(m, "onepanel_info", &val, "version", "sim/Linux", NULL), 0);
	assert_true(val == 1);

	/* a failing command: the old version is not kept, the reason is said */
	f->cfg.version_command = "/bin/sh -c 'echo oops; exit 3'";
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	settle(f);
	assert_string_equal(state_of(f->v, b, sizeof(b)), "failed");
	assert_string_equal(opversion_get(f->v), "");
	status(f, "version_error", b, sizeof(b));
	assert_string_equal(b, "exited with status 3");
	metrics_reset(m);
	assert_int_equal(opversion_collect(f->v, m), 0);
	assert_int_equal(metrics_lookup(m, "onepanel_info", &val, NULL), -ENOENT);

	/* a command that prints nothing, one that does not exist */
	f->cfg.version_command = "/bin/true";
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	settle(f);
	status(f, "version_error", b, sizeof(b));
	assert_string_equal(b, "printed nothing");
	f->cfg.version_command = "/nonexistent/onepanel -v";
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	settle(f);
	status(f, "version_error", b, sizeof(b));
	assert_string_equal(b, "cannot run it: No such file or directory");

	/* the same command again is not a change: nothing runs */
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	assert_int_equal(loop_run_once(f->l, 20), 0);

	/* removing the key turns it off and forgets it all */
	f->cfg.version_command = NULL;
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	assert_string_equal(state_of(f->v, b, sizeof(b)), "(none)");
	metrics_free(m);
}

/* A child of this process running comm, or 0. */
static pid_t child_named(const char *comm)
{
	DIR *d = opendir("/proc");
	pid_t found = 0;

	assert_non_null(d);
	for (struct dirent *de; !found && (de = readdir(d));) {
		char path[64], text[512], name[32];
		int pid, ppid;
		FILE *fp;

		if (sscanf(de->d_name, "%d", &pid) != 1)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		if (!(fp = fopen(path, "r")))
			continue;
		if (fgets(text, sizeof(text), fp) && sscanf(text, "%*d (%31[^)]) %*c %d", name, &ppid) == 2 &&
		    ppid == getpid() && !strcmp(name, comm))
			found = pid;
		fclose(fp);
	}
	closedir(d);
	return found;
}

static void test_free_while_running(void **state)
{
	struct fixture *f = *state;
	char b[32];
	pid_t pid = 0;

	/* freeing kills the command and reaps it */
	f->cfg.version_command = "/bin/sleep 30";
	assert_int_equal(opversion_configure(f->v, &f->cfg, true), 0);
	uint64_t end = loop_now_ms() + DEADLINE_MS;
	while (!(pid = child_named("sleep")) && loop_now_ms() < end)
		loop_run_once(f->l, 100);
	assert_true(pid > 0);
	assert_string_equal(state_of(f->v, b, sizeof(b)), "running");
	opversion_free(f->v);
	f->v = NULL;
	assert_int_equal(kill(pid, 0), -1);	/* gone, not a zombie of ours */
	assert_int_equal(errno, ESRCH);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_found_runs_it, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_while_running, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
