/* Process lifecycle through eBPF (see proclife.h for what is reported).
 *
 * Loading follows libbpf-bootstrap: open the skeleton, set rodata and map
 * sizes, load, attach; every failure goes to one cleanup path. The flavour
 * is chosen by trying: tp_btf where the kernel's BTF has the tracepoint's
 * typedef, else raw_tp, else classic tracepoints where tracefs has them. A
 * flavour that fails to load or attach is torn down and the next one is
 * tried from a fresh skeleton (a loaded object cannot be reloaded); the
 * reasons are kept so the caller can say in one line why eBPF mode is off.
 *
 * libbpf messages are routed to our log at debug level while we load (the
 * verifier log of a failed program can be hundreds of lines); the first
 * warning of a failed attempt is kept for the reason. The previous libbpf
 * print callback is restored afterwards: other modules may have set one.
 *
 * Events are consumed on readiness of the ring buffer's epoll fd, which is a
 * source in the core loop. Closing from inside the event callback is allowed:
 * the handle is only marked, and freed once ring_buffer__consume() returned. */
#include "proclife.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "loop.h"
#include "procfs.h"
/* The skeleton is generated with "name proclife": its struct would take the
 * name of our handle. */
#define proclife proclife_skel
#include "proclife.skel.h"
#undef proclife

#define DEFAULT_RINGBUF_KIB 256u
#define DEFAULT_MAX_TRACKED 8192u
#define MAX_RINGBUF_KIB     (1u << 20)   /* 1 GiB: a typo, not a wish */
#define MAX_TRACKED         (1u << 20)
#define NVARIANTS           3

struct proclife {
	struct proclife_skel *skel;
	struct ring_buffer *rb;
	struct loop *loop;
	struct loop_io *io;
	proclife_event_fn fn;
	void *arg;
	enum proclife_variant variant;
	int ncpus;
	bool dispatching;
	bool close_pending;
	uint64_t delivered;
	uint64_t malformed;
};

static const char *const variant_names[] = {
	[PROCLIFE_VARIANT_AUTO] = "auto",
	[PROCLIFE_VARIANT_TP_BTF] = "tp_btf",
	[PROCLIFE_VARIANT_RAW_TP] = "raw_tp",
	[PROCLIFE_VARIANT_TP] = "tp",
};

/* ---- libbpf messages ---- */

static char first_warn[160];

/* Bounded copy that always terminates (truncation is fine for messages). */
static void copy_str(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);

	if (!n)
		return;
	if (l >= n)
		l = n - 1;
	memcpy(dst, src, l);
	dst[l] = '\0';
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	if (level == LIBBPF_DEBUG && !log_enabled(LL_DEBUG))
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	if (level == LIBBPF_WARN && !first_warn[0] && strncmp(line, "libbpf: ", 8) == 0)
		copy_str(first_warn, sizeof(first_warn), line + 8);
	log_debug("libbpf: %s", strncmp(line, "libbpf: ", 8) == 0 ? line + 8 : line);
	return 0;
}

/* ---- probing ---- */

static bool tracefs_has(const char *event)
{
	static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	char path[256];

	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		snprintf(path, sizeof(path), "%s/events/sched/%s/id", roots[i], event);
		if (access(path, R_OK) == 0)
			return true;
	}
	return false;
}

/* 0 when the flavour may work here, else -errno with why set. btf is the
 * kernel's BTF (NULL when there is none). */
static int variant_usable(enum proclife_variant v, const struct btf *btf, char *why, size_t len)
{
	static const char *const tps[] = { "sched_process_exec", "sched_process_fork", "sched_process_exit" };

	for (size_t i = 0; i < sizeof(tps) / sizeof(tps[0]); i++) {
		char name[64];

		switch (v) {
		case PROCLIFE_VARIANT_TP_BTF:
			snprintf(name, sizeof(name), "btf_trace_%s", tps[i]);
			if (btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF) < 0) {
				snprintf(why, len, "kernel BTF has no %s", name);
				return -EOPNOTSUPP;
			}
			break;
		case PROCLIFE_VARIANT_TP:
			if (!tracefs_has(tps[i])) {
				snprintf(why, len, "no tracefs event sched/%s (tracefs not mounted?)", tps[i]);
				return -ENOENT;
			}
			break;
		default:
			break;
		}
	}
	return 0;
}

/* Can we use BPF at all, and does the kernel have ring buffers? One tiny
 * map says both, with a reason a user can act on. */
static int probe_bpf(char *why, size_t len)
{
	int fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "pl_probe", 0, 0, (__u32)sysconf(_SC_PAGESIZE), NULL);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	fd = -errno;
	if (fd == -EPERM || fd == -EACCES)
		snprintf(why, len, "BPF not permitted (needs root, or CAP_BPF and CAP_PERFMON)");
	else if (fd == -EINVAL)
		snprintf(why, len, "no BPF ring buffer in this kernel (older than 5.8?)");
	else if (fd == -ENOSYS)
		snprintf(why, len, "kernel without the bpf() system call");
	else
		snprintf(why, len, "BPF map creation failed: %s", strerror(-fd));
	return fd;
}

static void set_autoload(struct proclife_skel *s, enum proclife_variant v)
{
	bool btf = v == PROCLIFE_VARIANT_TP_BTF, raw = v == PROCLIFE_VARIANT_RAW_TP, tp = v == PROCLIFE_VARIANT_TP;

	bpf_program__set_autoload(s->progs.pl_exec_btf, btf);
	bpf_program__set_autoload(s->progs.pl_fork_btf, btf);
	bpf_program__set_autoload(s->progs.pl_exit_btf, btf);
	bpf_program__set_autoload(s->progs.pl_exec_raw, raw);
	bpf_program__set_autoload(s->progs.pl_fork_raw, raw);
	bpf_program__set_autoload(s->progs.pl_exit_raw, raw);
	bpf_program__set_autoload(s->progs.pl_exec_tp, tp);
	bpf_program__set_autoload(s->progs.pl_fork_tp, tp);
	bpf_program__set_autoload(s->progs.pl_exit_tp, tp);
}

static unsigned int ringbuf_bytes(unsigned int kib)
{
	unsigned int want = (kib ? kib : DEFAULT_RINGBUF_KIB) * 1024u;
	unsigned int page = (unsigned int)sysconf(_SC_PAGESIZE);
	unsigned int sz = page;

	while (sz < want)
		sz <<= 1;
	return sz;
}

/* One attempt: open, rodata, sizes, load, attach. On failure the skeleton is
 * destroyed and why says which step failed. */
static int try_variant(struct proclife *p, const struct proclife_opts *o, enum proclife_variant v,
		       char *why, size_t len)
{
	struct proclife_skel *s;
	long tck = sysconf(_SC_CLK_TCK);
	const char *step;
	int err;

	first_warn[0] = '\0';
	step = "open";
	s = proclife__open();
	if (!s) {
		err = -errno;
		goto fail;
	}
	if (o->comm)
		memcpy((char *)s->rodata->cfg_comm, o->comm, strlen(o->comm));
	if (o->basename_prefix) {
		memcpy((char *)s->rodata->cfg_base, o->basename_prefix, strlen(o->basename_prefix));
		s->rodata->cfg_base_len = (unsigned int)strlen(o->basename_prefix);
	}
	s->rodata->cfg_manual_track = o->manual_track;
	s->rodata->cfg_tick_ns = tck > 0 ? 1000000000ull / (unsigned long long)tck : 10000000ull;
	set_autoload(s, v);

	step = "configure maps";
	err = bpf_map__set_max_entries(s->maps.events, ringbuf_bytes(o->ringbuf_kib));
	if (!err)
		err = bpf_map__set_max_entries(s->maps.tracked, o->max_tracked ? o->max_tracked : DEFAULT_MAX_TRACKED);
	if (err)
		goto fail;

	step = "load";
	err = proclife__load(s);
	if (err)
		goto fail;
	step = "attach";
	err = proclife__attach(s);
	if (err)
		goto fail;
	p->skel = s;
	p->variant = v;
	return 0;

fail:
	if (err >= 0)
		err = -EINVAL;
	snprintf(why, len, "%s: %s: %s%s%s", variant_names[v], step, strerror(-err),
		 first_warn[0] ? " (" : "", first_warn[0] ? first_warn : "");
	if (first_warn[0])
		strncat(why, ")", len - strlen(why) - 1);
	proclife__destroy(s);
	return err;
}

/* ---- events ---- */

static int on_record(void *ctx, void *data, size_t size)
{
	struct proclife *p = ctx;
	struct proclife_event ev;

	if (p->close_pending)
		return -ECANCELED;
	if (size < sizeof(ev)) {
		p->malformed++;
		return 0;
	}
	/* A copy: the record is in memory the kernel writes into, and the
	 * strings must be terminated whatever the program wrote. */
	memcpy(&ev, data, sizeof(ev));
	ev.comm[sizeof(ev.comm) - 1] = '\0';
	ev.filename[sizeof(ev.filename) - 1] = '\0';
	p->delivered++;
	p->fn(p->arg, &ev);
	return 0;
}

static void destroy(struct proclife *p)
{
	loop_io_del(p->loop, p->io);
	ring_buffer__free(p->rb);
	proclife__destroy(p->skel);
	free(p);
}

int proclife_consume(struct proclife *p)
{
	int n;

	if (p->dispatching)
		return -EBUSY;
	p->dispatching = true;
	n = ring_buffer__consume(p->rb);
	p->dispatching = false;
	if (p->close_pending) {
		destroy(p);
		return 0;
	}
	if (n < 0 && n != -ECANCELED && n != -EINTR)
		log_warn("proclife: consuming events: %s", strerror(-n));
	return n;
}

static void on_ready(void *arg, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	proclife_consume(arg);
}

/* ---- open / close ---- */

static int check_name(const char *what, const char *s, char *why, size_t len)
{
	if (s && (!s[0] || strlen(s) >= PROCLIFE_COMM_LEN)) {
		snprintf(why, len, "%s must be 1-%d characters", what, PROCLIFE_COMM_LEN - 1);
		return -EINVAL;
	}
	return 0;
}

int proclife_open(struct loop *l, const struct proclife_opts *o, proclife_event_fn fn, void *arg,
		  struct proclife **out, char *why, size_t whylen)
{
	static const enum proclife_variant order[NVARIANTS] = {
		PROCLIFE_VARIANT_TP_BTF, PROCLIFE_VARIANT_RAW_TP, PROCLIFE_VARIANT_TP,
	};
	bool usable[NVARIANTS];
	int usable_err[NVARIANTS] = { 0 };
	struct proclife_opts none = { 0 };
	libbpf_print_fn_t old_print;
	struct proclife *p = NULL;
	struct btf *btf = NULL;
	char dummy[8], reason[512] = "", one[256];
	int err;

	if (!why) {
		why = dummy;
		whylen = sizeof(dummy);
	}
	why[0] = '\0';
	*out = NULL;
	if (!o)
		o = &none;
	if (!l || !fn) {
		snprintf(why, whylen, "proclife: no loop or callback");
		return -EINVAL;
	}
	err = check_name("comm", o->comm, one, sizeof(one));
	if (!err)
		err = check_name("basename_prefix", o->basename_prefix, one, sizeof(one));
	if (!err && (unsigned int)o->variant > PROCLIFE_VARIANT_TP) {
		snprintf(one, sizeof(one), "unknown variant %d", (int)o->variant);
		err = -EINVAL;
	}
	if (!err && (o->ringbuf_kib > MAX_RINGBUF_KIB || o->max_tracked > MAX_TRACKED)) {
		snprintf(one, sizeof(one), "ringbuf_kib or max_tracked too large");
		err = -EINVAL;
	}
	if (err) {
		snprintf(why, whylen, "proclife: %s", one);
		return err;
	}

	old_print = libbpf_set_print(libbpf_print);
	p = calloc(1, sizeof(*p));
	if (!p) {
		err = -ENOMEM;
		snprintf(reason, sizeof(reason), "out of memory");
		goto cleanup;
	}
	p->loop = l;
	p->fn = fn;
	p->arg = arg;
	p->ncpus = libbpf_num_possible_cpus();
	if (p->ncpus <= 0) {
		err = p->ncpus ? p->ncpus : -EINVAL;
		snprintf(reason, sizeof(reason), "cannot count possible CPUs: %s", strerror(-err));
		goto cleanup;
	}

	/* CO-RE needs the kernel's BTF whatever the flavour. */
	btf = btf__load_vmlinux_btf();
	if (!btf) {
		err = errno ? -errno : -ENOENT;
		snprintf(reason, sizeof(reason), "no kernel BTF (/sys/kernel/btf/vmlinux): %s", strerror(-err));
		goto cleanup;
	}
	err = probe_bpf(reason, sizeof(reason));
	if (err)
		goto cleanup;

	/* Which flavours may work, decided before loading anything: the
	 * kernel BTF (several MB parsed) is freed before libbpf parses its own
	 * copy during the load. */
	for (size_t i = 0; i < NVARIANTS; i++) {
		enum proclife_variant v = order[i];

		usable[i] = o->variant == PROCLIFE_VARIANT_AUTO || o->variant == v;
		if (usable[i] && (usable_err[i] = variant_usable(v, btf, one, sizeof(one)))) {
			usable[i] = false;
			snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason), "%s%s: %s",
				 reason[0] ? "; " : "", variant_names[v], one);
			err = usable_err[i];
		}
	}
	btf__free(btf);
	btf = NULL;

	if (!err)
		err = -EOPNOTSUPP;
	for (size_t i = 0; i < NVARIANTS; i++) {
		enum proclife_variant v = order[i];
		int e;

		if (!usable[i])
			continue;
		e = try_variant(p, o, v, one, sizeof(one));
		if (!e) {
			err = 0;
			break;
		}
		snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason), "%s%s", reason[0] ? "; " : "", one);
		err = e;
	}
	if (err)
		goto cleanup;

	p->rb = ring_buffer__new(bpf_map__fd(p->skel->maps.events), on_record, p, NULL);
	if (!p->rb) {
		err = errno ? -errno : -ENOMEM;
		snprintf(reason, sizeof(reason), "ring buffer: %s", strerror(-err));
		goto cleanup;
	}
	p->io = loop_io_add(l, ring_buffer__epoll_fd(p->rb), EPOLLIN, on_ready, p);
	if (!p->io) {
		err = errno ? -errno : -ENOMEM;
		snprintf(reason, sizeof(reason), "loop: %s", strerror(-err));
		goto cleanup;
	}
	libbpf_set_print(old_print);
	log_debug("proclife: attached (%s), comm=%s basename_prefix=%s", variant_names[p->variant],
		  o->comm ? o->comm : "-", o->basename_prefix ? o->basename_prefix : "-");
	*out = p;
	return 0;

cleanup:
	btf__free(btf);
	if (p)
		destroy(p);
	libbpf_set_print(old_print);
	snprintf(why, whylen, "%s", reason);
	return err;
}

void proclife_close(struct proclife *p)
{
	if (!p)
		return;
	if (p->dispatching) {
		p->close_pending = true;
		return;
	}
	destroy(p);
}

const char *proclife_variant(const struct proclife *p)
{
	return variant_names[p->variant];
}

/* ---- the tracked set ---- */

/* Start ticks of pid from /proc/PID/stat. */
static int start_ticks(pid_t pid, uint64_t *ticks)
{
	char path[64], text[1024];
	struct proc_info pi;
	ssize_t n;
	int fd, err;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, text, sizeof(text) - 1);
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		return err == -ESRCH ? -ESRCH : err;
	if (n == 0)
		return -ESRCH;  /* a process that just died reads empty */
	text[n] = '\0';
	memset(&pi, 0, sizeof(pi));
	err = procfs_parse_stat(text, (size_t)n, &pi);
	if (err)
		return err;
	*ticks = pi.start_ticks;
	return 0;
}

int proclife_track(struct proclife *p, pid_t tgid)
{
	struct proclife_tracked t = { .how = PROCLIFE_HOW_USER };
	__u32 key = (__u32)tgid;
	uint64_t ticks, again;
	int err;

	if (tgid <= 0)
		return -EINVAL;
	err = start_ticks(tgid, &ticks);
	if (err)
		return err;
	t.start_ticks = ticks;
	err = bpf_map__update_elem(p->skel->maps.tracked, &key, sizeof(key), &t, sizeof(t), BPF_ANY);
	if (err)
		return err == -E2BIG ? -ENOSPC : err;
	/* Exited between the read and the insert? Then the kernel never saw
	 * the entry at the exit and it would stay: take it back. */
	if (start_ticks(tgid, &again) || again != ticks) {
		bpf_map__delete_elem(p->skel->maps.tracked, &key, sizeof(key), 0);
		return -ESRCH;
	}
	return 0;
}

int proclife_untrack(struct proclife *p, pid_t tgid)
{
	__u32 key = (__u32)tgid;

	return bpf_map__delete_elem(p->skel->maps.tracked, &key, sizeof(key), 0);
}

int proclife_is_tracked(struct proclife *p, pid_t tgid)
{
	struct proclife_tracked t;
	__u32 key = (__u32)tgid;
	int err = bpf_map__lookup_elem(p->skel->maps.tracked, &key, sizeof(key), &t, sizeof(t), 0);

	if (err == -ENOENT)
		return 0;
	return err ? err : 1;
}

/* ---- counters and self-cost ---- */

int proclife_counters(struct proclife *p, struct proclife_counters *out)
{
	uint64_t sum[PROCLIFE_CNT_MAX];
	size_t vlen = (size_t)p->ncpus * sizeof(uint64_t);
	uint64_t *vals = calloc((size_t)p->ncpus, sizeof(uint64_t));

	if (!vals)
		return -ENOMEM;
	for (__u32 k = 0; k < PROCLIFE_CNT_MAX; k++) {
		int err = bpf_map__lookup_elem(p->skel->maps.counters, &k, sizeof(k), vals, vlen, 0);

		if (err) {
			free(vals);
			return err;
		}
		sum[k] = 0;
		for (int c = 0; c < p->ncpus; c++)
			sum[k] += vals[c];
	}
	free(vals);
	memset(out, 0, sizeof(*out));
	out->execs = sum[PROCLIFE_CNT_EXEC];
	out->forks = sum[PROCLIFE_CNT_FORK];
	out->exits = sum[PROCLIFE_CNT_EXIT];
	out->ringbuf_drops = sum[PROCLIFE_CNT_RB_DROP];
	out->track_full = sum[PROCLIFE_CNT_TRACK_FULL];
	out->stale_tracked = sum[PROCLIFE_CNT_STALE];
	out->events_emitted = sum[PROCLIFE_CNT_EMITTED];
	out->events_delivered = p->delivered;
	out->events_malformed = p->malformed;
	return 0;
}

int proclife_prog_stats(struct proclife *p, struct proclife_prog_stat *out, size_t max)
{
	struct bpf_program *prog;
	size_t n = 0;

	bpf_object__for_each_program(prog, p->skel->obj) {
		struct bpf_prog_info info;
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(prog), err;

		if (fd < 0 || n == max)
			continue;
		memset(&info, 0, sizeof(info));
		err = bpf_obj_get_info_by_fd(fd, &info, &len);
		if (err)
			return err;
		out[n].name = bpf_program__name(prog);
		out[n].id = info.id;
		out[n].run_cnt = info.run_cnt;
		out[n].run_time_ns = info.run_time_ns;
		out[n].recursion_misses = info.recursion_misses;
		n++;
	}
	return (int)n;
}

int proclife_bpf_stats_enabled(void)
{
	char c = 0;
	int fd = open("/proc/sys/kernel/bpf_stats_enabled", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, &c, 1);
	close(fd);
	if (n != 1)
		return -EIO;
	return c == '1';
}

uint64_t proclife_ns_to_ticks(uint64_t ns)
{
	static uint64_t tick_ns;

	if (!tick_ns) {
		long tck = sysconf(_SC_CLK_TCK);

		tick_ns = tck > 0 ? 1000000000ull / (uint64_t)tck : 10000000ull;
	}
	return ns / tick_ns;
}
