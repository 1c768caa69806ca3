/* Least privilege: the capabilities the agent keeps after start-up.
 *
 * The agent starts as root (or with the systemd unit's bounding set) because
 * loading its eBPF programs, binding the netlink proc connector and opening
 * its listeners and log files need more than it needs afterwards. Once those
 * are open, main.c calls privs_drop with PRIVS_KEEP: every other capability
 * leaves the bounding set first (while CAP_SETPCAP is still held), then the
 * permitted and effective sets are cut down to PRIVS_KEEP, inheritable and
 * ambient are cleared and no_new_privs is set. The validate_command, which
 * is executed as root, therefore gets at most PRIVS_KEEP (no_new_privs caps
 * an exec at the caller's permitted set; the bounding set caps it too).
 *
 * Capabilities, the bounding set and no_new_privs belong to a thread, not to
 * the process: privs_drop must run before any thread exists (before the gRPC
 * plugin starts its threads) and refuses when there is more than one.
 *
 * Why each capability is kept (privs_cap_reason gives the same text):
 *   CAP_CHOWN            config apply gives a rewritten file its old owner
 *                        and group (a file not owned by root)
 *   CAP_DAC_OVERRIDE     read and write managed files and directories, and
 *                        read logs, that root does not own or that have no
 *                        permission bits for root's uid (covers reading too,
 *                        so CAP_DAC_READ_SEARCH is not kept)
 *   CAP_FOWNER           restore the mode and times of a rewritten file
 *                        once it belongs to its old owner again
 *   CAP_KILL             send reload_signal to a onepanel master that runs
 *                        as another user
 *   CAP_NET_BIND_SERVICE the validate_command ("nginx -t" binds the listen
 *                        ports, below 1024 for a web server) inherits only
 *                        what the agent keeps; a SIGHUP that moves the REST
 *                        listener to a port below 1024
 *   CAP_SYS_PTRACE       /proc/PID/exe, fd and io of processes of other
 *                        users (nginx workers run as www-data)
 *   CAP_BPF, CAP_PERFMON load and attach tracing programs after start:
 *                        syscall investigations (loaded at the first one),
 *                        scheduler delay and process events switched or
 *                        re-opened by a SIGHUP
 * Dropped, among all the others: CAP_NET_ADMIN (the proc connector is bound
 * at start and kept open across SIGHUP; a connector needed for the first
 * time later falls back to rescanning /proc on kernels that require it),
 * CAP_SYS_ADMIN, CAP_SYS_RESOURCE (BPF memory is charged to the memory
 * cgroup since 5.11; libbpf then leaves RLIMIT_MEMLOCK alone), CAP_SETUID,
 * CAP_SETGID, CAP_SETPCAP, CAP_SYS_MODULE, CAP_DAC_READ_SEARCH.
 *
 * Nothing here allocates; privs_read and privs_format are safe to call from
 * the status handler at any time. */
#ifndef OS_PRIVS_H
#define OS_PRIVS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRIVS_BIT(cap) (1ULL << (cap))
/* The kept set (numbers from <linux/capability.h>, spelled out so the
 * header does not depend on the libc's view of the newest capabilities). */
#define PRIVS_CAP_CHOWN 0
#define PRIVS_CAP_DAC_OVERRIDE 1
#define PRIVS_CAP_FOWNER 3
#define PRIVS_CAP_KILL 5
#define PRIVS_CAP_NET_BIND_SERVICE 10
#define PRIVS_CAP_SYS_PTRACE 19
#define PRIVS_CAP_PERFMON 38
#define PRIVS_CAP_BPF 39
#define PRIVS_KEEP                                                                                          \
	(PRIVS_BIT(PRIVS_CAP_CHOWN) | PRIVS_BIT(PRIVS_CAP_DAC_OVERRIDE) | PRIVS_BIT(PRIVS_CAP_FOWNER) |     \
	 PRIVS_BIT(PRIVS_CAP_KILL) | PRIVS_BIT(PRIVS_CAP_NET_BIND_SERVICE) | PRIVS_BIT(PRIVS_CAP_SYS_PTRACE) | \
	 PRIVS_BIT(PRIVS_CAP_PERFMON) | PRIVS_BIT(PRIVS_CAP_BPF))

/* The calling thread's sets, as bit masks (bit N = capability N). */
struct privs_state {
	uint64_t effective, permitted, inheritable, bounding, ambient;
	bool no_new_privs;
};

/* 0 or -errno. */
int privs_read(struct privs_state *st);

/* Keep only keep & permitted (see the top of this file). 0 when every step
 * worked; otherwise -errno with err saying which step failed (the steps
 * that can still be taken are taken: a process without CAP_SETPCAP keeps
 * its bounding set but still lowers its sets and sets no_new_privs). *after
 * is the state read back in both cases. */
int privs_drop(uint64_t keep, struct privs_state *after, char *err, size_t errlen);

/* "cap_chown" ... for 0..63 ("cap_41" for numbers this file does not name). */
const char *privs_cap_name(int cap, char *buf, size_t len);
/* Why a capability of PRIVS_KEEP is kept; NULL for the others. */
const char *privs_cap_reason(int cap);
/* "cap_chown,cap_kill" (lowest first), "none" for 0; truncated to len. */
size_t privs_format(uint64_t mask, char *out, size_t len);
/* The value of a "Field:\tvalue" line of a /proc/PID/status text, in base
 * 16 ("CapEff") or 10 ("Threads"); 0, or -ENOENT / -EINVAL. */
int privs_status_value(const char *status, const char *field, int base, uint64_t *out);

#endif
