/* What the eBPF modules (schedlat, sysprobe, proclife) share when they probe
 * the kernel, choose and load a variant of their object, and read it back:
 * one copy of the logic, each module keeps only what is its own (its
 * skeleton, rodata, maps and metrics).
 *
 * The variants: the same program set exists twice in an object, as tp_btf
 * (typed task pointers; per-thread state may live in task storage) and as
 * raw_tp (CO-RE reads; per-thread state in a bounded hash). Kernel features
 * are probed rather than inferred from the version; the candidates the
 * probe allows are then tried in order, best first, and the first that
 * loads wins. A failure of a better candidate is kept (first_why) so that
 * the module can log once why it runs the worse one.
 *
 * Per-CPU maps: every value the modules read from a per-CPU array is a
 * struct of unsigned 64-bit counters (or one counter); userspace sums the
 * CPUs word by word.
 *
 * All functions return 0 or -errno unless said otherwise and leave errno
 * alone on success. A why/whylen pair is the caller's one-line reason buffer;
 * why may be NULL (nothing is written). Not thread-safe beyond what libbpf
 * is: the callers are single-owner modules. */
#ifndef OS_BPFLOAD_H
#define OS_BPFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bpf_object;
struct metrics;

/* How programs attach and where per-thread start times live. The modules'
 * own variant enums (schedlat_variant, sysprobe_variant) have these values. */
enum bpfload_variant {
	BPFLOAD_AUTO = 0,             /* probe and take the best that loads */
	BPFLOAD_TP_BTF_TASK_STORAGE,  /* tp_btf, start times in task storage */
	BPFLOAD_TP_BTF_HASH,          /* tp_btf, start times in a bounded hash */
	BPFLOAD_RAW_TP_HASH,          /* raw_tp (older kernels), bounded hash */
};
#define BPFLOAD_NVARIANTS 3       /* candidates at most (AUTO is not one) */

/* "tp_btf+task_storage", "tp_btf+hash", "raw_tp+hash"; "auto" otherwise. */
const char *bpfload_variant_name(enum bpfload_variant v);

/* printf into why (truncated to whylen); nothing when why is NULL or
 * whylen 0. */
void bpfload_say(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* What the kernel offers, from bpfload_probe_kernel(). */
struct bpfload_probe {
	bool tp_btf;                  /* tp_btf programs load against the tracepoint */
	bool task_storage;            /* task storage usable (see storage_in_sched) */
	int tp_params;                /* parameters of the tracepoint's prototype,
	                               * the void *ctx included; -1 when unknown */
	char tp_btf_why[128];         /* why not tp_btf */
	char task_storage_why[128];   /* why not task storage */
};

/* What a module probes for. */
struct bpfload_spec {
	const char *module;           /* "schedlat": prefix of its log lines */
	const char *prog_name;        /* name of the trivial probe program */
	const char *tp_typedef;       /* the btf_trace_<tracepoint> to load tp_btf against */
	bool storage_in_sched;        /* task storage written from inside the scheduler */
};

/* Probe: kernel BTF exists (CO-RE needs it; else fails with why "no kernel
 * BTF ..."); a trivial program named prog_name loads as raw_tp (else fails,
 * "loading BPF programs is not possible: ..."); the BTF has the typedef
 * tp_typedef (e.g. "btf_trace_sys_enter") and a trivial tp_btf program
 * loads against it; the task storage map type exists and, when
 * storage_in_sched (storage written from inside the scheduler), is
 * allocated by the BPF allocator (struct bpf_local_storage_map has bpf_ma;
 * older kernels kmalloc(GFP_ATOMIC) it). A missing feature is not a
 * failure: *p says which and why. */
int bpfload_probe_kernel(struct bpfload_probe *p, const struct bpfload_spec *spec, char *why, size_t whylen);

/* Probes (bpfload_probe_kernel, into *p) and puts the candidates for
 * variant v, best first, into cand[BPFLOAD_NVARIANTS]; returns how many, or
 * the probe's -errno. AUTO: task storage, tp_btf + hash, raw_tp + hash as
 * the probe allows, logging at info level (prefixed "<module>: ") what is
 * missing. A forced variant the kernel lacks: -EOPNOTSUPP, why
 * "<variant>: <reason>". v must be a valid variant. */
int bpfload_candidates(enum bpfload_variant v, const struct bpfload_spec *spec, struct bpfload_probe *p,
		       enum bpfload_variant *cand, char *why, size_t whylen);

/* Loads one candidate; 0, or -errno with why set. */
typedef int (*bpfload_load_fn)(void *ctx, enum bpfload_variant v, char *why, size_t whylen);

/* Tries cand[0..ncand) with load until one succeeds (0) or all failed (the
 * last -errno). first_why (first_len bytes, at least 1) receives the first
 * failure's reason ("" when the first candidate loaded), for the caller's
 * log line. When all failed, why is "<first reason>; <last reason>" if there
 * were several candidates and the two differ, else the last reason. */
int bpfload_first_that_loads(const enum bpfload_variant *cand, size_t ncand, bpfload_load_fn load, void *ctx,
			     char *first_why, size_t first_len, char *why, size_t whylen);

/* The end of a successful choice: logs "<module>: <first_why>; using
 * <variant>" as a warning when a better candidate failed (first_why not
 * empty), and puts the variant's name into why. */
void bpfload_chosen(const char *module, const char *first_why, enum bpfload_variant v, char *why, size_t whylen);

/* A buffer for reading and writing per-CPU array entries: room for ncpus
 * values of up to value_size bytes (the largest value of the maps it
 * serves). Values are structs of unsigned 64-bit counters only, so their
 * size is a multiple of 8 (what the kernel rounds per-CPU values to). */
struct bpfload_percpu {
	int ncpus;                    /* possible CPUs */
	size_t value_size;
	void *buf;
};
/* Counts the possible CPUs and allocates the buffer. -errno with why
 * "counting possible CPUs: ..." or "out of memory"; pc is then empty (free
 * is still fine). */
int bpfload_percpu_init(struct bpfload_percpu *pc, size_t value_size, char *why, size_t whylen);
/* Frees the buffer; an empty or freed pc is fine. */
void bpfload_percpu_free(struct bpfload_percpu *pc);
/* Reads key of the per-CPU array fd (values of value_size bytes, at most
 * pc->value_size) and stores the per-word sum over the CPUs into sum
 * (value_size bytes). */
int bpfload_percpu_sum(const struct bpfload_percpu *pc, int fd, uint32_t key, size_t value_size, void *sum);
/* Sets keys 0..nkeys-1 of the per-CPU array fd to zero on every CPU. */
int bpfload_percpu_zero(const struct bpfload_percpu *pc, int fd, uint32_t nkeys);

/* The keys of the u32-keyed hash fd, at most max, into keys (NULL: only
 * count them); returns how many. Key 0 is taken as absent (the idle task,
 * never a thread id key): the walk starts at the first key. */
size_t bpfload_hash_keys(int fd, uint32_t *keys, size_t max);

/* Bitmaps kept in an array of u64 words (bit n % 64 of word n / 64), read
 * and written with map syscalls, userspace being the only writer. */
int bpfload_bitmap_word(int fd, uint32_t n, uint64_t *word);
/* Set (on) or clear bit n; *was (may be NULL): whether it was set. */
int bpfload_bitmap_mark(int fd, uint32_t n, bool on, bool *was);

/* A log2 histogram of ns (slot s: 2^s <= d < 2^(s+1), the last slot
 * open-ended) as Prometheus buckets: slots below first are folded into the
 * first bucket; bucket b is slot first + b with le = 2^(first+b+1) ns in
 * seconds (upper[b]), counts cumulative (cum[b]); *count (all samples,
 * +Inf) includes the last slot. cum and upper hold nslots - 1 - first
 * entries; returns that number. */
int bpfload_log2_buckets(const uint64_t *slots, int nslots, int first, uint64_t *cum, double *upper,
			 uint64_t *count);

/* Self-cost of a loaded program, from the kernel's BPF stats. */
struct bpfload_prog_stat {
	const char *name;          /* program name, static storage of the object */
	uint32_t id;               /* kernel program id */
	uint64_t run_cnt;          /* counted only while stats are enabled */
	uint64_t run_time_ns;
	uint64_t recursion_misses; /* runs skipped (always counted): events lost */
};
/* One entry per loaded program of obj (those not autoloaded are skipped),
 * at most max; returns how many or -errno. */
int bpfload_prog_stats(const struct bpf_object *obj, struct bpfload_prog_stat *out, size_t max);

/* Adds oneshield_agent_bpf_prog_{runs,run_seconds,recursion_misses}_total
 * {prog} (declared with their help) for each loaded program of obj. */
int bpfload_add_prog_metrics(struct metrics *m, const struct bpf_object *obj);

#endif
