/* Scheduler delay of onepanel's threads: probe, load and read
 * bpf/schedlat.bpf.c (see userspace/schedlat.h for the API and metrics).
 *
 * Choosing a variant. The programs exist twice in the object, as tp_btf
 * (typed task pointers; can keep per-thread start times in task storage)
 * and as raw_tp (CO-RE reads; start times in a bounded hash). Before
 * opening we probe rather than compare kernel versions:
 *   - kernel BTF must exist (CO-RE relocations need it);
 *   - tp_btf: the BTF has the btf_trace_sched_switch typedef and a trivial
 *     BPF_TRACE_RAW_TP program loads against it;
 *   - sched_switch passes prev_state (the typedef's prototype has 5
 *     parameters; 5.18+): otherwise the programs read task->__state/state;
 *   - task storage: the map type exists and struct bpf_local_storage_map has
 *     `bpf_ma`, i.e. storage is allocated by the BPF allocator. Older
 *     kernels kmalloc(GFP_ATOMIC) it, which can wake kswapd from inside the
 *     scheduler with the run-queue lock held; there we use the hash.
 * Candidates are then tried in order (task storage, tp_btf + hash, raw_tp +
 * hash): the first that opens, loads and attaches wins, and a failure of a
 * better one is logged once with its reason. Unused programs get
 * autoload=false, the unused start map autocreate=false (libbpf poisons the
 * references in the code the verifier prunes through the rodata flags).
 *
 * Targets are kept twice: `targets` (hash: tgid -> generation, the truth)
 * and `target_bits` (a bitmap by tgid the programs test first, because an
 * inlined array lookup is the cheapest filter for the every-switch path).
 * The programs need both (bit, then entry), so a target half added or half
 * removed is simply not tracked yet / any more.
 *
 * Start entries in the hash are removed by the programs when a tracked
 * thread exits; remove_target and the next collect after it sweep entries
 * of tgids that are no longer targets (threads that were blocked when their
 * tgid was removed, or a program racing with the removal). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "metrics.h"
#include "schedlat.h"
#include "../include/schedlat.h"

/* The skeleton is generated with "name schedlat", so its struct would be
 * `struct schedlat`, the name of this module's handle: rename its tag. The
 * functions (schedlat__open, ...) keep their names. */
#define schedlat schedlat_skel
#include "schedlat.skel.h"
#undef schedlat

struct schedlat {
	struct schedlat_skel *skel;
	enum schedlat_variant variant;
	int ncpus;
	unsigned int next_gen;
	bool sweep_pending;           /* hash variant: sweep again at the next collect */
	struct schedlat_hist *hist_buf; /* ncpus values of one per-CPU read */
	uint64_t *stat_buf;
};

static const char *variant_name(enum schedlat_variant v)
{
	switch (v) {
	case SCHEDLAT_TP_BTF_TASK_STORAGE: return "tp_btf+task_storage";
	case SCHEDLAT_TP_BTF_HASH: return "tp_btf+hash";
	case SCHEDLAT_RAW_TP_HASH: return "raw_tp+hash";
	default: return "auto";
	}
}

static void say(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t whylen, const char *fmt, ...)
{
	if (!why || !whylen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* ---- probes ---- */

struct probe {
	bool tp_btf;
	bool prev_state_arg;
	bool task_storage;
	char tp_btf_why[128];
	char task_storage_why[128];
};

static bool btf_struct_has_member(const struct btf *btf, const char *sname, const char *member)
{
	int id = btf__find_by_name_kind(btf, sname, BTF_KIND_STRUCT);
	if (id < 0)
		return false;
	const struct btf_type *t = btf__type_by_id(btf, (uint32_t)id);
	const struct btf_member *mm = btf_members(t);
	for (unsigned short i = 0; i < btf_vlen(t); i++) {
		const char *n = btf__name_by_offset(btf, mm[i].name_off);
		if (n && strcmp(n, member) == 0)
			return true;
	}
	return false;
}

/* Parameter count of the tracepoint prototype behind btf_trace_<name>
 * (the first one is the void *ctx), or -1. */
static int tp_btf_params(const struct btf *btf, const char *typedef_name, int *type_id)
{
	int id = btf__find_by_name_kind(btf, typedef_name, BTF_KIND_TYPEDEF);
	if (id < 0)
		return -1;
	*type_id = id;
	const struct btf_type *t = btf__type_by_id(btf, (uint32_t)id);
	t = t ? btf__type_by_id(btf, t->type) : NULL;
	if (!t || !btf_is_ptr(t))
		return -1;
	t = btf__type_by_id(btf, t->type);
	if (!t || !btf_is_func_proto(t))
		return -1;
	return btf_vlen(t);
}

/* Does "r0 = 0; exit" load as a raw_tp program (btf_id < 0: are we allowed
 * to load tracing programs at all), or as tp_btf against this typedef? */
static int try_trivial_load(int btf_id)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, o);
	enum bpf_prog_type type = BPF_PROG_TYPE_RAW_TRACEPOINT;
	if (btf_id >= 0) {
		type = BPF_PROG_TYPE_TRACING;
		o.expected_attach_type = BPF_TRACE_RAW_TP;
		o.attach_btf_id = (uint32_t)btf_id;
	}
	int fd = bpf_prog_load(type, "schedlat_probe", "GPL", insns, 2, &o);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static int probe_kernel(struct probe *p, char *why, size_t whylen)
{
	memset(p, 0, sizeof(*p));
	struct btf *btf = btf__load_vmlinux_btf();
	if (!btf) {
		int err = -errno;
		say(why, whylen, "no kernel BTF (/sys/kernel/btf/vmlinux): %s", strerror(-err));
		return err ? err : -ENOENT;
	}

	int err = try_trivial_load(-1);
	if (err) {
		say(why, whylen, "loading BPF programs is not possible: %s%s", strerror(-err),
		    err == -EPERM ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "");
		btf__free(btf);
		return err;
	}

	int id = -1;
	int n = tp_btf_params(btf, "btf_trace_sched_switch", &id);
	p->prev_state_arg = n >= 5;
	if (n < 0) {
		snprintf(p->tp_btf_why, sizeof(p->tp_btf_why), "no btf_trace_sched_switch in the kernel BTF");
	} else {
		err = try_trivial_load(id);
		if (err)
			snprintf(p->tp_btf_why, sizeof(p->tp_btf_why), "a tp_btf program does not load: %s",
				 strerror(-err));
		else
			p->tp_btf = true;
	}

	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, NULL) != 1)
		snprintf(p->task_storage_why, sizeof(p->task_storage_why), "no task storage maps");
	else if (!btf_struct_has_member(btf, "bpf_local_storage_map", "bpf_ma"))
		snprintf(p->task_storage_why, sizeof(p->task_storage_why),
			 "task storage is not allocated by the BPF allocator (unsafe in the scheduler)");
	else
		p->task_storage = true;
	btf__free(btf);
	return 0;
}

/* ---- open ---- */

static int load_variant(struct schedlat *s, enum schedlat_variant v, const struct probe *p, char *why,
			size_t whylen)
{
	struct schedlat_skel *skel = schedlat__open();
	if (!skel) {
		int err = -errno;
		say(why, whylen, "opening the BPF object: %s", strerror(-err));
		return err ? err : -EINVAL;
	}
	bool btf = v != SCHEDLAT_RAW_TP_HASH;
	bool ts = v == SCHEDLAT_TP_BTF_TASK_STORAGE;
	skel->rodata->use_task_storage = ts;
	skel->rodata->has_prev_state_arg = p->prev_state_arg;
	bpf_program__set_autoload(skel->progs.schedlat_wakeup_btf, btf);
	bpf_program__set_autoload(skel->progs.schedlat_wakeup_new_btf, btf);
	bpf_program__set_autoload(skel->progs.schedlat_switch_btf, btf);
	bpf_program__set_autoload(skel->progs.schedlat_wakeup_raw, !btf);
	bpf_program__set_autoload(skel->progs.schedlat_wakeup_new_raw, !btf);
	bpf_program__set_autoload(skel->progs.schedlat_switch_raw, !btf);
	bpf_map__set_autocreate(skel->maps.task_starts, ts);
	bpf_map__set_autocreate(skel->maps.starts, !ts);

	int err = schedlat__load(skel);
	if (err) {
		say(why, whylen, "%s: loading the BPF programs: %s%s", variant_name(v), strerror(-err),
		    err == -EPERM ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "");
		schedlat__destroy(skel);
		return err;
	}
	err = schedlat__attach(skel);
	if (err) {
		say(why, whylen, "%s: attaching to the sched tracepoints: %s", variant_name(v), strerror(-err));
		schedlat__destroy(skel);
		return err;
	}
	s->skel = skel;
	s->variant = v;
	return 0;
}

int schedlat_open_variant(struct schedlat **out, enum schedlat_variant v, char *why, size_t whylen)
{
	struct schedlat *s = NULL;
	struct probe p;
	enum schedlat_variant cand[3];
	size_t ncand = 0;
	char first_why[256] = "";
	int err;

	*out = NULL;
	if (v < SCHEDLAT_AUTO || v > SCHEDLAT_RAW_TP_HASH) {
		say(why, whylen, "unknown schedlat variant %d", (int)v);
		return -EINVAL;
	}
	err = probe_kernel(&p, why, whylen);
	if (err)
		return err;

	switch (v) {
	case SCHEDLAT_AUTO:
		if (p.tp_btf && p.task_storage)
			cand[ncand++] = SCHEDLAT_TP_BTF_TASK_STORAGE;
		if (p.tp_btf)
			cand[ncand++] = SCHEDLAT_TP_BTF_HASH;
		cand[ncand++] = SCHEDLAT_RAW_TP_HASH;
		if (!p.tp_btf)
			log_info("schedlat: no tp_btf (%s), using raw_tp", p.tp_btf_why);
		else if (!p.task_storage)
			log_info("schedlat: start times in a hash, not task storage (%s)", p.task_storage_why);
		break;
	case SCHEDLAT_TP_BTF_TASK_STORAGE:
	case SCHEDLAT_TP_BTF_HASH:
		if (!p.tp_btf) {
			say(why, whylen, "%s: %s", variant_name(v), p.tp_btf_why);
			return -EOPNOTSUPP;
		}
		if (v == SCHEDLAT_TP_BTF_TASK_STORAGE && !p.task_storage) {
			say(why, whylen, "%s: %s", variant_name(v), p.task_storage_why);
			return -EOPNOTSUPP;
		}
		cand[ncand++] = v;
		break;
	default:
		cand[ncand++] = SCHEDLAT_RAW_TP_HASH;
		break;
	}

	s = calloc(1, sizeof(*s));
	if (!s) {
		err = -ENOMEM;
		say(why, whylen, "out of memory");
		goto cleanup;
	}
	s->ncpus = libbpf_num_possible_cpus();
	if (s->ncpus <= 0) {
		err = s->ncpus < 0 ? s->ncpus : -EINVAL;
		say(why, whylen, "counting possible CPUs: %s", strerror(-err));
		goto cleanup;
	}
	s->hist_buf = calloc((size_t)s->ncpus, sizeof(*s->hist_buf));
	s->stat_buf = calloc((size_t)s->ncpus, sizeof(*s->stat_buf));
	if (!s->hist_buf || !s->stat_buf) {
		err = -ENOMEM;
		say(why, whylen, "out of memory");
		goto cleanup;
	}

	for (size_t i = 0; i < ncand; i++) {
		err = load_variant(s, cand[i], &p, why, whylen);
		if (!err)
			break;
		if (!first_why[0] && why)
			snprintf(first_why, sizeof(first_why), "%s", why);
	}
	if (err) {
		if (ncand > 1 && first_why[0] && why && strcmp(first_why, why) != 0) {
			char last[256];
			snprintf(last, sizeof(last), "%s", why);
			say(why, whylen, "%s; %s", first_why, last);
		}
		goto cleanup;
	}
	if (first_why[0])
		log_warn("schedlat: %s; using %s", first_why, variant_name(s->variant));
	say(why, whylen, "%s", variant_name(s->variant));
	*out = s;
	return 0;

cleanup:
	schedlat_close(s);
	return err;
}

int schedlat_open(struct schedlat **out, char *why, size_t whylen)
{
	return schedlat_open_variant(out, SCHEDLAT_AUTO, why, whylen);
}

const char *schedlat_mode(const struct schedlat *s)
{
	return s ? variant_name(s->variant) : "off";
}

void schedlat_close(struct schedlat *s)
{
	if (!s)
		return;
	schedlat__destroy(s->skel);   /* detaches, closes maps; NULL is fine */
	free(s->hist_buf);
	free(s->stat_buf);
	free(s);
}

/* ---- targets ---- */

/* Userspace is the only writer of target_bits, so read-modify-write of a
 * word cannot lose a concurrent update; the programs see the old or the new
 * word, both consistent with `targets` (they need bit and entry). */
static int set_target_bit(struct schedlat *s, uint32_t tgid, bool on)
{
	int fd = bpf_map__fd(s->skel->maps.target_bits);
	uint32_t w = tgid / 64;
	uint64_t bits;
	if (bpf_map_lookup_elem(fd, &w, &bits) != 0)
		return -errno;
	bits = on ? bits | (1ULL << (tgid % 64)) : bits & ~(1ULL << (tgid % 64));
	if (bpf_map_update_elem(fd, &w, &bits, BPF_ANY) != 0)
		return -errno;
	return 0;
}

int schedlat_add_target(struct schedlat *s, pid_t tgid)
{
	if (!s || tgid <= 0 || (uint32_t)tgid >= SCHEDLAT_TGID_LIMIT)
		return -EINVAL;
	uint32_t key = (uint32_t)tgid;
	struct schedlat_target val = { .gen = ++s->next_gen };
	if (bpf_map_update_elem(bpf_map__fd(s->skel->maps.targets), &key, &val, BPF_NOEXIST) != 0 &&
	    errno != EEXIST)
		return -errno;   /* E2BIG: the table is full */
	return set_target_bit(s, key, true);
}

/* Delete start entries whose tgid is no longer a target (hash variants). */
static void sweep_starts(struct schedlat *s)
{
	if (s->variant == SCHEDLAT_TP_BTF_TASK_STORAGE)
		return;
	int sfd = bpf_map__fd(s->skel->maps.starts);
	int tfd = bpf_map__fd(s->skel->maps.targets);
	uint32_t *keys = malloc(SCHEDLAT_MAX_THREADS * sizeof(*keys));
	if (!keys)
		return;   /* best effort: retried at the next collect */
	size_t n = 0;
	uint32_t key = 0, next;   /* 0 (the idle task) is never a key: starts at the first */
	while (n < SCHEDLAT_MAX_THREADS && bpf_map_get_next_key(sfd, &key, &next) == 0) {
		keys[n++] = next;
		key = next;
	}
	for (size_t i = 0; i < n; i++) {
		struct schedlat_start st;
		struct schedlat_target tg;
		if (bpf_map_lookup_elem(sfd, &keys[i], &st) != 0)
			continue;
		uint32_t tgid = st.tgid;
		if (bpf_map_lookup_elem(tfd, &tgid, &tg) != 0 && errno == ENOENT)
			bpf_map_delete_elem(sfd, &keys[i]);
	}
	free(keys);
}

int schedlat_remove_target(struct schedlat *s, pid_t tgid)
{
	if (!s || tgid <= 0 || (uint32_t)tgid >= SCHEDLAT_TGID_LIMIT)
		return -EINVAL;
	uint32_t key = (uint32_t)tgid;
	if (bpf_map_delete_elem(bpf_map__fd(s->skel->maps.targets), &key) != 0)
		return -errno;
	int err = set_target_bit(s, key, false);
	if (err)
		return err;
	sweep_starts(s);
	s->sweep_pending = s->variant != SCHEDLAT_TP_BTF_TASK_STORAGE;
	return 0;
}

int schedlat_start_entries(struct schedlat *s)
{
	if (!s)
		return -EINVAL;
	if (s->variant == SCHEDLAT_TP_BTF_TASK_STORAGE)
		return -EOPNOTSUPP;
	int fd = bpf_map__fd(s->skel->maps.starts), n = 0;
	uint32_t key = 0, next;   /* as in sweep_starts */
	while (n < SCHEDLAT_MAX_THREADS && bpf_map_get_next_key(fd, &key, &next) == 0) {
		n++;
		key = next;
	}
	return n;
}

/* ---- metrics ---- */

#define NBUCKETS (SCHEDLAT_SLOTS - 1 - SCHEDLAT_FIRST_BUCKET)

static int read_hist(struct schedlat *s, uint32_t kind, uint64_t slots[SCHEDLAT_SLOTS], uint64_t *sum_ns)
{
	if (bpf_map_lookup_elem(bpf_map__fd(s->skel->maps.hist), &kind, s->hist_buf) != 0)
		return -errno;
	memset(slots, 0, SCHEDLAT_SLOTS * sizeof(*slots));
	*sum_ns = 0;
	for (int c = 0; c < s->ncpus; c++) {
		for (int i = 0; i < SCHEDLAT_SLOTS; i++)
			slots[i] += s->hist_buf[c].slots[i];
		*sum_ns += s->hist_buf[c].sum_ns;
	}
	return 0;
}

static int add_hist(struct schedlat *s, struct metrics *m, const char *name, uint32_t kind, const char *label)
{
	uint64_t slots[SCHEDLAT_SLOTS], sum_ns = 0, cum[NBUCKETS], acc = 0;
	double upper[NBUCKETS];
	int err = read_hist(s, kind, slots, &sum_ns);
	if (err)
		return err;
	for (int i = 0; i < SCHEDLAT_FIRST_BUCKET; i++)
		acc += slots[i];
	for (int b = 0; b < NBUCKETS; b++) {
		int slot = SCHEDLAT_FIRST_BUCKET + b;
		acc += slots[slot];
		cum[b] = acc;
		upper[b] = (double)(1ULL << (slot + 1)) * 1e-9;
	}
	uint64_t count = acc + slots[SCHEDLAT_SLOTS - 1];
	if (label)
		return metrics_add_histogram(m, name, NBUCKETS, upper, cum, (double)sum_ns * 1e-9, count, "process",
					     label, NULL);
	return metrics_add_histogram(m, name, NBUCKETS, upper, cum, (double)sum_ns * 1e-9, count, NULL);
}

static int add_prog_stats(struct schedlat *s, struct metrics *m)
{
	struct bpf_program *prog;
	metrics_declare(m, "oneshield_agent_bpf_prog_runs_total", MT_COUNTER,
			"Runs of each agent BPF program (counted only while sysctl kernel.bpf_stats_enabled=1).");
	metrics_declare(m, "oneshield_agent_bpf_prog_run_seconds_total", MT_COUNTER,
			"CPU time spent in each agent BPF program (counted only while sysctl "
			"kernel.bpf_stats_enabled=1).");
	metrics_declare(m, "oneshield_agent_bpf_prog_recursion_misses_total", MT_COUNTER,
			"Runs of each agent BPF program the kernel skipped because another BPF program was "
			"running on that CPU; their events are lost.");
	bpf_object__for_each_program(prog, s->skel->obj) {
		int fd = bpf_program__fd(prog);
		if (fd < 0)
			continue;   /* the variant not loaded */
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
			return -errno;
		const char *name = bpf_program__name(prog);
		metrics_add(m, "oneshield_agent_bpf_prog_runs_total", (double)info.run_cnt, "prog", name, NULL);
		metrics_add(m, "oneshield_agent_bpf_prog_run_seconds_total", (double)info.run_time_ns * 1e-9, "prog",
			    name, NULL);
		metrics_add(m, "oneshield_agent_bpf_prog_recursion_misses_total", (double)info.recursion_misses,
			    "prog", name, NULL);
	}
	return 0;
}

int schedlat_collect(struct schedlat *s, struct metrics *m, const char *label_value)
{
	if (!s || !m)
		return -EINVAL;
	int err;

	if (s->sweep_pending) {
		sweep_starts(s);
		s->sweep_pending = false;
	}

	metrics_declare(m, "onepanel_runqueue_latency_seconds", MT_HISTOGRAM,
			"Time onepanel's threads waited for a CPU while runnable (after a wakeup or a "
			"preemption), since the agent loaded its probes.");
	metrics_declare(m, "onepanel_offcpu_seconds", MT_HISTOGRAM,
			"Time onepanel's threads spent off CPU after blocking, until running again (includes the "
			"wait for a CPU after the wakeup), since the agent loaded its probes.");
	if ((err = add_hist(s, m, "onepanel_runqueue_latency_seconds", SCHEDLAT_RUNQ, label_value)) ||
	    (err = add_hist(s, m, "onepanel_offcpu_seconds", SCHEDLAT_OFFCPU, label_value)))
		return err;

	uint32_t key = SCHEDLAT_STAT_DROPS;
	if (bpf_map_lookup_elem(bpf_map__fd(s->skel->maps.stats), &key, s->stat_buf) != 0)
		return -errno;
	uint64_t drops = 0;
	for (int c = 0; c < s->ncpus; c++)
		drops += s->stat_buf[c];
	metrics_declare(m, "oneshield_agent_bpf_schedlat_drops_total", MT_COUNTER,
			"Scheduler intervals of onepanel's threads not measured: no room for the thread's start time.");
	metrics_add(m, "oneshield_agent_bpf_schedlat_drops_total", (double)drops, NULL);

	return add_prog_stats(s, m);
}
