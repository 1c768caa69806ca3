/* libFuzzer target for spool recovery: arbitrary bytes as spool files.
 *
 * The first input byte picks what the rest becomes, in a fresh directory
 * under /dev/shm (tmpfs: fsyncs cost nothing):
 *   0  the only segment, seg-1 (torn tails, resync, bad headers);
 *   1  the state file, beside a valid spool of three segments;
 *   2  two segments, seg-1 and seg-(1+N) (the next byte is N, the two
 *      after it, little-endian, the size of seg-1): damage in an older
 *      segment, overlaps;
 *   3  the oldest of the three valid segments replaced by the rest.
 * Properties, besides ASan/UBSan cleanliness:
 * - spool_open either fails with a message or returns a spool whose cursor
 *   (from the first unacked seq) gives records and LOST items that cover
 *   every seq once, in order, below the next seq, with payloads under the
 *   limit, and as many records and lost seqs as spool_stats says;
 * - an append is delivered next; an ack of a handed-out seq is taken, one
 *   beyond refused;
 * - after spool_close, a second open recovers nothing more (no new torn
 *   tail or quarantine: what the first open left is clean) and agrees on
 *   the acked and next seqs, records and gaps.
 * Seeds: FUZZ_SPOOL_SEEDS=dir ./fuzz_spool writes one valid input per mode
 * (spools made by the spool itself) into dir and exits; the corpus in
 * tests/fuzz/corpus/fuzz_spool was made that way.
 *
 *   make BUILD=build-spool-fuzz build-spool-fuzz/fuzz/fuzz_spool
 *   build-spool-fuzz/fuzz/fuzz_spool -max_total_time=60 tests/fuzz/corpus/fuzz_spool */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__); __builtin_trap(); } } while (0)

static char g_dir[PATH_MAX];
static const struct spool_opts g_opts = {
	.max_bytes = 1 << 20, .segment_bytes = 4096, .fsync = SPOOL_FSYNC_NEVER, .quiet = true,
};

/* A valid spool of three segments, as bytes: the template of modes 1, 3. */
struct tmpl_file {
	char name[64];
	uint8_t *data;
	size_t len;
};
static struct tmpl_file g_tmpl[4];	/* state + 3 segments */
static size_t g_ntmpl;

static void empty_dir(const char *dir)
{
	char p[PATH_MAX + 256];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
}

static void put(const char *name, const uint8_t *data, size_t len)
{
	char p[PATH_MAX + 64];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", g_dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, data, len) == (ssize_t)len);
	close(fd);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0);
	CHECK(fstat(fd, &st) == 0);
	b = malloc((size_t)st.st_size + 1);
	CHECK(b);
	CHECK(read(fd, b, (size_t)st.st_size) == st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

/* 30 records of various sizes in 4096-byte segments, 5 acked: 3 segments. */
static void make_template(void)
{
	char p[PATH_MAX + 256];
	struct dirent *de;
	struct spool *s;
	uint8_t buf[1000];
	char err[256];
	DIR *d;
	int i;

	empty_dir(g_dir);
	CHECK(spool_open(g_dir, &g_opts, &s, err, sizeof(err)) == 0);
	for (i = 1; i <= 30; i++) {
		memset(buf, i, sizeof(buf));
		CHECK(spool_append(s, (uint8_t)i, buf, (size_t)(i * 61 % 700), NULL) == 0);
	}
	CHECK(spool_ack(s, 5) == 0);
	CHECK(spool_close(s) == 0);
	d = opendir(g_dir);
	CHECK(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		CHECK(g_ntmpl < 4);
		snprintf(g_tmpl[g_ntmpl].name, sizeof(g_tmpl[g_ntmpl].name), "%s", de->d_name);
		snprintf(p, sizeof(p), "%s/%s", g_dir, de->d_name);
		g_tmpl[g_ntmpl].data = slurp(p, &g_tmpl[g_ntmpl].len);
		g_ntmpl++;
	}
	closedir(d);
	CHECK(g_ntmpl == 4);
	empty_dir(g_dir);
}

/* The nth template file whose name starts with prefix, by name (segments:
 * by base seq). */
static const struct tmpl_file *tmpl(const char *prefix, int nth)
{
	const struct tmpl_file *v[4], *t;
	size_t i, n = 0, j;

	for (i = 0; i < g_ntmpl; i++)
		if (!strncmp(g_tmpl[i].name, prefix, strlen(prefix)))
			v[n++] = &g_tmpl[i];
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(v[j - 1]->name, v[j]->name) > 0; j--) {
			t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	CHECK(nth < (int)n);
	return v[nth];
}

static void put_tmpl(const struct tmpl_file *t)
{
	put(t->name, t->data, t->len);
}

/* Walk everything a cursor gives from the start; check it against the stats. */
static void walk(struct spool *s, uint64_t *last_item)
{
	struct spool_cursor *c;
	struct spool_stats st;
	struct spool_item it;
	uint64_t prev, records = 0, lost = 0, n = 0;
	int r;

	spool_stats(s, &st);
	CHECK(spool_cursor_open(s, 0, &c) == 0);
	prev = st.acked_seq;
	while ((r = spool_cursor_next(c, &it)) == 1) {
		CHECK(++n < 10000000);
		CHECK(it.seq == prev + 1);	/* nothing skipped, nothing twice */
		if (it.kind == SPOOL_ITEM_RECORD) {
			CHECK(it.len <= SPOOL_MAX_PAYLOAD);
			CHECK(it.len == 0 || it.data != NULL);
			if (it.len)	/* readable to its end (ASan) */
				CHECK(((volatile const uint8_t *)it.data)[it.len - 1] ==
				      ((const uint8_t *)it.data)[it.len - 1]);
			prev = it.seq;
			records++;
		} else {
			CHECK(it.kind == SPOOL_ITEM_LOST);
			CHECK(it.lost_to >= it.seq);
			CHECK(spool_lost_reason_name(it.reason) != NULL);
			lost += it.lost_to - it.seq + 1;
			prev = it.lost_to;
		}
		CHECK(prev < st.next_seq);
	}
	CHECK(r == 0);
	CHECK(records == st.records);
	CHECK(lost == st.lost_seqs);
	*last_item = prev;
	spool_cursor_close(c);
}

static void run(void)
{
	struct spool_stats a, b;
	struct spool_cursor *c;
	struct spool_item it;
	struct spool *s;
	uint64_t last, seq;
	char err[512];
	int r;

	err[0] = 'x';
	r = spool_open(g_dir, &g_opts, &s, err, sizeof(err));
	if (r) {
		CHECK(r < 0 && s == NULL && err[0] && memchr(err, '\0', sizeof(err)));
		return;
	}
	walk(s, &last);
	/* an append comes next */
	CHECK(spool_cursor_open(s, last, &c) == 0);
	CHECK(spool_append(s, 7, "fuzz", 4, &seq) == 0);
	spool_stats(s, &a);
	CHECK(seq == a.next_seq - 1);
	CHECK(spool_cursor_next(c, &it) == 1);
	if (it.kind == SPOOL_ITEM_LOST) {	/* a gap just before it */
		CHECK(it.lost_to == seq - 1);
		CHECK(spool_cursor_next(c, &it) == 1);
	}
	CHECK(it.kind == SPOOL_ITEM_RECORD && it.seq == seq && it.len == 4 && !memcmp(it.data, "fuzz", 4));
	CHECK(spool_cursor_next(c, &it) == 0);
	spool_cursor_close(c);
	CHECK(spool_ack(s, seq + 1) == -ERANGE);
	CHECK(spool_ack(s, a.acked_seq + (seq - a.acked_seq) / 2) == 0);
	walk(s, &last);
	spool_stats(s, &a);
	CHECK(spool_close(s) == 0);

	/* what the first open left is clean */
	CHECK(spool_open(g_dir, &g_opts, &s, err, sizeof(err)) == 0);
	spool_stats(s, &b);
	CHECK(b.torn_tails == a.torn_tails);
	CHECK(b.quarantined == a.quarantined);
	CHECK(b.acked_seq == a.acked_seq);
	CHECK(b.next_seq == a.next_seq);
	CHECK(b.records == a.records);
	CHECK(b.lost_seqs == a.lost_seqs);
	CHECK(b.dropped_records == a.dropped_records);
	walk(s, &last);
	CHECK(spool_close(s) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *rest;
	size_t n, cut;
	char name[64];
	int i;

	if (size < 1)
		return 0;
	rest = data + 1;
	n = size - 1;
	empty_dir(g_dir);
	switch (data[0] % 4) {
	case 0:
		put("seg-00000000000000000001.spool", rest, n);
		break;
	case 1:
		for (i = 0; i < 3; i++)
			put_tmpl(tmpl("seg-", i));
		put("state", rest, n);
		break;
	case 2:
		if (n < 3)
			return 0;
		cut = (size_t)rest[1] | (size_t)rest[2] << 8;
		if (cut > n - 3)
			cut = n - 3;
		put("seg-00000000000000000001.spool", rest + 3, cut);
		if (rest[0]) {	/* else the same name twice: one file */
			snprintf(name, sizeof(name), "seg-%020u.spool", 1u + rest[0]);
			put(name, rest + 3 + cut, n - 3 - cut);
		}
		break;
	default:
		put(tmpl("seg-", 0)->name, rest, n);
		put_tmpl(tmpl("seg-", 1));
		put_tmpl(tmpl("seg-", 2));
		put_tmpl(tmpl("state", 0));
		break;
	}
	run();
	return 0;
}

static void write_seed(const char *out, const char *name, int mode, const uint8_t *pre, size_t npre,
		       const uint8_t *data, size_t len)
{
	char p[PATH_MAX + 64];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", out, name);
	f = fopen(p, "wb");
	CHECK(f);
	fputc(mode, f);
	fwrite(pre, 1, npre, f);
	fwrite(data, 1, len, f);
	CHECK(fclose(f) == 0);
}

/* The state of a spool that dropped records at its cap (it has notes). */
static uint8_t *state_with_notes(size_t *len)
{
	const struct spool_opts o = { .max_bytes = 8192, .segment_bytes = 4096,
				      .fsync = SPOOL_FSYNC_NEVER, .quiet = true };
	char p[PATH_MAX + 16], err[256];
	struct spool *s;
	uint8_t buf[300] = { 0 };
	uint8_t *b;
	int i;

	empty_dir(g_dir);
	CHECK(spool_open(g_dir, &o, &s, err, sizeof(err)) == 0);
	for (i = 0; i < 40; i++)
		CHECK(spool_append(s, 1, buf, sizeof(buf), NULL) == 0);
	CHECK(spool_close(s) == 0);
	snprintf(p, sizeof(p), "%s/state", g_dir);
	b = slurp(p, len);
	empty_dir(g_dir);
	return b;
}

/* One valid input per mode, from the template, and a few damaged ones. */
static void write_seeds(const char *out)
{
	const struct tmpl_file *t0 = tmpl("seg-", 0), *t1 = tmpl("seg-", 1), *st = tmpl("state", 0);
	uint8_t pre[3], *b;
	size_t n;

	write_seed(out, "valid_mode0", 0, NULL, 0, t0->data, t0->len);
	write_seed(out, "valid_mode1", 1, NULL, 0, st->data, st->len);
	pre[0] = (uint8_t)(strtoul(t1->name + 4, NULL, 10) - 1);	/* seg-(1+N) */
	pre[1] = (uint8_t)(t0->len & 0xff);
	pre[2] = (uint8_t)(t0->len >> 8);
	b = malloc(t0->len + t1->len);
	CHECK(b);
	memcpy(b, t0->data, t0->len);
	memcpy(b + t0->len, t1->data, t1->len);
	write_seed(out, "valid_mode2", 2, pre, 3, b, t0->len + t1->len);
	pre[0] = 4;	/* seg-5 overlaps seg-1 */
	write_seed(out, "overlap_mode2", 2, pre, 3, b, t0->len + t1->len);
	free(b);
	write_seed(out, "valid_mode3", 3, NULL, 0, t0->data, t0->len);
	write_seed(out, "torn_mode0", 0, NULL, 0, t0->data, t0->len - 5);
	b = malloc(t0->len);
	CHECK(b);
	memcpy(b, t0->data, t0->len);
	b[t0->len / 2] ^= 0x40;
	write_seed(out, "corrupt_mode3", 3, NULL, 0, b, t0->len);
	write_seed(out, "corrupt_mode0", 0, NULL, 0, b, t0->len);
	free(b);
	b = state_with_notes(&n);
	write_seed(out, "notes_mode1", 1, NULL, 0, b, n);
	free(b);
}

static void cleanup(void)
{
	empty_dir(g_dir);
	rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_SPOOL_SEEDS");

	(void)argc;
	(void)argv;
	snprintf(g_dir, sizeof(g_dir), "/dev/shm/fuzz_spool-%d", (int)getpid());
	if (access("/dev/shm", W_OK))
		snprintf(g_dir, sizeof(g_dir), "/tmp/fuzz_spool-%d", (int)getpid());
	if (mkdir(g_dir, 0700) && errno != EEXIST) {
		perror(g_dir);
		exit(1);
	}
	atexit(cleanup);
	make_template();
	if (seeds) {
		write_seeds(seeds);
		exit(0);
	}
	return 0;
}
