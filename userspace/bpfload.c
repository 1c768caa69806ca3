/* Probing, variant choice and per-CPU reads shared by the eBPF modules
 * (see bpfload.h). Nothing here knows a module's skeleton: the modules pass
 * their map fds, their bpf_object and a load callback. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "bpfload.h"
#include "log.h"
#include "metrics.h"

const char *bpfload_variant_name(enum bpfload_variant v)
{
	switch (v) {
	case BPFLOAD_TP_BTF_TASK_STORAGE: return "tp_btf+task_storage";
	case BPFLOAD_TP_BTF_HASH: return "tp_btf+hash";
	case BPFLOAD_RAW_TP_HASH: return "raw_tp+hash";
	default: return "auto";
	}
}

void bpfload_say(char *why, size_t whylen, const char *fmt, ...)
{
	if (!why || !whylen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* ---- probes ---- */

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

/* Parameter count of the tracepoint prototype behind the btf_trace_<name>
 * typedef id (the first one is the void *ctx), or -1. */
static int tp_btf_params(const struct btf *btf, int id)
{
	const struct btf_type *t = btf__type_by_id(btf, (uint32_t)id);
	t = t ? btf__type_by_id(btf, t->type) : NULL;
	if (!t || !btf_is_ptr(t))
		return -1;
	t = btf__type_by_id(btf, t->type);
	if (!t || !btf_is_func_proto(t))
		return -1;
	return btf_vlen(t);
}

/* Does "r0 = 0; exit" load as a raw_tp program (btf_id < 0: may we load
 * tracing programs at all), or as tp_btf against this typedef? */
static int try_trivial_load(const char *name, int btf_id)
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
	int fd = bpf_prog_load(type, name, "GPL", insns, 2, &o);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

int bpfload_probe_kernel(struct bpfload_probe *p, const struct bpfload_spec *spec, char *why, size_t whylen)
{
	const char *prog_name = spec->prog_name, *tp_typedef = spec->tp_typedef;

	memset(p, 0, sizeof(*p));
	p->tp_params = -1;
	struct btf *btf = btf__load_vmlinux_btf();
	if (!btf) {
		int err = -errno;
		bpfload_say(why, whylen, "no kernel BTF (/sys/kernel/btf/vmlinux): %s", strerror(err ? -err : ENOENT));
		return err ? err : -ENOENT;
	}

	int err = try_trivial_load(prog_name, -1);
	if (err) {
		bpfload_say(why, whylen, "loading BPF programs is not possible: %s%s", strerror(-err),
			    err == -EPERM ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "");
		btf__free(btf);
		return err;
	}

	int id = btf__find_by_name_kind(btf, tp_typedef, BTF_KIND_TYPEDEF);
	if (id >= 0)
		p->tp_params = tp_btf_params(btf, id);
	if (id < 0 || p->tp_params < 0) {
		snprintf(p->tp_btf_why, sizeof(p->tp_btf_why), "no %s in the kernel BTF", tp_typedef);
	} else if ((err = try_trivial_load(prog_name, id)) != 0) {
		snprintf(p->tp_btf_why, sizeof(p->tp_btf_why), "a tp_btf program does not load: %s",
			 strerror(-err));
	} else {
		p->tp_btf = true;
	}

	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, NULL) != 1)
		snprintf(p->task_storage_why, sizeof(p->task_storage_why), "no task storage maps");
	else if (spec->storage_in_sched && !btf_struct_has_member(btf, "bpf_local_storage_map", "bpf_ma"))
		snprintf(p->task_storage_why, sizeof(p->task_storage_why),
			 "task storage is not allocated by the BPF allocator (unsafe in the scheduler)");
	else
		p->task_storage = true;
	btf__free(btf);
	return 0;
}

/* ---- choosing and loading ---- */

int bpfload_candidates(enum bpfload_variant v, const struct bpfload_spec *spec, struct bpfload_probe *p,
		       enum bpfload_variant *cand, char *why, size_t whylen)
{
	const char *module = spec->module;
	int n = 0;
	int err = bpfload_probe_kernel(p, spec, why, whylen);
	if (err)
		return err;

	switch (v) {
	case BPFLOAD_AUTO:
		if (p->tp_btf && p->task_storage)
			cand[n++] = BPFLOAD_TP_BTF_TASK_STORAGE;
		if (p->tp_btf)
			cand[n++] = BPFLOAD_TP_BTF_HASH;
		cand[n++] = BPFLOAD_RAW_TP_HASH;
		if (!p->tp_btf)
			log_info("%s: no tp_btf (%s), using raw_tp", module, p->tp_btf_why);
		else if (!p->task_storage)
			log_info("%s: start times in a hash, not task storage (%s)", module, p->task_storage_why);
		break;
	case BPFLOAD_TP_BTF_TASK_STORAGE:
	case BPFLOAD_TP_BTF_HASH:
		if (!p->tp_btf) {
			bpfload_say(why, whylen, "%s: %s", bpfload_variant_name(v), p->tp_btf_why);
			return -EOPNOTSUPP;
		}
		if (v == BPFLOAD_TP_BTF_TASK_STORAGE && !p->task_storage) {
			bpfload_say(why, whylen, "%s: %s", bpfload_variant_name(v), p->task_storage_why);
			return -EOPNOTSUPP;
		}
		cand[n++] = v;
		break;
	default:
		cand[n++] = BPFLOAD_RAW_TP_HASH;
		break;
	}
	return n;
}

int bpfload_first_that_loads(const enum bpfload_variant *cand, size_t ncand, bpfload_load_fn load, void *ctx,
			     char *first_why, size_t first_len, char *why, size_t whylen)
{
	int err = -EINVAL;

	first_why[0] = '\0';
	for (size_t i = 0; i < ncand; i++) {
		err = load(ctx, cand[i], why, whylen);
		if (!err)
			return 0;
		if (!first_why[0] && why)
			snprintf(first_why, first_len, "%s", why);
	}
	if (ncand > 1 && first_why[0] && why && strcmp(first_why, why) != 0) {
		char last[256];
		snprintf(last, sizeof(last), "%s", why);
		bpfload_say(why, whylen, "%s; %s", first_why, last);
	}
	return err;
}

void bpfload_chosen(const char *module, const char *first_why, enum bpfload_variant v, char *why, size_t whylen)
{
	if (first_why[0])
		log_warn("%s: %s; using %s", module, first_why, bpfload_variant_name(v));
	bpfload_say(why, whylen, "%s", bpfload_variant_name(v));
}

/* ---- reading maps ---- */

int bpfload_percpu_init(struct bpfload_percpu *pc, size_t value_size, char *why, size_t whylen)
{
	memset(pc, 0, sizeof(*pc));
	int n = libbpf_num_possible_cpus();
	if (n <= 0) {
		int err = n < 0 ? n : -EINVAL;
		bpfload_say(why, whylen, "counting possible CPUs: %s", strerror(-err));
		return err;
	}
	pc->buf = calloc((size_t)n, value_size);
	if (!pc->buf) {
		bpfload_say(why, whylen, "out of memory");
		return -ENOMEM;
	}
	pc->ncpus = n;
	pc->value_size = value_size;
	return 0;
}

void bpfload_percpu_free(struct bpfload_percpu *pc)
{
	free(pc->buf);
	memset(pc, 0, sizeof(*pc));
}

int bpfload_percpu_sum(const struct bpfload_percpu *pc, int fd, uint32_t key, size_t value_size, void *sum)
{
	if (value_size > pc->value_size)
		return -EINVAL;
	if (bpf_map_lookup_elem(fd, &key, pc->buf) != 0)
		return -errno;
	memset(sum, 0, value_size);
	/* word by word through memcpy: the values are structs of unsigned
	 * long long, read here as uint64_t */
	for (int c = 0; c < pc->ncpus; c++) {
		const char *v = (const char *)pc->buf + (size_t)c * value_size;
		for (size_t off = 0; off + sizeof(uint64_t) <= value_size; off += sizeof(uint64_t)) {
			uint64_t w, acc;
			memcpy(&w, v + off, sizeof(w));
			memcpy(&acc, (char *)sum + off, sizeof(acc));
			acc += w;
			memcpy((char *)sum + off, &acc, sizeof(acc));
		}
	}
	return 0;
}

int bpfload_percpu_zero(const struct bpfload_percpu *pc, int fd, uint32_t nkeys)
{
	memset(pc->buf, 0, (size_t)pc->ncpus * pc->value_size);
	for (uint32_t k = 0; k < nkeys; k++)
		if (bpf_map_update_elem(fd, &k, pc->buf, BPF_ANY) != 0)
			return -errno;
	return 0;
}

size_t bpfload_hash_keys(int fd, uint32_t *keys, size_t max)
{
	size_t n = 0;
	uint32_t key = 0, next;   /* 0 (the idle task) is never a key: starts at the first */
	while (n < max && bpf_map_get_next_key(fd, &key, &next) == 0) {
		if (keys)
			keys[n] = next;
		n++;
		key = next;
	}
	return n;
}

int bpfload_bitmap_word(int fd, uint32_t n, uint64_t *word)
{
	uint32_t w = n / 64;
	if (bpf_map_lookup_elem(fd, &w, word) != 0)
		return -errno;
	return 0;
}

/* Userspace is the only writer, so read-modify-write of a word cannot lose
 * a concurrent update; the programs see the old or the new word. */
int bpfload_bitmap_mark(int fd, uint32_t n, bool on, bool *was)
{
	uint32_t w = n / 64;
	uint64_t bit = 1ULL << (n % 64), old;
	int err = bpfload_bitmap_word(fd, n, &old);
	if (err)
		return err;
	if (was)
		*was = old & bit;
	if (!(old & bit) == !on)
		return 0;
	uint64_t nw = on ? old | bit : old & ~bit;
	if (bpf_map_update_elem(fd, &w, &nw, BPF_ANY) != 0)
		return -errno;
	return 0;
}

int bpfload_log2_buckets(const uint64_t *slots, int nslots, int first, uint64_t *cum, double *upper,
			 uint64_t *count)
{
	int nb = nslots - 1 - first;
	uint64_t acc = 0;
	for (int i = 0; i < first; i++)
		acc += slots[i];
	for (int b = 0; b < nb; b++) {
		int slot = first + b;
		acc += slots[slot];
		cum[b] = acc;
		upper[b] = (double)(1ULL << (slot + 1)) * 1e-9;
	}
	*count = acc + slots[nslots - 1];
	return nb;
}

/* ---- self-cost ---- */

int bpfload_prog_stats(const struct bpf_object *obj, struct bpfload_prog_stat *out, size_t max)
{
	struct bpf_program *prog;
	size_t n = 0;
	bpf_object__for_each_program(prog, obj) {
		int fd = bpf_program__fd(prog);
		if (fd < 0)
			continue;   /* the variant not loaded */
		if (n == max)
			break;
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
			return -errno;
		out[n].name = bpf_program__name(prog);
		out[n].id = info.id;
		out[n].run_cnt = info.run_cnt;
		out[n].run_time_ns = info.run_time_ns;
		out[n].recursion_misses = info.recursion_misses;
		n++;
	}
	return (int)n;
}

int bpfload_add_prog_metrics(struct metrics *m, const struct bpf_object *obj)
{
	struct bpfload_prog_stat ps[32];   /* a module loads fewer than 10 */
	metrics_declare(m, "oneshield_agent_bpf_prog_runs_total", MT_COUNTER,
			"Runs of each agent BPF program (counted only while sysctl kernel.bpf_stats_enabled=1).");
	metrics_declare(m, "oneshield_agent_bpf_prog_run_seconds_total", MT_COUNTER,
			"CPU time spent in each agent BPF program (counted only while sysctl "
			"kernel.bpf_stats_enabled=1).");
	metrics_declare(m, "oneshield_agent_bpf_prog_recursion_misses_total", MT_COUNTER,
			"Runs of each agent BPF program the kernel skipped because another BPF program was "
			"running on that CPU; their events are lost.");
	int n = bpfload_prog_stats(obj, ps, sizeof(ps) / sizeof(ps[0]));
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		metrics_add(m, "oneshield_agent_bpf_prog_runs_total", (double)ps[i].run_cnt, "prog", ps[i].name, NULL);
		metrics_add(m, "oneshield_agent_bpf_prog_run_seconds_total", (double)ps[i].run_time_ns * 1e-9, "prog",
			    ps[i].name, NULL);
		metrics_add(m, "oneshield_agent_bpf_prog_recursion_misses_total", (double)ps[i].recursion_misses,
			    "prog", ps[i].name, NULL);
	}
	return 0;
}
