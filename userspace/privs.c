/* Least privilege after start-up (see privs.h for the kept set and why).
 *
 * Raw capget/capset and prctl: the agent links neither libcap nor
 * libcap-ng, and what it needs is four system calls. The order matters:
 * the bounding set can only shrink while CAP_SETPCAP is effective, so it
 * goes first, CAP_SETPCAP itself included (leaving the bounding set does
 * not take a capability out of the effective set); capset then lowers the
 * permitted and effective sets, which takes CAP_SETPCAP away for good. */
#include "privs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const cap_names[] = {
	"cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
	"cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
	"cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner",
	"cap_sys_module", "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct",
	"cap_sys_admin", "cap_sys_boot", "cap_sys_nice", "cap_sys_resource", "cap_sys_time",
	"cap_sys_tty_config", "cap_mknod", "cap_lease", "cap_audit_write", "cap_audit_control",
	"cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog", "cap_wake_alarm",
	"cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
};
#define NNAMES (int)(sizeof(cap_names) / sizeof(cap_names[0]))

const char *privs_cap_name(int cap, char *buf, size_t len)
{
	if (cap >= 0 && cap < NNAMES)
		return cap_names[cap];
	snprintf(buf, len, "cap_%d", cap);
	return buf;
}

const char *privs_cap_reason(int cap)
{
	switch (cap) {
	case PRIVS_CAP_CHOWN:
		return "config apply: give a rewritten file its old owner and group";
	case PRIVS_CAP_DAC_OVERRIDE:
		return "config apply and logs: read and write files and directories root does not own";
	case PRIVS_CAP_FOWNER:
		return "config apply: restore the mode and times of a file owned by another user";
	case PRIVS_CAP_KILL:
		return "reload: signal a onepanel master running as another user";
	case PRIVS_CAP_NET_BIND_SERVICE:
		return "the validate_command (nginx -t binds ports below 1024) and a REST listener moved by SIGHUP";
	case PRIVS_CAP_SYS_PTRACE:
		return "/proc/PID/exe, fd and io of processes of other users";
	case PRIVS_CAP_PERFMON:
	case PRIVS_CAP_BPF:
		return "eBPF programs loaded or attached after start (investigations, SIGHUP)";
	default:
		return NULL;
	}
}

size_t privs_format(uint64_t mask, char *out, size_t len)
{
	size_t n = 0;
	char num[16];
	if (!len)
		return 0;
	out[0] = '\0';
	if (!mask) {
		snprintf(out, len, "none");
		return strlen(out);
	}
	for (int cap = 0; cap < 64; cap++) {
		if (!(mask & PRIVS_BIT(cap)))
			continue;
		int w = snprintf(out + n, len - n, "%s%s", n ? "," : "", privs_cap_name(cap, num, sizeof(num)));
		if (w < 0 || (size_t)w >= len - n) {
			out[len - 1] = '\0';
			return len - 1;
		}
		n += (size_t)w;
	}
	return n;
}

int privs_status_value(const char *status, const char *field, int base, uint64_t *out)
{
	size_t fl = strlen(field);
	for (const char *p = status; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, field, fl) != 0 || p[fl] != ':')
			continue;
		const char *v = p + fl + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		char *end;
		errno = 0;
		unsigned long long x = strtoull(v, &end, base);
		if (end == v || errno || (*end && *end != '\n' && *end != ' '))
			return -EINVAL;
		*out = x;
		return 0;
	}
	return -ENOENT;
}

/* A small /proc file as a string; 0 or -1. */
static int read_proc(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* Highest capability number the kernel knows. */
static int last_cap(void)
{
	char buf[16];
	if (read_proc("/proc/sys/kernel/cap_last_cap", buf, sizeof(buf)) == 0) {
		int v = atoi(buf);
		if (v > 0 && v < 64)
			return v;
	}
	int cap = 0;
	while (cap < 63 && prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0)
		cap++;
	return cap;
}

int privs_read(struct privs_state *st)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	memset(st, 0, sizeof(*st));
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &hdr, d) < 0)
		return -errno;
	st->effective = d[0].effective | (uint64_t)d[1].effective << 32;
	st->permitted = d[0].permitted | (uint64_t)d[1].permitted << 32;
	st->inheritable = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
	int last = last_cap();
	for (int cap = 0; cap <= last; cap++) {
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) > 0)
			st->bounding |= PRIVS_BIT(cap);
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) > 0)
			st->ambient |= PRIVS_BIT(cap);
	}
	int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	st->no_new_privs = nnp > 0;
	return 0;
}

/* Threads of this process, from /proc/self/status; 0 when unknown. */
static uint64_t thread_count(void)
{
	char buf[4096];
	uint64_t n = 0;
	if (read_proc("/proc/self/status", buf, sizeof(buf)))
		return 0;
	return privs_status_value(buf, "Threads", 10, &n) == 0 ? n : 0;
}

static void note(int *rc, int e, char *err, size_t errlen, const char *what)
{
	if (*rc)
		return;
	*rc = -e;
	snprintf(err, errlen, "%s: %s", what, strerror(e));
}

int privs_drop(uint64_t keep, struct privs_state *after, char *err, size_t errlen)
{
	struct privs_state before;
	char num[16], what[64];
	int rc = 0;

	err[0] = '\0';
	uint64_t threads = thread_count();
	if (threads > 1) {
		/* capset and prctl change the calling thread only */
		snprintf(err, errlen, "%llu threads are running; capabilities belong to each thread",
			 (unsigned long long)threads);
		privs_read(after);
		return -EBUSY;
	}
	int e = privs_read(&before);
	if (e) {
		snprintf(err, errlen, "capget: %s", strerror(-e));
		privs_read(after);
		return e;
	}
	uint64_t want = keep & before.permitted;

	int last = last_cap();
	for (int cap = 0; cap <= last; cap++) {
		if ((keep & PRIVS_BIT(cap)) || !(before.bounding & PRIVS_BIT(cap)))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			snprintf(what, sizeof(what), "bounding set: dropping %s", privs_cap_name(cap, num, sizeof(num)));
			note(&rc, errno, err, errlen, what);
			if (errno == EPERM)
				break; /* no CAP_SETPCAP: every other drop fails the same way */
		}
	}
	/* EINVAL: a kernel without ambient capabilities (< 4.3) has none to clear */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		note(&rc, errno, err, errlen, "clearing the ambient set");

	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = (uint32_t)want;
	d[1].effective = d[1].permitted = (uint32_t)(want >> 32);
	if (syscall(SYS_capset, &hdr, d) < 0)
		note(&rc, errno, err, errlen, "capset");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		note(&rc, errno, err, errlen, "PR_SET_NO_NEW_PRIVS");

	e = privs_read(after);
	if (e) {
		note(&rc, -e, err, errlen, "capget after the drop");
		return rc;
	}
	if (!rc && (after->effective != want || after->permitted != want || after->inheritable ||
		    after->ambient || (after->bounding & ~keep) || !after->no_new_privs)) {
		rc = -EPERM;
		snprintf(err, errlen, "the sets read back differ from the ones set");
	}
	return rc;
}
