/* Unit tests for spawn.c: real children on a real loop, driven with
 * loop_run_once until the callback fired or a deadline passed. /bin/sh is
 * only a test subject here (spawn itself never uses a shell). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "loop.h"
#include "spawn.h"

#define DEADLINE_MS 20000

struct done {
	int calls;
	struct spawn_result r;  /* copy; output owned by the test */
	uint64_t at_ms;
	bool cancel_inside;
	struct spawn *self;
};

static void on_done(void *arg, struct spawn_result *r)
{
	struct done *d = arg;

	d->calls++;
	d->at_ms = loop_now_ms();
	d->r = *r;
	r->output = NULL; /* taken */
	if (d->cancel_inside)
		spawn_cancel(d->self); /* must be a no-op */
}

static void done_free(struct done *d)
{
	free(d->r.output);
	d->r.output = NULL;
}

static void run_until_done(struct loop *l, struct done *d, uint64_t limit_ms)
{
	uint64_t end = loop_now_ms() + limit_ms;

	while (!d->calls) {
		if (loop_now_ms() > end)
			fail_msg("no callback within %llu ms", (unsigned long long)limit_ms);
		assert_int_equal(loop_run_once(l, 100), 0);
	}
	assert_int_equal(d->calls, 1);
}

/* Runs argv to completion; returns the result in d. */
static void run_cmd(char *const argv[], uint64_t timeout_ms, size_t max_output, struct done *d)
{
	struct loop *l = loop_new();
	struct spawn *s = NULL;

	assert_non_null(l);
	memset(d, 0, sizeof(*d));
	assert_int_equal(spawn_start(l, argv, timeout_ms, max_output, on_done, d, &s), 0);
	assert_non_null(s);
	assert_true(spawn_pid(s) > 0);
	run_until_done(l, d, DEADLINE_MS);
	assert_non_null(d->r.output);
	assert_int_equal(strlen(d->r.output), d->r.output_len);
	/* Nothing more happens afterwards. */
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(d->calls, 1);
	loop_free(l);
}

static void sh(const char *script, uint64_t timeout_ms, size_t max_output, struct done *d)
{
	char *argv[] = { "/bin/sh", "-c", (char *)script, NULL };

	run_cmd(argv, timeout_ms, max_output, d);
}

static void assert_exited(const struct done *d, int code)
{
	assert_false(d->r.timed_out);
	assert_false(d->r.exec_failed);
	assert_true(WIFEXITED(d->r.status));
	assert_int_equal(WEXITSTATUS(d->r.status), code);
}

static void test_exit0_output(void **state)
{
	char *argv[] = { "/bin/echo", "hello", "world", NULL };
	struct done d;

	(void)state;
	run_cmd(argv, 5000, 4096, &d);
	assert_exited(&d, 0);
	assert_true(spawn_result_ok(&d.r));
	assert_string_equal(d.r.output, "hello world\n");
	assert_int_equal(d.r.output_len, 12);
	assert_false(d.r.output_truncated);
	assert_int_equal(d.r.output_dropped, 0);
	assert_true(d.r.seconds >= 0 && d.r.seconds < 10);
	assert_true(d.r.pid > 0);
	done_free(&d);
}

static void test_exit3(void **state)
{
	struct done d;

	(void)state;
	sh("exit 3", 5000, 4096, &d);
	assert_exited(&d, 3);
	assert_false(spawn_result_ok(&d.r));
	assert_string_equal(d.r.output, "");
	assert_int_equal(d.r.output_len, 0);
	done_free(&d);
}

static void test_killed_by_signal(void **state)
{
	struct done d;

	(void)state;
	sh("kill -9 $$", 5000, 4096, &d);
	assert_false(d.r.timed_out);
	assert_false(d.r.exec_failed);
	assert_true(WIFSIGNALED(d.r.status));
	assert_int_equal(WTERMSIG(d.r.status), SIGKILL);
	assert_false(spawn_result_ok(&d.r));
	done_free(&d);
}

static void test_merged_output(void **state)
{
	struct done d;

	(void)state;
	sh("echo out; echo err >&2; echo out2", 5000, 4096, &d);
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "out\nerr\nout2\n");
	done_free(&d);
}

static void test_truncation_10mb(void **state)
{
	struct done d;

	(void)state;
	sh("/usr/bin/yes | /usr/bin/head -c 10000000", 15000, 4096, &d);
	assert_exited(&d, 0);
	assert_int_equal(d.r.output_len, 4096);
	assert_true(d.r.output_truncated);
	assert_int_equal(d.r.output_dropped, 10000000 - 4096);
	for (size_t i = 0; i < d.r.output_len; i++)
		assert_int_equal(d.r.output[i], i % 2 ? '\n' : 'y');
	done_free(&d);
}

static void test_max_output_zero(void **state)
{
	struct done d;

	(void)state;
	sh("echo something", 5000, 0, &d);
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "");
	assert_true(d.r.output_truncated);
	assert_int_equal(d.r.output_dropped, 10);
	done_free(&d);
}

/* Waits (bounded) for a process that is not our child to be gone. */
static void assert_process_dies(pid_t pid)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);

	if (pfd < 0) {
		assert_int_equal(errno, ESRCH); /* already gone and reaped */
		return;
	}
	struct pollfd p = { .fd = pfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 5000), 1); /* readable = exited */
	close(pfd);
}

static void test_timeout_kills_group(void **state)
{
	struct done d;
	uint64_t t0 = loop_now_ms();

	(void)state;
	/* The grandchild holds the pipe and would keep it open for 100 s. */
	sh("sleep 100 & echo $!; sleep 100", 300, 4096, &d);
	uint64_t took = loop_now_ms() - t0;
	assert_true(d.r.timed_out);
	assert_false(d.r.exec_failed);
	assert_true(WIFSIGNALED(d.r.status));
	assert_int_equal(WTERMSIG(d.r.status), SIGKILL);
	assert_false(spawn_result_ok(&d.r));
	assert_true(took >= 300);
	assert_true(took < 3000);
	/* What was written before the timeout is reported. */
	int gpid = atoi(d.r.output);
	assert_true(gpid > 1);
	assert_process_dies(gpid);
	done_free(&d);
}

/* A leftover in the group that holds the pipe after the child exited is
 * killed at exit: the result comes promptly, not at the timeout. */
static void test_leftover_killed_at_exit(void **state)
{
	struct done d;
	uint64_t t0 = loop_now_ms();

	(void)state;
	sh("sleep 100 & echo $!; exit 4", 10000, 4096, &d);
	assert_exited(&d, 4);
	assert_true(loop_now_ms() - t0 < 5000);
	int gpid = atoi(d.r.output);
	assert_true(gpid > 1);
	assert_process_dies(gpid);
	done_free(&d);
}

/* The child closes its output long before it exits. */
static void test_eof_before_exit(void **state)
{
	struct done d;

	(void)state;
	sh("echo early; exec >/dev/null 2>&1; sleep 0.2; exit 5", 5000, 4096, &d);
	assert_exited(&d, 5);
	assert_string_equal(d.r.output, "early\n");
	done_free(&d);
}

static void test_exec_enoent(void **state)
{
	char *argv[] = { "/nonexistent/dir/nginx", "-t", NULL };
	struct done d;

	(void)state;
	run_cmd(argv, 5000, 4096, &d);
	assert_true(d.r.exec_failed);
	assert_int_equal(d.r.exec_errno, ENOENT);
	assert_false(d.r.timed_out);
	assert_false(spawn_result_ok(&d.r));
	assert_string_equal(d.r.output, "");
	done_free(&d);
}

static void test_exec_eacces(void **state)
{
	char *argv[] = { "/etc/passwd", NULL }; /* no x bit: EACCES even for root */
	struct done d;

	(void)state;
	run_cmd(argv, 5000, 4096, &d);
	assert_true(d.r.exec_failed);
	assert_int_equal(d.r.exec_errno, EACCES);
	assert_false(spawn_result_ok(&d.r));
	done_free(&d);
}

static void test_invalid_args(void **state)
{
	struct loop *l = loop_new();
	struct spawn *s = (struct spawn *)1;
	struct done d;
	char *rel[] = { "bin/true", NULL };
	char *bare[] = { "true", NULL };
	char *empty[] = { NULL };
	char *ok[] = { "/bin/true", NULL };

	(void)state;
	memset(&d, 0, sizeof(d));
	assert_int_equal(spawn_start(l, rel, 1000, 10, on_done, &d, &s), -EINVAL);
	assert_null(s);
	assert_int_equal(spawn_start(l, bare, 1000, 10, on_done, &d, &s), -EINVAL);
	assert_int_equal(spawn_start(l, empty, 1000, 10, on_done, &d, &s), -EINVAL);
	assert_int_equal(spawn_start(l, NULL, 1000, 10, on_done, &d, &s), -EINVAL);
	assert_int_equal(spawn_start(l, ok, 0, 10, on_done, &d, &s), -EINVAL);
	assert_int_equal(spawn_start(l, ok, 1000, 10, NULL, &d, &s), -EINVAL);
	assert_int_equal(spawn_start(l, ok, 1000, 10, on_done, &d, NULL), -EINVAL);
	assert_int_equal(d.calls, 0);
	loop_free(l);
}

static void test_clean_env(void **state)
{
	char *argv[] = { "/usr/bin/env", NULL };
	struct done d;

	(void)state;
	setenv("ONESHIELD_SECRET", "x", 1);
	setenv("LD_PRELOAD", "/nonexistent.so", 1);
	run_cmd(argv, 5000, 4096, &d);
	unsetenv("ONESHIELD_SECRET");
	unsetenv("LD_PRELOAD");
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "PATH=/usr/sbin:/usr/bin:/sbin:/bin\nLANG=C\n");
	done_free(&d);
}

static void check_fds(void)
{
	char *argv[] = { "/bin/ls", "/proc/self/fd", NULL };
	int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC */
	int leak_hi = fcntl(leak, F_DUPFD, 100);
	struct done d;

	assert_true(leak >= 3);
	assert_true(leak_hi >= 100);
	run_cmd(argv, 5000, 4096, &d);
	close(leak);
	close(leak_hi);
	assert_exited(&d, 0);
	/* 0-2, and 3 is the directory ls reads. */
	assert_string_equal(d.r.output, "0\n1\n2\n3\n");
	done_free(&d);
}

static void test_fds_not_inherited(void **state)
{
	(void)state;
	check_fds();
}

/* stdin is /dev/null. */
static void test_stdin_devnull(void **state)
{
	struct done d;

	(void)state;
	sh("/bin/readlink /proc/self/fd/0; /bin/cat; echo end", 5000, 4096, &d);
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "/dev/null\nend\n");
	done_free(&d);
}

static void test_signals_clean(void **state)
{
	char *argv[] = { "/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", NULL };
	sigset_t set, old;
	struct sigaction ign, old_pipe, old_usr1;
	struct done d;

	(void)state;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	assert_int_equal(sigprocmask(SIG_BLOCK, &set, &old), 0);
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &old_pipe);
	sigaction(SIGUSR1, &ign, &old_usr1);
	/* libc's internal 32 and 33 can only be set by the syscall; make
	 * ignored them when it ran the tests, and so may an init system. */
	struct ksa { void (*h)(int); unsigned long f; void (*r)(void); uint64_t m; };
	struct ksa kign = { .h = SIG_IGN }, old32, old33;
	assert_int_equal(syscall(SYS_rt_sigaction, 32, &kign, &old32, sizeof(uint64_t)), 0);
	assert_int_equal(syscall(SYS_rt_sigaction, 33, &kign, &old33, sizeof(uint64_t)), 0);
	run_cmd(argv, 5000, 4096, &d);
	syscall(SYS_rt_sigaction, 32, &old32, NULL, sizeof(uint64_t));
	syscall(SYS_rt_sigaction, 33, &old33, NULL, sizeof(uint64_t));
	sigaction(SIGPIPE, &old_pipe, NULL);
	sigaction(SIGUSR1, &old_usr1, NULL);
	/* The parent's mask is what it was. */
	sigset_t now;
	sigprocmask(SIG_SETMASK, &old, &now);
	assert_int_equal(sigismember(&now, SIGTERM), 1);
	assert_int_equal(sigismember(&now, SIGUSR2), sigismember(&old, SIGUSR2));
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
	done_free(&d);
}

static void test_literal_argument(void **state)
{
	char *argv[] = { "/bin/echo", "a; rm -rf / $(id) `id` | cat > /tmp/x && *", NULL };
	struct done d;

	(void)state;
	run_cmd(argv, 5000, 4096, &d);
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "a; rm -rf / $(id) `id` | cat > /tmp/x && *\n");
	done_free(&d);
}

/* The validator's path: config_split_command then spawn. */
static void test_split_command_path(void **state)
{
	char **argv = NULL;
	struct done d;

	(void)state;
	assert_int_equal(config_split_command("/usr/bin/printf '[%s]' -t -c {config}",
					      "/etc/nginx/my conf; $(id) 'x'.conf", &argv), 0);
	run_cmd(argv, 5000, 4096, &d);
	config_free_argv(argv);
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "[-t][-c][/etc/nginx/my conf; $(id) 'x'.conf]");
	done_free(&d);
}

static void test_rlimits(void **state)
{
	struct done d;

	(void)state;
	sh("ulimit -t; ulimit -v; ulimit -n; ulimit -c", 2500, 4096, &d);
	assert_exited(&d, 0);
	/* CPU: 2.5 s rounded up + 1; address space deliberately unlimited. */
	assert_string_equal(d.r.output, "4\nunlimited\n1024\n0\n");
	done_free(&d);
}

static void test_own_group_cwd(void **state)
{
	struct done d;
	char expect[64];

	(void)state;
	sh("echo $(/usr/bin/cut -d' ' -f5 /proc/$$/stat) $$; pwd", 5000, 4096, &d);
	assert_exited(&d, 0);
	int pgid = 0, pid = 0;
	assert_int_equal(sscanf(d.r.output, "%d %d", &pgid, &pid), 2);
	assert_int_equal(pgid, pid);
	assert_int_equal(pid, d.r.pid);
	assert_int_not_equal(pgid, getpgrp());
	snprintf(expect, sizeof(expect), "%d %d\n/\n", pid, pid);
	assert_string_equal(d.r.output, expect);
	done_free(&d);
}

static void test_cancel_no_zombie(void **state)
{
	struct loop *l = loop_new();
	char *argv[] = { "/bin/sh", "-c", "sleep 100 & echo $!; sleep 100", NULL };
	struct spawn *s = NULL;
	struct done d;
	char path[64];

	(void)state;
	memset(&d, 0, sizeof(d));
	assert_int_equal(spawn_start(l, argv, 60000, 4096, on_done, &d, &s), 0);
	pid_t pid = spawn_pid(s);
	assert_true(pid > 0);
	assert_int_equal(loop_run_once(l, 0), 0);
	spawn_cancel(s);
	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	/* The callback never comes. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(loop_run_once(l, 10), 0);
	assert_int_equal(d.calls, 0);
	spawn_cancel(NULL);
	loop_free(l);
}

/* Cancel right after start, before the child even ran. */
static void test_cancel_immediately(void **state)
{
	struct loop *l = loop_new();
	char *argv[] = { "/bin/sleep", "100", NULL };
	struct done d;
	char path[64];

	(void)state;
	memset(&d, 0, sizeof(d));
	for (int i = 0; i < 20; i++) {
		struct spawn *s = NULL;

		assert_int_equal(spawn_start(l, argv, 60000, 4096, on_done, &d, &s), 0);
		pid_t pid = spawn_pid(s);
		spawn_cancel(s);
		snprintf(path, sizeof(path), "/proc/%d", (int)pid);
		assert_int_equal(access(path, F_OK), -1);
	}
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(d.calls, 0);
	loop_free(l);
}

static void test_cancel_inside_callback(void **state)
{
	struct loop *l = loop_new();
	char *argv[] = { "/bin/true", NULL };
	struct done d;

	(void)state;
	memset(&d, 0, sizeof(d));
	d.cancel_inside = true;
	assert_int_equal(spawn_start(l, argv, 5000, 16, on_done, &d, &d.self), 0);
	run_until_done(l, &d, DEADLINE_MS);
	assert_exited(&d, 0);
	done_free(&d);
	loop_free(l);
}

/* Several at once on one loop. */
static void test_concurrent(void **state)
{
	struct loop *l = loop_new();
	struct done d[4];
	char *argv[4][4] = {
		{ "/bin/sh", "-c", "echo 0; exit 0", NULL },
		{ "/bin/sh", "-c", "echo 1; exit 1", NULL },
		{ "/bin/sh", "-c", "echo 2; sleep 0.1; exit 2", NULL },
		{ "/bin/sh", "-c", "echo 3; exit 3", NULL },
	};
	uint64_t end = loop_now_ms() + DEADLINE_MS;

	(void)state;
	memset(d, 0, sizeof(d));
	for (int i = 0; i < 4; i++) {
		struct spawn *s;

		assert_int_equal(spawn_start(l, argv[i], 5000, 64, on_done, &d[i], &s), 0);
	}
	for (;;) {
		int n = 0;

		for (int i = 0; i < 4; i++)
			n += d[i].calls;
		if (n == 4)
			break;
		assert_true(loop_now_ms() < end);
		assert_int_equal(loop_run_once(l, 100), 0);
	}
	for (int i = 0; i < 4; i++) {
		char expect[16];

		assert_int_equal(d[i].calls, 1);
		assert_exited(&d[i], i);
		snprintf(expect, sizeof(expect), "%d\n", i);
		assert_string_equal(d[i].r.output, expect);
		done_free(&d[i]);
	}
	loop_free(l);
}

/* Old kernels: no pidfd (poll waitid), no close_range (walk /proc). */
static void test_fallbacks(void **state)
{
	struct done d;

	(void)state;
	spawn_test_flags = SPAWN_TEST_NO_PIDFD | SPAWN_TEST_NO_CLOSE_RANGE;
	sh("echo fallback; exit 6", 5000, 4096, &d);
	assert_exited(&d, 6);
	assert_string_equal(d.r.output, "fallback\n");
	done_free(&d);

	check_fds();

	sh("sleep 100 & sleep 100", 200, 4096, &d);
	assert_true(d.r.timed_out);
	assert_true(WIFSIGNALED(d.r.status));
	done_free(&d);

	char *missing[] = { "/nonexistent", NULL };
	run_cmd(missing, 5000, 4096, &d);
	assert_true(d.r.exec_failed);
	assert_int_equal(d.r.exec_errno, ENOENT);
	done_free(&d);
	spawn_test_flags = 0;
}

/* Parent with stdin, stdout and stderr closed: /dev/null and the pipes land
 * on fds 0..2 and the child must still get them right. */
static void test_parent_stdio_closed(void **state)
{
	struct loop *l = loop_new();
	char *argv[] = { "/bin/sh", "-c", "echo stdio; echo err >&2; /bin/readlink /proc/self/fd/0", NULL };
	int save[3];
	struct spawn *s = NULL;
	struct done d;
	int rc;

	(void)state;
	assert_non_null(l);
	memset(&d, 0, sizeof(d));
	for (int i = 0; i < 3; i++) {
		save[i] = fcntl(i, F_DUPFD_CLOEXEC, 10);
		assert_true(save[i] >= 10);
	}
	for (int i = 0; i < 3; i++)
		close(i);
	/* Our own pipe ends and the pidfd are on 0..2 now: stdio comes
	 * back only when the spawn is done. */
	rc = spawn_start(l, argv, 5000, 4096, on_done, &d, &s);
	for (uint64_t end = loop_now_ms() + DEADLINE_MS; rc == 0 && !d.calls && loop_now_ms() < end;)
		loop_run_once(l, 100);
	for (int i = 0; i < 3; i++) {
		dup2(save[i], i);
		close(save[i]);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(d.calls, 1);
	loop_free(l);
	assert_exited(&d, 0);
	assert_string_equal(d.r.output, "stdio\nerr\n/dev/null\n");
	done_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exit0_output),
		cmocka_unit_test(test_exit3),
		cmocka_unit_test(test_killed_by_signal),
		cmocka_unit_test(test_merged_output),
		cmocka_unit_test(test_truncation_10mb),
		cmocka_unit_test(test_max_output_zero),
		cmocka_unit_test(test_timeout_kills_group),
		cmocka_unit_test(test_leftover_killed_at_exit),
		cmocka_unit_test(test_eof_before_exit),
		cmocka_unit_test(test_exec_enoent),
		cmocka_unit_test(test_exec_eacces),
		cmocka_unit_test(test_invalid_args),
		cmocka_unit_test(test_clean_env),
		cmocka_unit_test(test_fds_not_inherited),
		cmocka_unit_test(test_stdin_devnull),
		cmocka_unit_test(test_signals_clean),
		cmocka_unit_test(test_literal_argument),
		cmocka_unit_test(test_split_command_path),
		cmocka_unit_test(test_rlimits),
		cmocka_unit_test(test_own_group_cwd),
		cmocka_unit_test(test_cancel_no_zombie),
		cmocka_unit_test(test_cancel_immediately),
		cmocka_unit_test(test_cancel_inside_callback),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_fallbacks),
		cmocka_unit_test(test_parent_stdio_closed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
