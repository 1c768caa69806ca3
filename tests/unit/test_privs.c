/* Unit tests for privs.c: names, formatting, the /proc status parser, and
 * privs_drop itself in a forked child (a drop cannot be undone, and it
 * changes only the calling thread: cmocka runs the tests on one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privs.h"

static void read_status(char *buf, size_t len)
{
	int fd = open("/proc/thread-self/status", O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
}

static void test_names(void **state)
{
	char b[16];
	(void)state;
	assert_string_equal(privs_cap_name(0, b, sizeof(b)), "cap_chown");
	assert_string_equal(privs_cap_name(21, b, sizeof(b)), "cap_sys_admin");
	assert_string_equal(privs_cap_name(39, b, sizeof(b)), "cap_bpf");
	assert_string_equal(privs_cap_name(40, b, sizeof(b)), "cap_checkpoint_restore");
	assert_string_equal(privs_cap_name(41, b, sizeof(b)), "cap_41");
	assert_string_equal(privs_cap_name(63, b, sizeof(b)), "cap_63");
	/* every kept capability says why; nothing else does */
	for (int cap = 0; cap < 64; cap++) {
		if (PRIVS_KEEP & PRIVS_BIT(cap))
			assert_non_null(privs_cap_reason(cap));
		else
			assert_null(privs_cap_reason(cap));
	}
}

static void test_format(void **state)
{
	char out[512];
	(void)state;
	assert_int_equal(privs_format(0, out, sizeof(out)), 4);
	assert_string_equal(out, "none");
	privs_format(PRIVS_BIT(5), out, sizeof(out));
	assert_string_equal(out, "cap_kill");
	privs_format(PRIVS_KEEP, out, sizeof(out));
	assert_string_equal(out, "cap_chown,cap_dac_override,cap_fowner,cap_kill,cap_net_bind_service,"
				 "cap_sys_ptrace,cap_perfmon,cap_bpf");
	privs_format(PRIVS_BIT(0) | PRIVS_BIT(63), out, sizeof(out));
	assert_string_equal(out, "cap_chown,cap_63");
	/* truncated, always terminated */
	size_t n = privs_format(PRIVS_KEEP, out, 12);
	assert_int_equal(n, 11);
	assert_int_equal(strlen(out), 11);
	assert_int_equal(privs_format(PRIVS_KEEP, out, 0), 0);
}

static void test_status_value(void **state)
{
	uint64_t v = 0;
	(void)state;
	const char *st = "Name:\tx\nThreads:\t3\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n"
			 "CapEffX:\t1\nNoNewPrivs:\t1";
	assert_int_equal(privs_status_value(st, "Threads", 10, &v), 0);
	assert_int_equal(v, 3);
	assert_int_equal(privs_status_value(st, "CapEff", 16, &v), 0);
	assert_int_equal(v, 0x1fffeffffffULL);
	assert_int_equal(privs_status_value(st, "CapInh", 16, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(privs_status_value(st, "NoNewPrivs", 10, &v), 0); /* last line, no newline */
	assert_int_equal(v, 1);
	assert_int_equal(privs_status_value(st, "CapBnd", 16, &v), -ENOENT);
	assert_int_equal(privs_status_value(st, "Cap", 16, &v), -ENOENT);   /* a prefix is not a field */
	assert_int_equal(privs_status_value("Threads:\tlots\n", "Threads", 10, &v), -EINVAL);
	assert_int_equal(privs_status_value("Threads:\t\n", "Threads", 10, &v), -EINVAL);
	assert_int_equal(privs_status_value("Threads:\t12x\n", "Threads", 10, &v), -EINVAL);
	assert_int_equal(privs_status_value("", "Threads", 10, &v), -ENOENT);
}

/* privs_read agrees with what the kernel shows in /proc. */
static void test_read_matches_proc(void **state)
{
	char buf[4096];
	struct privs_state st;
	uint64_t v;
	(void)state;
	assert_int_equal(privs_read(&st), 0);
	read_status(buf, sizeof(buf));
	const struct {
		const char *field;
		uint64_t want;
	} f[] = {
		{ "CapEff", st.effective }, { "CapPrm", st.permitted }, { "CapInh", st.inheritable },
		{ "CapBnd", st.bounding },  { "CapAmb", st.ambient },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		assert_int_equal(privs_status_value(buf, f[i].field, 16, &v), 0);
		assert_int_equal(v, f[i].want);
	}
	assert_int_equal(privs_status_value(buf, "NoNewPrivs", 10, &v), 0);
	assert_int_equal(v, st.no_new_privs);
}

/* In a child: drop to a small set and check every set in /proc. Exit codes
 * name the failed check (the parent cannot see the child's asserts). */
static int drop_child(uint64_t keep)
{
	char buf[4096], err[256];
	struct privs_state before, after;
	uint64_t v;
	if (privs_read(&before))
		return 10;
	uint64_t want = keep & before.permitted;
	int rc = privs_drop(keep, &after, err, sizeof(err));
	bool can_bound = before.effective & PRIVS_BIT(8); /* CAP_SETPCAP */
	if (can_bound && rc)
		return 11;
	read_status(buf, sizeof(buf));
	if (privs_status_value(buf, "CapEff", 16, &v) || v != want)
		return 12;
	if (privs_status_value(buf, "CapPrm", 16, &v) || v != want)
		return 13;
	if (privs_status_value(buf, "CapInh", 16, &v) || v != 0)
		return 14;
	if (privs_status_value(buf, "CapAmb", 16, &v) || v != 0)
		return 15;
	if (privs_status_value(buf, "NoNewPrivs", 10, &v) || v != 1)
		return 16;
	if (privs_status_value(buf, "CapBnd", 16, &v) || (can_bound && v != (keep & before.bounding)))
		return 17;
	if (after.effective != want || !after.no_new_privs)
		return 18;
	return 0;
}

static void run_drop(uint64_t keep)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(drop_child(keep));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_drop_keep_set(void **state)
{
	(void)state;
	run_drop(PRIVS_KEEP);
}

static void test_drop_everything(void **state)
{
	(void)state;
	run_drop(0);
}

/* With a second thread the drop refuses: it would leave that thread with
 * every capability. */
static void *sleeper(void *arg)
{
	(void)arg;
	pause();
	return NULL;
}

static void test_drop_refuses_with_threads(void **state)
{
	(void)state;
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pthread_t t;
		char err[256];
		struct privs_state before, after;
		if (privs_read(&before) || pthread_create(&t, NULL, sleeper, NULL))
			_exit(10);
		int rc = privs_drop(PRIVS_KEEP, &after, err, sizeof(err));
		if (rc != -EBUSY || !strstr(err, "threads"))
			_exit(11);
		/* nothing changed */
		if (after.effective != before.effective || after.bounding != before.bounding || after.no_new_privs)
			_exit(12);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_status_value),
		cmocka_unit_test(test_read_matches_proc),
		cmocka_unit_test(test_drop_keep_set),
		cmocka_unit_test(test_drop_everything),
		cmocka_unit_test(test_drop_refuses_with_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
