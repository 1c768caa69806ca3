/* bpfload.c: the pure parts (names, reasons, the fallback over candidates,
 * log2 buckets) and the map helpers against real kernel maps (per-CPU sum
 * and zero, bitmap words, hash keys). The map tests need BPF (root, as in
 * CI); without it they fail unless ONESHIELD_ALLOW_NO_BPF=1, which skips.
 * Probing and loading are covered through their users (test_schedlat,
 * test_sysprobe). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpfload.h"

static void test_names_and_say(void **state)
{
	(void)state;
	assert_string_equal(bpfload_variant_name(BPFLOAD_TP_BTF_TASK_STORAGE), "tp_btf+task_storage");
	assert_string_equal(bpfload_variant_name(BPFLOAD_TP_BTF_HASH), "tp_btf+hash");
	assert_string_equal(bpfload_variant_name(BPFLOAD_RAW_TP_HASH), "raw_tp+hash");
	assert_string_equal(bpfload_variant_name(BPFLOAD_AUTO), "auto");
	assert_string_equal(bpfload_variant_name((enum bpfload_variant)42), "auto");

	char why[8] = "keep";
	bpfload_say(NULL, 8, "x%d", 1);
	bpfload_say(why, 0, "x%d", 1);
	assert_string_equal(why, "keep");
	bpfload_say(why, sizeof(why), "%s", "truncated here");
	assert_string_equal(why, "truncat");
}

/* A scripted load: fails with reasons[i] for candidate i while errs[i] is
 * not 0; records the order it was called in. */
struct script {
	const char *reasons[BPFLOAD_NVARIANTS];
	int errs[BPFLOAD_NVARIANTS];
	enum bpfload_variant seen[BPFLOAD_NVARIANTS];
	size_t calls;
};

static int scripted_load(void *ctx, enum bpfload_variant v, char *why, size_t whylen)
{
	struct script *sc = ctx;
	size_t i = sc->calls++;
	sc->seen[i] = v;
	if (sc->errs[i])
		bpfload_say(why, whylen, "%s", sc->reasons[i]);
	return sc->errs[i];
}

static void test_first_that_loads(void **state)
{
	(void)state;
	const enum bpfload_variant all[] = { BPFLOAD_TP_BTF_TASK_STORAGE, BPFLOAD_TP_BTF_HASH, BPFLOAD_RAW_TP_HASH };
	char first[256], why[256];

	/* the first loads: nothing kept */
	struct script ok = { .errs = { 0 } };
	strcpy(first, "stale");
	assert_int_equal(bpfload_first_that_loads(all, 3, scripted_load, &ok, first, sizeof(first), why,
						  sizeof(why)), 0);
	assert_int_equal(ok.calls, 1);
	assert_string_equal(first, "");

	/* the second loads: the first reason is kept, in order */
	struct script second = { .reasons = { "ts: no" }, .errs = { -EINVAL, 0 } };
	assert_int_equal(bpfload_first_that_loads(all, 3, scripted_load, &second, first, sizeof(first), why,
						  sizeof(why)), 0);
	assert_int_equal(second.calls, 2);
	assert_int_equal(second.seen[0], BPFLOAD_TP_BTF_TASK_STORAGE);
	assert_int_equal(second.seen[1], BPFLOAD_TP_BTF_HASH);
	assert_string_equal(first, "ts: no");

	/* all fail: the last error, why = first; last */
	struct script none = { .reasons = { "ts: no", "hash: no", "raw: no" }, .errs = { -EINVAL, -EPERM, -E2BIG } };
	assert_int_equal(bpfload_first_that_loads(all, 3, scripted_load, &none, first, sizeof(first), why,
						  sizeof(why)), -E2BIG);
	assert_int_equal(none.calls, 3);
	assert_string_equal(first, "ts: no");
	assert_string_equal(why, "ts: no; raw: no");

	/* all fail with the same reason: said once */
	struct script same = { .reasons = { "no BPF", "no BPF" }, .errs = { -EPERM, -EPERM } };
	assert_int_equal(bpfload_first_that_loads(all, 2, scripted_load, &same, first, sizeof(first), why,
						  sizeof(why)), -EPERM);
	assert_string_equal(why, "no BPF");

	/* one candidate: its reason only */
	struct script one = { .reasons = { "raw: no" }, .errs = { -ENOENT } };
	assert_int_equal(bpfload_first_that_loads(all + 2, 1, scripted_load, &one, first, sizeof(first), why,
						  sizeof(why)), -ENOENT);
	assert_string_equal(why, "raw: no");

	/* no why buffer: nothing kept, still the error */
	struct script nowhy = { .reasons = { "a", "b" }, .errs = { -EINVAL, -EPERM } };
	assert_int_equal(bpfload_first_that_loads(all, 2, scripted_load, &nowhy, first, sizeof(first), NULL, 0),
			 -EPERM);
	assert_string_equal(first, "");
}

static void test_log2_buckets(void **state)
{
	(void)state;
	/* 8 slots, buckets from slot 2: le 2^3, 2^4, ..., 2^7 ns (5 buckets),
	 * slots 0-1 folded into the first, slot 7 only in the count */
	const uint64_t slots[8] = { 1, 2, 3, 0, 5, 0, 7, 11 };
	uint64_t cum[5], count = 0;
	double upper[5];
	assert_int_equal(bpfload_log2_buckets(slots, 8, 2, cum, upper, &count), 5);
	const uint64_t want[5] = { 6, 6, 11, 11, 18 };
	for (int b = 0; b < 5; b++) {
		assert_int_equal(cum[b], want[b]);
		assert_true(upper[b] == (double)(1ULL << (b + 3)) * 1e-9);
	}
	assert_int_equal(count, 29);
}

/* A map or a skip/fail when BPF is not available here. */
static int map_or_skip(enum bpf_map_type type, uint32_t value_size, uint32_t max_entries)
{
	int fd = bpf_map_create(type, "bpfload_test", sizeof(uint32_t), value_size, max_entries, NULL);
	if (fd >= 0)
		return fd;
	const char *allow = getenv("ONESHIELD_ALLOW_NO_BPF");
	print_message("bpf_map_create: %s\n", strerror(errno));
	if (allow && strcmp(allow, "1") == 0)
		skip();
	fail_msg("cannot create a BPF map: %s", strerror(errno));
	return -1;
}

struct pair {
	unsigned long long a, b;
};

static void test_percpu(void **state)
{
	(void)state;
	int fd = map_or_skip(BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(struct pair), 4);
	struct bpfload_percpu pc;
	char why[128] = "";
	assert_int_equal(bpfload_percpu_init(&pc, sizeof(struct pair), why, sizeof(why)), 0);
	assert_int_equal(pc.ncpus, libbpf_num_possible_cpus());

	/* key 2: CPU c holds { c + 1, 10 } */
	struct pair *v = calloc((size_t)pc.ncpus, sizeof(*v));
	assert_non_null(v);
	unsigned long long want_a = 0;
	for (int c = 0; c < pc.ncpus; c++) {
		v[c].a = (unsigned long long)c + 1;
		v[c].b = 10;
		want_a += v[c].a;
	}
	uint32_t key = 2;
	assert_int_equal(bpf_map_update_elem(fd, &key, v, BPF_ANY), 0);
	struct pair sum;
	assert_int_equal(bpfload_percpu_sum(&pc, fd, 2, sizeof(sum), &sum), 0);
	assert_int_equal(sum.a, want_a);
	assert_int_equal(sum.b, 10ULL * (unsigned long long)pc.ncpus);
	assert_int_equal(bpfload_percpu_sum(&pc, fd, 0, sizeof(sum), &sum), 0);
	assert_int_equal(sum.a, 0);

	/* errors: a key out of range, a value larger than the buffer's */
	assert_int_equal(bpfload_percpu_sum(&pc, fd, 4, sizeof(sum), &sum), -ENOENT);
	char big[24];
	assert_int_equal(bpfload_percpu_sum(&pc, fd, 2, sizeof(big), big), -EINVAL);

	assert_int_equal(bpfload_percpu_zero(&pc, fd, 4), 0);
	assert_int_equal(bpfload_percpu_sum(&pc, fd, 2, sizeof(sum), &sum), 0);
	assert_int_equal(sum.a, 0);
	assert_int_equal(sum.b, 0);
	assert_int_equal(bpfload_percpu_zero(&pc, fd, 5), -E2BIG);

	free(v);
	bpfload_percpu_free(&pc);
	assert_null(pc.buf);
	bpfload_percpu_free(&pc);   /* twice is fine */
	close(fd);
}

static void test_bitmap_and_keys(void **state)
{
	(void)state;
	int fd = map_or_skip(BPF_MAP_TYPE_ARRAY, sizeof(uint64_t), 4);
	uint64_t w;
	bool was = true;
	assert_int_equal(bpfload_bitmap_mark(fd, 70, true, &was), 0);
	assert_false(was);
	assert_int_equal(bpfload_bitmap_mark(fd, 71, true, NULL), 0);
	assert_int_equal(bpfload_bitmap_mark(fd, 70, true, &was), 0);
	assert_true(was);
	assert_int_equal(bpfload_bitmap_word(fd, 64, &w), 0);
	assert_int_equal(w, (1ULL << 6) | (1ULL << 7));
	assert_int_equal(bpfload_bitmap_mark(fd, 70, false, &was), 0);
	assert_true(was);
	assert_int_equal(bpfload_bitmap_word(fd, 127, &w), 0);
	assert_int_equal(w, 1ULL << 7);
	assert_int_equal(bpfload_bitmap_word(fd, 0, &w), 0);
	assert_int_equal(w, 0);
	assert_int_equal(bpfload_bitmap_word(fd, 4 * 64, &w), -ENOENT);
	assert_int_equal(bpfload_bitmap_mark(fd, 4 * 64, true, NULL), -ENOENT);
	close(fd);

	fd = map_or_skip(BPF_MAP_TYPE_HASH, sizeof(uint64_t), 16);
	uint64_t val = 0;
	for (uint32_t k = 1; k <= 5; k++)
		assert_int_equal(bpf_map_update_elem(fd, &k, &val, BPF_ANY), 0);
	assert_int_equal(bpfload_hash_keys(fd, NULL, 100), 5);
	assert_int_equal(bpfload_hash_keys(fd, NULL, 3), 3);
	uint32_t keys[8], seen = 0;
	assert_int_equal(bpfload_hash_keys(fd, keys, 8), 5);
	for (int i = 0; i < 5; i++)
		seen |= 1u << keys[i];
	assert_int_equal(seen, 0x3e);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_and_say),
		cmocka_unit_test(test_first_that_loads),
		cmocka_unit_test(test_log2_buckets),
		cmocka_unit_test(test_percpu),
		cmocka_unit_test(test_bitmap_and_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
