/* Child processes for the core loop (see spawn.h).
 *
 * Design: fork() with every signal blocked, so no agent handler runs in the
 * child; the child then only makes async-signal-safe calls on memory prepared
 * before the fork (no malloc, no stdio, no logging): default dispositions,
 * setpgid(0, 0), PR_SET_PDEATHSIG, fds 0/1/2 (/dev/null, the output pipe
 * twice), the error pipe moved to fd 3, close_range(4, ~0U) (or a walk of
 * /proc/self/fd), chdir("/"), rlimits, an empty mask, execve with a fixed
 * environment. A failure there is written as {stage, errno} to the CLOEXEC
 * error pipe before _exit(127); a successful exec closes it unwritten. The
 * parent also calls setpgid(pid, pid), so the group exists as soon as
 * fork() returns and a group kill can never miss a child that has not run
 * yet.
 *
 * Exit is seen through a pidfd in the loop (or, where pidfd_open fails, a
 * 20 ms waitid(WNOHANG) timer): a WNOWAIT peek says the child is a zombie,
 * then the leftovers of its group are killed while the zombie still pins
 * the group id (so the kill cannot hit a recycled group), then waitpid
 * reaps it and the error pipe is read without blocking. The output pipe's
 * read end is non-blocking and read on every wakeup whether or not there is
 * room, so the child never blocks on it. The callback fires when the child
 * is reaped and the pipe is at EOF or closed by the deadline. */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "loop.h"

#define POLL_MS 20
#define READ_CHUNK 65536
#define READS_PER_WAKEUP 16 /* 1 MiB, then back to the loop */
#define CHILD_ERR_FD 3

unsigned int spawn_test_flags;

enum child_stage { ST_EXEC, ST_SIGNALS, ST_PGID, ST_DEATHSIG, ST_FDS, ST_CHDIR, ST_RLIMIT, ST_MASK };

static const char *const stage_names[] = {
	[ST_EXEC] = "execve", [ST_SIGNALS] = "signal dispositions", [ST_PGID] = "setpgid",
	[ST_DEATHSIG] = "PR_SET_PDEATHSIG", [ST_FDS] = "file descriptors", [ST_CHDIR] = "chdir",
	[ST_RLIMIT] = "setrlimit", [ST_MASK] = "signal mask",
};

struct child_msg {
	int stage;
	int err;
};

enum { LIM_CPU, LIM_NOFILE, LIM_CORE, LIM__COUNT };

/* Everything the child needs, prepared before fork(). */
struct child_ctx {
	char *const *argv;
	int in_fd, out_fd, err_fd;
	pid_t parent;
	int res[LIM__COUNT];
	struct rlimit lim[LIM__COUNT];
	unsigned int flags;
};

struct spawn {
	struct loop *loop;
	char *prog;                 /* argv[0], for messages */
	pid_t pid;
	int out_fd, err_fd, pidfd;
	struct loop_io *out_io, *pid_io;
	struct loop_timer *deadline, *poll;
	size_t max_output;
	struct buf out;
	size_t dropped;
	bool exited, timed_out, in_cb;
	int status;
	bool exec_failed;
	int exec_errno;
	struct timespec t0;
	spawn_done_fn fn;
	void *arg;
};

static char *const child_env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", NULL };

/* ---- the child: async-signal-safe calls only ---- */

__attribute__((noreturn)) static void child_fail(int efd, int stage, int err)
{
	struct child_msg m = { .stage = stage, .err = err };
	ssize_t n;

	do
		n = write(efd, &m, sizeof(m));
	while (n < 0 && errno == EINTR);
	_exit(127);
}

struct dirent64_raw {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* Close every fd >= low by walking /proc/self/fd; rewinds after each batch
 * that closed something, as closing while reading may skip entries. */
static int close_from_proc(int low)
{
	char dbuf[2048] __attribute__((aligned(8)));
	int d = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (d < 0)
		return -1;
	for (;;) {
		long n = syscall(SYS_getdents64, d, dbuf, sizeof(dbuf));
		bool closed = false;

		if (n < 0) {
			close(d);
			return -1;
		}
		if (n == 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64_raw *de = (struct dirent64_raw *)(dbuf + off);
			const char *p = de->d_name;
			int fd = 0;

			off += de->d_reclen;
			if (*p < '0' || *p > '9')
				continue;
			for (; *p >= '0' && *p <= '9'; p++)
				fd = fd * 10 + (*p - '0');
			if (fd >= low && fd != d) {
				close(fd);
				closed = true;
			}
		}
		if (closed && lseek(d, 0, SEEK_SET) < 0) {
			close(d);
			return -1;
		}
	}
	close(d);
	return 0;
}

static void close_from(int low, unsigned int flags)
{
#ifdef SYS_close_range
	if (!(flags & SPAWN_TEST_NO_CLOSE_RANGE) && syscall(SYS_close_range, low, ~0U, 0) == 0)
		return;
#else
	(void)flags;
#endif
	if (close_from_proc(low) == 0)
		return;
	/* No /proc: every possible fd. */
	struct rlimit rl;
	long max = 1L << 20;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max)
		max = (long)rl.rlim_cur;
	for (long fd = low; fd < max; fd++)
		close((int)fd);
}

/* fd itself when it is above stdio, else a CLOEXEC copy that is. */
static int child_above_stdio(int fd, int efd)
{
	if (fd > 2)
		return fd;
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		child_fail(efd, ST_FDS, errno);
	return fd;
}

static void child_dup(int from, int to, int efd)
{
	while (dup2(from, to) < 0)
		if (errno != EINTR)
			child_fail(efd, ST_FDS, errno);
}

/* The kernel's struct sigaction (no restorer needed for SIG_DFL). */
struct ksigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	uint64_t mask;
};

static void raw_default(int sig)
{
	struct ksigaction k = { .handler = SIG_DFL };

	syscall(SYS_rt_sigaction, sig, &k, NULL, sizeof(k.mask));
}

__attribute__((noreturn)) static void child_run(const struct child_ctx *c)
{
	int efd = c->err_fd;
	struct sigaction sa;
	sigset_t none;

	/* Handlers would not survive execve anyway, but SIG_IGN would
	 * (the agent ignores SIGPIPE), and until then a signal must not
	 * reach an agent handler: they stay blocked until the end. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		/* libc refuses its internal ones (32, 33) with EINVAL, but an
		 * SIG_IGN there, inherited from whoever started the agent,
		 * would reach the command: reset them with the syscall. */
		if (sigaction(sig, &sa, NULL) < 0 && errno == EINVAL)
			raw_default(sig);
	}
	if (setpgid(0, 0) < 0)
		child_fail(efd, ST_PGID, errno);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		child_fail(efd, ST_DEATHSIG, errno);
	if (getppid() != c->parent) /* the agent died before prctl */
		_exit(127);

	/* stdio: sources first moved out of 0..2 so no dup2 clobbers
	 * another source, then the error pipe to 3, then the rest closed. */
	efd = child_above_stdio(efd, efd);
	int in = child_above_stdio(c->in_fd, efd);
	int out = child_above_stdio(c->out_fd, efd);

	child_dup(in, 0, efd);
	child_dup(out, 1, efd);
	child_dup(out, 2, efd);
	if (efd != CHILD_ERR_FD) {
		if (dup3(efd, CHILD_ERR_FD, O_CLOEXEC) < 0)
			child_fail(efd, ST_FDS, errno);
		efd = CHILD_ERR_FD;
	}
	close_from(CHILD_ERR_FD + 1, c->flags);

	if (chdir("/") < 0)
		child_fail(efd, ST_CHDIR, errno);
	for (int i = 0; i < LIM__COUNT; i++)
		if (setrlimit(c->res[i], &c->lim[i]) < 0)
			child_fail(efd, ST_RLIMIT, errno);
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		child_fail(efd, ST_MASK, errno);
	execve(c->argv[0], c->argv, child_env);
	child_fail(efd, ST_EXEC, errno);
}

/* ---- the parent ---- */

/* Clamped to what the agent has: lowering is always allowed, raising not. */
static void set_limit(struct child_ctx *c, int i, int res, rlim_t soft, rlim_t hard)
{
	struct rlimit cur;

	c->res[i] = res;
	if (getrlimit(res, &cur) == 0 && cur.rlim_max < hard)
		hard = cur.rlim_max;
	c->lim[i].rlim_max = hard;
	c->lim[i].rlim_cur = soft < hard ? soft : hard;
}

static void watch_free(struct spawn *s)
{
	loop_io_del(s->loop, s->pid_io);
	s->pid_io = NULL;
	if (s->pidfd >= 0)
		close(s->pidfd);
	s->pidfd = -1;
	loop_timer_free(s->loop, s->poll);
	s->poll = NULL;
}

static void out_close(struct spawn *s)
{
	loop_io_del(s->loop, s->out_io);
	s->out_io = NULL;
	if (s->out_fd >= 0)
		close(s->out_fd);
	s->out_fd = -1;
}

static void spawn_free(struct spawn *s)
{
	watch_free(s);
	out_close(s);
	loop_timer_free(s->loop, s->deadline);
	if (s->err_fd >= 0)
		close(s->err_fd);
	buf_free(&s->out);
	free(s->prog);
	free(s);
}

/* Only while the child is not reaped: its pid (and group id) are ours. */
static void kill_group(struct spawn *s)
{
	kill(-s->pid, SIGKILL);
	kill(s->pid, SIGKILL);
}

static void reap_blocking(struct spawn *s)
{
	int st;
	pid_t r;

	do
		r = waitpid(s->pid, &st, 0);
	while (r < 0 && errno == EINTR);
	s->status = r == s->pid ? st : -1;
	s->exited = true;
}

static void finish(struct spawn *s)
{
	struct spawn_result r;
	struct timespec t1;

	if (!s->exited || s->out_fd >= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	memset(&r, 0, sizeof(r));
	r.pid = s->pid;
	r.status = s->status;
	r.timed_out = s->timed_out;
	r.exec_failed = s->exec_failed;
	r.exec_errno = s->exec_errno;
	/* Never NULL: spawn_start put a terminator in; a failed append
	 * keeps the data and its terminator. */
	r.output = s->out.data;
	r.output_len = s->out.len;
	buf_init(&s->out);
	r.output_dropped = s->dropped;
	r.output_truncated = s->dropped > 0;
	r.seconds = (double)(t1.tv_sec - s->t0.tv_sec) + (double)(t1.tv_nsec - s->t0.tv_nsec) / 1e9;
	log_debug("spawn: %s (pid %d) done: status 0x%x%s%s, %zu bytes of output (%zu dropped), %.3f s",
		  s->prog, (int)s->pid, (unsigned int)r.status, r.timed_out ? ", timed out" : "",
		  r.exec_failed ? ", exec failed" : "", r.output_len, r.output_dropped, r.seconds);
	s->in_cb = true;
	s->fn(s->arg, &r);
	free(r.output);
	spawn_free(s);
}

/* Reads what the pipe has, up to max_reads chunks; 1 at EOF (or a read
 * error, which ends the output the same way), else 0. */
static int out_drain(struct spawn *s, int max_reads)
{
	char tmp[READ_CHUNK];

	for (int i = 0; i < max_reads; i++) {
		ssize_t n = read(s->out_fd, tmp, sizeof(tmp));

		if (n > 0) {
			size_t room = s->max_output - s->out.len;
			size_t keep = (size_t)n < room ? (size_t)n : room;

			if (keep && buf_append(&s->out, tmp, keep) < 0)
				keep = 0; /* out of memory: counted as dropped */
			s->dropped += (size_t)n - keep;
			continue;
		}
		if (n == 0)
			return 1;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return 0;
		log_warn("spawn: %s (pid %d): reading output: %s", s->prog, (int)s->pid, strerror(errno));
		return 1;
	}
	return 0;
}

static void on_output(void *arg, int fd, uint32_t events)
{
	struct spawn *s = arg;

	(void)fd;
	(void)events;
	if (out_drain(s, READS_PER_WAKEUP)) {
		out_close(s);
		finish(s);
	}
}

static void read_exec_error(struct spawn *s)
{
	struct child_msg m;
	ssize_t n;

	do
		n = read(s->err_fd, &m, sizeof(m));
	while (n < 0 && errno == EINTR);
	close(s->err_fd);
	s->err_fd = -1;
	if (n != (ssize_t)sizeof(m))
		return; /* EOF: execve succeeded (or the child was killed first) */
	s->exec_failed = true;
	s->exec_errno = m.err;
	if (m.stage != ST_EXEC && m.stage > 0 && m.stage < (int)(sizeof(stage_names) / sizeof(stage_names[0])))
		log_warn("spawn: %s: setting up the child failed at %s: %s", s->prog, stage_names[m.stage],
			 strerror(m.err));
}

static void check_exit(struct spawn *s)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)s->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
		if (errno == EINTR)
			return; /* still readable / the poll timer comes back */
		log_error("spawn: %s (pid %d): waitid: %s (was it reaped elsewhere? SIGCHLD must not be ignored)",
			  s->prog, (int)s->pid, strerror(errno));
		s->status = -1;
		s->exited = true;
	} else if (si.si_pid == 0) {
		return; /* not yet */
	} else {
		/* The zombie pins the group id: kill what is left of it. */
		kill(-s->pid, SIGKILL);
		reap_blocking(s);
	}
	watch_free(s);
	read_exec_error(s);
	finish(s);
}

static void on_pidfd(void *arg, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	check_exit(arg);
}

static void on_poll(void *arg)
{
	check_exit(arg);
}

static void on_deadline(void *arg)
{
	struct spawn *s = arg;

	s->timed_out = true;
	if (!s->exited) {
		log_warn("spawn: %s (pid %d): no result after the timeout, killing its process group", s->prog,
			 (int)s->pid);
		kill_group(s);
	} else {
		log_warn("spawn: %s (pid %d): exited, but something outside its process group holds its output open",
			 s->prog, (int)s->pid);
	}
	/* What is there now, then stop waiting for EOF. */
	if (s->out_fd >= 0) {
		out_drain(s, READS_PER_WAKEUP);
		out_close(s);
	}
	finish(s);
}

static int watch_exit(struct spawn *s)
{
#ifdef SYS_pidfd_open
	if (!(spawn_test_flags & SPAWN_TEST_NO_PIDFD)) {
		s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
		if (s->pidfd >= 0) {
			s->pid_io = loop_io_add(s->loop, s->pidfd, EPOLLIN, on_pidfd, s);
			if (s->pid_io)
				return 0;
			int e = errno;
			close(s->pidfd);
			s->pidfd = -1;
			return e ? -e : -ENOMEM;
		}
		/* ENOSYS before 5.3, EPERM under some seccomp profiles. */
		log_debug("spawn: pidfd_open: %s, polling waitid", strerror(errno));
	}
#endif
	s->poll = loop_timer_new(s->loop, on_poll, s);
	if (!s->poll)
		return -ENOMEM;
	return loop_timer_arm(s->poll, POLL_MS, POLL_MS);
}

int spawn_start(struct loop *l, char *const argv[], uint64_t timeout_ms, size_t max_output,
		spawn_done_fn fn, void *arg, struct spawn **out)
{
	struct child_ctx c;
	struct spawn *s;
	int op[2] = { -1, -1 }, ep[2] = { -1, -1 };
	sigset_t all, old;
	int err;

	if (out)
		*out = NULL;
	if (!l || !argv || !argv[0] || argv[0][0] != '/' || !timeout_ms || !fn || !out)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = l;
	s->out_fd = s->err_fd = s->pidfd = -1;
	s->max_output = max_output;
	s->fn = fn;
	s->arg = arg;
	buf_init(&s->out);
	clock_gettime(CLOCK_MONOTONIC, &s->t0);
	if (buf_append(&s->out, "", 0) < 0) {
		free(s);
		return -ENOMEM;
	}

	memset(&c, 0, sizeof(c));
	c.argv = argv;
	c.in_fd = -1;
	c.parent = getpid();
	c.flags = spawn_test_flags;
	rlim_t cpu = (rlim_t)((timeout_ms + 999) / 1000 + SPAWN_CPU_SLACK_S);
	set_limit(&c, LIM_CPU, RLIMIT_CPU, cpu, cpu + 1); /* SIGXCPU, then SIGKILL */
	/* No RLIMIT_AS: validators that reserve address space up front (Go
	 * runtimes, sanitizer builds, nginx with large shared zones) fail
	 * under it for no fault of the config. Memory belongs to a cgroup. */
	set_limit(&c, LIM_NOFILE, RLIMIT_NOFILE, SPAWN_NOFILE_LIMIT, SPAWN_NOFILE_LIMIT);
	set_limit(&c, LIM_CORE, RLIMIT_CORE, 0, 0);

	s->prog = strdup(argv[0]);
	if (!s->prog) {
		err = -ENOMEM;
		goto fail;
	}
	c.in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (c.in_fd < 0 || pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC | O_NONBLOCK) < 0) {
		err = -errno;
		goto fail;
	}
	/* Only the parent's end: the child's stdout stays blocking. */
	s->out_fd = op[0];
	s->err_fd = ep[0];
	if (fcntl(s->out_fd, F_SETFL, O_NONBLOCK) < 0) {
		err = -errno;
		goto fail;
	}
	s->out_io = loop_io_add(l, s->out_fd, EPOLLIN, on_output, s);
	s->deadline = loop_timer_new(l, on_deadline, s);
	if (!s->out_io || !s->deadline) {
		err = -ENOMEM;
		goto fail;
	}
	c.out_fd = op[1];
	c.err_fd = ep[1];

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	s->pid = fork();
	if (s->pid == 0)
		child_run(&c);
	err = -errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(c.in_fd);
	close(op[1]);
	close(ep[1]);
	c.in_fd = op[1] = ep[1] = -1;
	if (s->pid < 0) {
		log_error("spawn: %s: fork: %s", s->prog, strerror(-err));
		goto fail;
	}
	/* Also here, so the group exists before anyone can kill it. EACCES
	 * when the child has already exec'd: it did setpgid itself. */
	setpgid(s->pid, s->pid);

	err = watch_exit(s);
	if (!err)
		err = loop_timer_arm(s->deadline, timeout_ms, 0);
	if (err) {
		log_error("spawn: %s (pid %d): cannot watch the child: %s", s->prog, (int)s->pid, strerror(-err));
		kill_group(s);
		reap_blocking(s);
		goto fail;
	}
	log_debug("spawn: %s: pid %d, timeout %llu ms", s->prog, (int)s->pid, (unsigned long long)timeout_ms);
	*out = s;
	return 0;

fail:
	if (c.in_fd >= 0)
		close(c.in_fd);
	if (op[1] >= 0)
		close(op[1]);
	if (ep[1] >= 0)
		close(ep[1]);
	if (s->out_fd < 0 && op[0] >= 0)
		close(op[0]);
	if (s->err_fd < 0 && ep[0] >= 0)
		close(ep[0]);
	spawn_free(s);
	return err;
}

void spawn_cancel(struct spawn *s)
{
	if (!s || s->in_cb)
		return;
	if (!s->exited) {
		kill_group(s);
		reap_blocking(s);
	}
	spawn_free(s);
}

pid_t spawn_pid(const struct spawn *s)
{
	return s ? s->pid : -1;
}

bool spawn_result_ok(const struct spawn_result *r)
{
	return r && !r->timed_out && !r->exec_failed && r->status != -1 && WIFEXITED(r->status) &&
	       WEXITSTATUS(r->status) == 0;
}
