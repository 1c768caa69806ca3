/* What the kernel-side unit tests of the eBPF modules (test_schedlat.c,
 * test_sysprobe.c) share: the per-test alarm, the verdict on an open that
 * failed, the workload child (a fresh image of the test binary talking
 * through two pipes) and the wait for programs to leave the kernel.
 *
 * Include after <cmocka.h> (and its prerequisites). Everything is static
 * inline so that a test binary not using a helper does not warn. */
#ifndef OS_TESTS_BPFTEST_H
#define OS_TESTS_BPFTEST_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>

/* A hung test dies instead of hanging CI. */
static inline int bpftest_setup(void **state)
{
	(void)state;
	alarm(120);
	return 0;
}

static inline int bpftest_teardown(void **state)
{
	(void)state;
	alarm(0);
	return 0;
}

/* A test fn run under the alarm with state (a pointer to the variant to
 * open). */
#define BPFTEST_WITH(fn, state) cmocka_unit_test_prestate_setup_teardown(fn, bpftest_setup, bpftest_teardown, state)

/* fn once per variant. The test file defines v_auto, v_ts, v_btf_hash and
 * v_raw, its own variant enum's values (auto, tp_btf + task storage, tp_btf
 * + hash, raw_tp + hash). */
#define PER_VARIANT(fn)                                                                                \
	BPFTEST_WITH(fn, &v_auto), BPFTEST_WITH(fn, &v_ts), BPFTEST_WITH(fn, &v_btf_hash),             \
	BPFTEST_WITH(fn, &v_raw)

/* After a failed open of variant v by what ("schedlat_open"): a forced
 * variant (not auto) this kernel lacks skips, so does anything with
 * ONESHIELD_ALLOW_NO_BPF=1; else the test fails. Does not return. */
static inline void bpftest_open_failed(const char *what, int v, bool forced, int err, const char *why)
{
	const char *allow = getenv("ONESHIELD_ALLOW_NO_BPF");
	print_message("%s(variant %d): %s (%s)\n", what, v, why, strerror(-err));
	if (forced && err == -EOPNOTSUPP)
		skip();
	if (allow && strcmp(allow, "1") == 0)
		skip();
	fail_msg("%s failed: %s", what, why);
}

/* This binary, read at startup by bpftest_self_exe(). Not exec of
 * "/proc/self/exe": under valgrind that is valgrind itself, while
 * readlink() of it gives the client. */
static char self_exe[PATH_MAX];

/* 0, or -1 after printing why. */
static inline int bpftest_self_exe(void)
{
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n <= 0) {
		perror("readlink /proc/self/exe");
		return -1;
	}
	self_exe[n] = 0;
	return 0;
}

/* A workload: this binary run again with argv (a fresh image rather than a
 * forked copy, so that valgrind, which does not trace exec'd children, and
 * the inherited heap stay out of the picture). */
struct child {
	pid_t pid;
	int go_w;     /* parent -> child, the child's fd 3 */
	int done_r;   /* child -> parent, the child's fd 4 */
};

/* Forks and execs self_exe with argv (NULL-terminated), the go pipe on the
 * child's fd 3 and the done pipe on its fd 4, nothing else open. */
static inline void child_spawn(struct child *c, char *const argv[])
{
	int go[2], done[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(done), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (dup2(go[0], 3) < 0 || dup2(done[1], 4) < 0)
			_exit(6);
		closefrom(5);
		execv(self_exe, argv);
		_exit(7);
	}
	close(go[0]);
	close(done[1]);
	c->pid = pid;
	c->go_w = go[1];
	c->done_r = done[0];
}

/* Closes the pipes (EOF ends the workload) and requires a clean exit. */
static inline void child_reap(struct child *c)
{
	int st;
	close(c->go_w);
	close(c->done_r);
	assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* Waits until none of the programs ids[0..n) is loaded; what names them in
 * the failure. Their release after the last link or fd is closed can be
 * deferred (RCU): polled every 10 ms, for 2 s at most. */
static inline void bpftest_wait_unloaded(const uint32_t *ids, size_t n, const char *what)
{
	for (int tries = 0;; tries++) {
		size_t alive = 0;
		for (size_t i = 0; i < n; i++) {
			int fd = bpf_prog_get_fd_by_id(ids[i]);
			if (fd >= 0) {
				alive++;
				close(fd);
			}
		}
		if (!alive)
			break;
		if (tries > 200)
			fail_msg("%zu %s programs still loaded 2 s after close", alive, what);
		usleep(10000);
	}
}

#endif
