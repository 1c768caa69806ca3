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
 * Transport: the ring buffer when libbpf_probe_bpf_map_type() says the
 * kernel can create one, else a perf buffer per CPU (the BPF side writes to
 * the one cfg_use_perfbuf names; the other map is not created). Whichever it
 * is, its epoll fd is a source in the core loop and events are consumed on
 * readiness. The ring buffer is delivered record by record, in write order.
 * Perf buffers are read into a batch first: passes over all CPUs until one
 * finds nothing new, then the batch is sorted by ts_ns and delivered. The
 * empty last pass is what makes the order hold across CPUs: an event written
 * before another one that was read is written before that pass looked at
 * its CPU, so it is in this batch or an earlier one. The batch is bounded
 * (what the buffers hold, at most BATCH_MAX); a fuller one is delivered in
 * sorted chunks. Perf buffer wakeups come with every record, and after the
 * first pass everything still queued was written after the loop's last
 * poll, so stopping after PERFBUF_MAX_PASSES never strands records.
 *
 * Closing from inside the event callback is allowed: the handle is only
 * marked, and freed once the consume call returned. */
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
#include <linux/perf_event.h>

#include "bpfload.h"
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
#define DEFAULT_PERFBUF_KIB 64u          /* per CPU */
#define MAX_PERFBUF_KIB     (1u << 18)   /* per CPU */
#define BATCH_MIN           64u
#define BATCH_MAX           4096u        /* events sorted together (1.4 MB) */
#define PERFBUF_MAX_PASSES  16

/* An event's place in the perf buffer batch, sorted by time, then arrival. */
struct batch_key {
	uint64_t ts;
	uint32_t idx;
};

struct proclife {
	struct proclife_skel *skel;
	struct ring_buffer *rb;         /* transport RINGBUF */
	struct perf_buffer *pb;         /* transport PERFBUF */
	struct loop *loop;
	struct loop_io *io;
	proclife_event_fn fn;
	void *arg;
	enum proclife_variant variant;
	enum proclife_transport transport;
	bool dispatching;
	bool close_pending;
	uint64_t delivered;
	uint64_t malformed;
	uint64_t lost;                  /* PERF_RECORD_LOST counts */
	/* Perf buffer batch: events in arrival order, their keys in ts order. */
	struct proclife_event *batch;
	struct batch_key *keys;
	size_t nbatch, batch_cap, batch_max;
	uint64_t records_read;          /* samples and lost records, for the pass loop */
};

static const char *const variant_names[] = {
	[PROCLIFE_VARIANT_AUTO] = "auto",
	[PROCLIFE_VARIANT_TP_BTF] = "tp_btf",
	[PROCLIFE_VARIANT_RAW_TP] = "raw_tp",
	[PROCLIFE_VARIANT_TP] = "tp",
};

static const char *const transport_names[] = {
	[PROCLIFE_TRANSPORT_AUTO] = "auto",
	[PROCLIFE_TRANSPORT_RINGBUF] = "ringbuf",
	[PROCLIFE_TRANSPORT_PERFBUF] = "perfbuf",
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

/* Can we use BPF at all? One tiny array map says, with a reason a user can
 * act on (libbpf's feature probes cannot tell "not permitted" from "not
 * supported", so this comes first). */
static int probe_bpf(char *why, size_t len)
{
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "pl_probe", sizeof(__u32), sizeof(__u32), 1, NULL);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	fd = -errno;
	if (fd == -EPERM || fd == -EACCES)
		snprintf(why, len, "BPF not permitted (needs root, or CAP_BPF and CAP_PERFMON)");
	else if (fd == -ENOSYS)
		snprintf(why, len, "kernel without the bpf() system call");
	else
		snprintf(why, len, "BPF map creation failed: %s", strerror(-fd));
	return fd;
}

/* Which transport: the one asked for, or the ring buffer where the kernel
 * can create one. 0 or -errno with why set. */
static int choose_transport(enum proclife_transport want, enum proclife_transport *out, char *why, size_t len)
{
	int rb;

	if (want == PROCLIFE_TRANSPORT_PERFBUF) {
		*out = want;
		return 0;
	}
	rb = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL);
	if (rb == 1) {
		*out = PROCLIFE_TRANSPORT_RINGBUF;
		return 0;
	}
	if (want == PROCLIFE_TRANSPORT_RINGBUF) {
		if (rb < 0)
			snprintf(why, len, "probing for BPF ring buffers: %s", strerror(-rb));
		else
			snprintf(why, len, "no BPF ring buffer in this kernel (older than 5.8?)");
		return rb < 0 ? rb : -EOPNOTSUPP;
	}
	log_debug("proclife: no BPF ring buffer (%s), using perf buffers",
		  rb < 0 ? strerror(-rb) : "kernel older than 5.8?");
	*out = PROCLIFE_TRANSPORT_PERFBUF;
	return 0;
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

/* Pages per CPU for a perf buffer: a power of 2, at least 1. */
static size_t perfbuf_pages(unsigned int kib)
{
	size_t want = (size_t)(kib ? kib : DEFAULT_PERFBUF_KIB) * 1024u;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t n = 1;

	while (n * page < want)
		n <<= 1;
	return n;
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
		       enum proclife_transport t, char *why, size_t len)
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
	s->rodata->cfg_use_perfbuf = t == PROCLIFE_TRANSPORT_PERFBUF;
	set_autoload(s, v);

	/* The map of the other transport is not created (a kernel without
	 * ring buffers could not): libbpf poisons the loads of its address,
	 * which sit in the branch cfg_use_perfbuf makes dead. */
	step = "configure maps";
	if (t == PROCLIFE_TRANSPORT_PERFBUF) {
		err = bpf_map__set_autocreate(s->maps.events, false);
	} else {
		err = bpf_map__set_autocreate(s->maps.events_perf, false);
		if (!err)
			err = bpf_map__set_max_entries(s->maps.events, ringbuf_bytes(o->ringbuf_kib));
	}
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
	p->transport = t;
	return 0;

fail:
	if (err >= 0)
		err = -EINVAL;
	snprintf(why, len, "%s/%s: %s: %s%s%s", variant_names[v], transport_names[t], step, strerror(-err),
		 first_warn[0] ? " (" : "", first_warn[0] ? first_warn : "");
	if (first_warn[0])
		strncat(why, ")", len - strlen(why) - 1);
	proclife__destroy(s);
	return err;
}

/* ---- events ---- */

/* ev: our own copy (the strings must be terminated whatever the program
 * wrote). */
static void deliver(struct proclife *p, struct proclife_event *ev)
{
	ev->comm[sizeof(ev->comm) - 1] = '\0';
	ev->filename[sizeof(ev->filename) - 1] = '\0';
	p->delivered++;
	p->fn(p->arg, ev);
}

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
	/* A copy: the record is in memory the kernel writes into. */
	memcpy(&ev, data, sizeof(ev));
	deliver(p, &ev);
	return 0;
}

static int cmp_key(const void *a, const void *b)
{
	const struct batch_key *x = a, *y = b;

	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Deliver the batch in ts order and empty it. The callback may close the
 * handle: the rest of the batch is then dropped. */
static void flush(struct proclife *p)
{
	size_t n = p->nbatch;

	p->nbatch = 0;
	qsort(p->keys, n, sizeof(p->keys[0]), cmp_key);
	for (size_t i = 0; i < n && !p->close_pending; i++)
		deliver(p, &p->batch[p->keys[i].idx]);
}

/* Room for one more event: grow up to batch_max, else deliver what is
 * there. -ENOMEM when even the first allocation failed. */
static int batch_room(struct proclife *p)
{
	size_t cap;
	void *b, *k;

	if (p->nbatch < p->batch_cap)
		return 0;
	if (p->batch_cap < p->batch_max) {
		cap = p->batch_cap ? p->batch_cap * 2 : BATCH_MIN;
		if (cap > p->batch_max)
			cap = p->batch_max;
		b = realloc(p->batch, cap * sizeof(p->batch[0]));
		if (b)
			p->batch = b;
		k = b ? realloc(p->keys, cap * sizeof(p->keys[0])) : NULL;
		if (k) {
			p->keys = k;
			p->batch_cap = cap;
			return 0;
		}
	}
	if (!p->batch_cap)
		return -ENOMEM;
	flush(p);
	return 0;
}

static void on_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct proclife *p = ctx;
	struct proclife_event *ev;

	(void)cpu;
	p->records_read++;
	if (p->close_pending)
		return;
	if (size < sizeof(*ev)) {
		p->malformed++;
		return;
	}
	if (batch_room(p)) {
		log_warn("proclife: out of memory: perf buffer event dropped");
		return;
	}
	if (p->close_pending)  /* closed by a callback of a flushed chunk */
		return;
	ev = &p->batch[p->nbatch];
	memcpy(ev, data, sizeof(*ev));
	p->keys[p->nbatch].ts = ev->ts_ns;
	p->keys[p->nbatch].idx = (uint32_t)p->nbatch;
	p->nbatch++;
}

static void on_lost(void *ctx, int cpu, __u64 cnt)
{
	struct proclife *p = ctx;

	(void)cpu;
	p->records_read++;
	p->lost += cnt;
}

/* Passes over all CPUs until one reads nothing (see the top comment), then
 * the sorted batch. Returns the number delivered or -errno. */
static int consume_perfbuf(struct proclife *p)
{
	uint64_t before = p->delivered;
	int err = 0;

	for (int pass = 0; pass < PERFBUF_MAX_PASSES && !p->close_pending; pass++) {
		uint64_t read0 = p->records_read;

		err = perf_buffer__consume(p->pb);
		if (err || p->records_read == read0)
			break;
	}
	if (!p->close_pending)
		flush(p);
	return err ? err : (int)(p->delivered - before);
}

static void destroy(struct proclife *p)
{
	loop_io_del(p->loop, p->io);
	ring_buffer__free(p->rb);
	perf_buffer__free(p->pb);
	proclife__destroy(p->skel);
	free(p->batch);
	free(p->keys);
	free(p);
}

int proclife_consume(struct proclife *p)
{
	int n;

	if (p->dispatching)
		return -EBUSY;
	p->dispatching = true;
	n = p->pb ? consume_perfbuf(p) : ring_buffer__consume(p->rb);
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
	enum proclife_transport transport;
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
	if (!err && (unsigned int)o->transport > PROCLIFE_TRANSPORT_PERFBUF) {
		snprintf(one, sizeof(one), "unknown transport %d", (int)o->transport);
		err = -EINVAL;
	}
	if (!err && (o->ringbuf_kib > MAX_RINGBUF_KIB || o->max_tracked > MAX_TRACKED ||
		     o->perfbuf_kib > MAX_PERFBUF_KIB)) {
		snprintf(one, sizeof(one), "ringbuf_kib, perfbuf_kib or max_tracked too large");
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
	err = libbpf_num_possible_cpus();   /* the counters are per-CPU arrays */
	if (err <= 0) {
		err = err ? err : -EINVAL;
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
	if (!err)
		err = choose_transport(o->transport, &transport, reason, sizeof(reason));
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
		e = try_variant(p, o, v, transport, one, sizeof(one));
		if (!e) {
			err = 0;
			break;
		}
		snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason), "%s%s", reason[0] ? "; " : "", one);
		err = e;
	}
	if (err)
		goto cleanup;

	if (transport == PROCLIFE_TRANSPORT_PERFBUF) {
		size_t pages = perfbuf_pages(o->perfbuf_kib);
		/* A record: perf header, size word, the event, padded to 8. */
		size_t rec = (sizeof(struct perf_event_header) + sizeof(__u32) + sizeof(struct proclife_event) + 7) & ~(size_t)7;

		p->pb = perf_buffer__new(bpf_map__fd(p->skel->maps.events_perf), pages, on_sample, on_lost, p, NULL);
		if (!p->pb) {
			err = errno ? -errno : -ENOMEM;
			snprintf(reason, sizeof(reason), "perf buffer: %s", strerror(-err));
			goto cleanup;
		}
		/* What all buffers hold at once, plus room for what is written
		 * while they are read. */
		p->batch_max = perf_buffer__buffer_cnt(p->pb) * (pages * (size_t)sysconf(_SC_PAGESIZE) / rec + 1) * 2;
		if (p->batch_max > BATCH_MAX)
			p->batch_max = BATCH_MAX;
		if (p->batch_max < BATCH_MIN)
			p->batch_max = BATCH_MIN;
		p->io = loop_io_add(l, perf_buffer__epoll_fd(p->pb), EPOLLIN, on_ready, p);
	} else {
		p->rb = ring_buffer__new(bpf_map__fd(p->skel->maps.events), on_record, p, NULL);
		if (!p->rb) {
			err = errno ? -errno : -ENOMEM;
			snprintf(reason, sizeof(reason), "ring buffer: %s", strerror(-err));
			goto cleanup;
		}
		p->io = loop_io_add(l, ring_buffer__epoll_fd(p->rb), EPOLLIN, on_ready, p);
	}
	if (!p->io) {
		err = errno ? -errno : -ENOMEM;
		snprintf(reason, sizeof(reason), "loop: %s", strerror(-err));
		goto cleanup;
	}
	libbpf_set_print(old_print);
	log_debug("proclife: attached (%s, %s), comm=%s basename_prefix=%s", variant_names[p->variant],
		  transport_names[p->transport],
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

const char *proclife_transport(const struct proclife *p)
{
	return transport_names[p->transport];
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
	struct bpfload_percpu pc;
	int err = bpfload_percpu_init(&pc, sizeof(uint64_t), NULL, 0);

	for (__u32 k = 0; !err && k < PROCLIFE_CNT_MAX; k++)
		err = bpfload_percpu_sum(&pc, bpf_map__fd(p->skel->maps.counters), k, sizeof(sum[k]), &sum[k]);
	bpfload_percpu_free(&pc);
	if (err)
		return err;
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
	out->perfbuf_lost = p->lost;
	return 0;
}

int proclife_prog_stats(struct proclife *p, struct bpfload_prog_stat *out, size_t max)
{
	return bpfload_prog_stats(p->skel->obj, out, max);
}

int proclife_add_prog_metrics(struct proclife *p, struct metrics *m)
{
	return bpfload_add_prog_metrics(m, p->skel->obj);
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
