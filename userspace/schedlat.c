/* Scheduler delay of onepanel's threads: probe, load and read
 * bpf/schedlat.bpf.c (see userspace/schedlat.h for the API and metrics).
 *
 * Choosing a variant (the probing and the fallback are bpfload.c's, shared
 * with sysprobe). The programs exist twice in the object, as tp_btf
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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpfload.h"
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
	bool prev_state_arg;          /* sched_switch passes prev_state (5.18+) */
	unsigned int next_gen;
	bool sweep_pending;           /* hash variant: sweep again at the next collect */
	struct bpfload_percpu percpu; /* reads of hist (the larger value) and stats */
};

/* ---- open ---- */

static int load_variant(void *ctx, enum bpfload_variant v, char *why, size_t whylen)
{
	struct schedlat *s = ctx;
	struct schedlat_skel *skel = schedlat__open();
	if (!skel) {
		int err = -errno;
		bpfload_say(why, whylen, "opening the BPF object: %s", strerror(-err));
		return err ? err : -EINVAL;
	}
	bool btf = v != BPFLOAD_RAW_TP_HASH;
	bool ts = v == BPFLOAD_TP_BTF_TASK_STORAGE;
	skel->rodata->use_task_storage = ts;
	skel->rodata->has_prev_state_arg = s->prev_state_arg;
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
		bpfload_say(why, whylen, "%s: loading the BPF programs: %s%s", bpfload_variant_name(v), strerror(-err),
			    err == -EPERM ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "");
		schedlat__destroy(skel);
		return err;
	}
	err = schedlat__attach(skel);
	if (err) {
		bpfload_say(why, whylen, "%s: attaching to the sched tracepoints: %s", bpfload_variant_name(v),
			    strerror(-err));
		schedlat__destroy(skel);
		return err;
	}
	s->skel = skel;
	s->variant = (enum schedlat_variant)v;
	return 0;
}

int schedlat_open_variant(struct schedlat **out, enum schedlat_variant v, char *why, size_t whylen)
{
	/* task storage is written under the run-queue lock: only where the
	 * BPF allocator provides it */
	static const struct bpfload_spec spec = {
		.module = "schedlat",
		.prog_name = "schedlat_probe",
		.tp_typedef = "btf_trace_sched_switch",
		.storage_in_sched = true,
	};
	struct schedlat *s = NULL;
	struct bpfload_probe p;
	enum bpfload_variant cand[BPFLOAD_NVARIANTS];
	char first_why[256] = "";
	int err, ncand;

	*out = NULL;
	if (v < SCHEDLAT_AUTO || v > SCHEDLAT_RAW_TP_HASH) {
		bpfload_say(why, whylen, "unknown schedlat variant %d", (int)v);
		return -EINVAL;
	}
	ncand = bpfload_candidates((enum bpfload_variant)v, &spec, &p, cand, why, whylen);
	if (ncand < 0)
		return ncand;

	s = calloc(1, sizeof(*s));
	if (!s) {
		err = -ENOMEM;
		bpfload_say(why, whylen, "out of memory");
		goto cleanup;
	}
	s->prev_state_arg = p.tp_params >= 5;
	err = bpfload_percpu_init(&s->percpu, sizeof(struct schedlat_hist), why, whylen);
	if (err)
		goto cleanup;

	err = bpfload_first_that_loads(cand, (size_t)ncand, load_variant, s, first_why, sizeof(first_why), why,
				       whylen);
	if (err)
		goto cleanup;
	bpfload_chosen("schedlat", first_why, (enum bpfload_variant)s->variant, why, whylen);
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
	return s ? bpfload_variant_name((enum bpfload_variant)s->variant) : "off";
}

void schedlat_close(struct schedlat *s)
{
	if (!s)
		return;
	schedlat__destroy(s->skel);   /* detaches, closes maps; NULL is fine */
	bpfload_percpu_free(&s->percpu);
	free(s);
}

/* ---- targets ---- */

/* Userspace is the only writer of target_bits (bpfload_bitmap_mark); the
 * programs see the old or the new word, both consistent with `targets`
 * (they need bit and entry). */
static int set_target_bit(struct schedlat *s, uint32_t tgid, bool on)
{
	return bpfload_bitmap_mark(bpf_map__fd(s->skel->maps.target_bits), tgid, on, NULL);
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
	size_t n = bpfload_hash_keys(sfd, keys, SCHEDLAT_MAX_THREADS);
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
	return (int)bpfload_hash_keys(bpf_map__fd(s->skel->maps.starts), NULL, SCHEDLAT_MAX_THREADS);
}

/* ---- metrics ---- */

#define NBUCKETS (SCHEDLAT_SLOTS - 1 - SCHEDLAT_FIRST_BUCKET)

static int add_hist(struct schedlat *s, struct metrics *m, const char *name, uint32_t kind, const char *label)
{
	struct schedlat_hist h;
	uint64_t slots[SCHEDLAT_SLOTS], cum[NBUCKETS], count;
	double upper[NBUCKETS];
	int err = bpfload_percpu_sum(&s->percpu, bpf_map__fd(s->skel->maps.hist), kind, sizeof(h), &h);
	if (err)
		return err;
	memcpy(slots, h.slots, sizeof(slots));
	bpfload_log2_buckets(slots, SCHEDLAT_SLOTS, SCHEDLAT_FIRST_BUCKET, cum, upper, &count);
	if (label)
		return metrics_add_histogram(m, name, NBUCKETS, upper, cum, (double)h.sum_ns * 1e-9, count, "process",
					     label, NULL);
	return metrics_add_histogram(m, name, NBUCKETS, upper, cum, (double)h.sum_ns * 1e-9, count, NULL);
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

	uint64_t drops;
	err = bpfload_percpu_sum(&s->percpu, bpf_map__fd(s->skel->maps.stats), SCHEDLAT_STAT_DROPS, sizeof(drops),
				 &drops);
	if (err)
		return err;
	metrics_declare(m, "oneshield_agent_bpf_schedlat_drops_total", MT_COUNTER,
			"Scheduler intervals of onepanel's threads not measured: no room for the thread's start time.");
	metrics_add(m, "oneshield_agent_bpf_schedlat_drops_total", (double)drops, NULL);

	return bpfload_add_prog_metrics(m, s->skel->obj);
}
