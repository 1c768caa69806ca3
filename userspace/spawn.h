/* Running a command as a child process without blocking the core loop (the
 * config-apply validator, "nginx -t -c FILE").
 *
 * Never through a shell: argv goes to execve as is, argv[0] must be an
 * absolute path (no PATH search in a root daemon). The child gets its own
 * process group, the environment PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C
 * and nothing else, stdin from /dev/null, stdout and stderr on one pipe, no
 * other fd, default signal dispositions, an empty signal mask, cwd "/",
 * SIGKILL on the agent's death and the resource limits below.
 *
 * The callback fires once, from the loop, when the child has been reaped and
 * its output pipe reached EOF, or when the timeout fired (the group is then
 * SIGKILLed, what the pipe holds is drained and the pipe closed, so a
 * grandchild holding it open cannot stall the caller). When the child exits,
 * whatever is left in its process group is SIGKILLed too: a validator must
 * not leave processes behind. */
#ifndef OS_SPAWN_H
#define OS_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct loop;
struct spawn;

/* Limits applied in the child (never raised above what the agent has). The
 * CPU limit is the timeout rounded up to seconds plus SPAWN_CPU_SLACK_S. */
#define SPAWN_CPU_SLACK_S 1
#define SPAWN_NOFILE_LIMIT 1024

struct spawn_result {
	pid_t pid;
	int status;            /* wait(2) status; -1 when it could not be reaped (someone else did: SIGCHLD ignored?) */
	bool timed_out;        /* the deadline passed first; status is then whatever the child died of (usually SIGKILL) */
	bool exec_failed;      /* setting up the child or execve failed: exec_errno says why; status is then exit 127 */
	int exec_errno;
	char *output;          /* stdout+stderr, NUL-terminated, never NULL (may be ""); owned by the spawn */
	size_t output_len;
	bool output_truncated; /* more than max_output bytes came: they were read and discarded */
	size_t output_dropped; /* how many */
	double seconds;        /* from spawn_start to the callback */
};

/* Called once, from the loop. r lives during the call only; the callback may
 * take r->output (set r->output to NULL and free() it later). The spawn is
 * freed when the callback returns: forget the handle in the callback. */
typedef void (*spawn_done_fn)(void *arg, struct spawn_result *r);

/* Start argv[0] (absolute path) with argv. max_output: bytes of output kept
 * (0 keeps none; the rest is still read so the child never blocks on a full
 * pipe). timeout_ms > 0: at expiry the child's whole process group gets
 * SIGKILL. argv is not used after the call returns. 0 and *out set, or
 * -EINVAL (no argv, relative argv[0], timeout 0), -ENOMEM, -errno from
 * pipe/fork/...; the callback never fires then. */
int spawn_start(struct loop *l, char *const argv[], uint64_t timeout_ms, size_t max_output,
		spawn_done_fn fn, void *arg, struct spawn **out);

/* Kill the group, reap the child (blocks until it is gone, which after
 * SIGKILL is immediate unless it is stuck in the kernel), free everything;
 * the callback does not fire. Accepts NULL; a no-op when called from inside
 * the callback. Not valid after the callback returned (s is freed). */
void spawn_cancel(struct spawn *s);

pid_t spawn_pid(const struct spawn *s);

/* The child ran and exited 0 in time. */
bool spawn_result_ok(const struct spawn_result *r);

/* Tests only: take the fallbacks for old kernels. */
#define SPAWN_TEST_NO_PIDFD 0x1       /* poll waitpid on a timer instead of a pidfd (< 5.3) */
#define SPAWN_TEST_NO_CLOSE_RANGE 0x2 /* close fds via /proc/self/fd (< 5.9) */
extern unsigned int spawn_test_flags;

#endif
