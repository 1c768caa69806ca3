/* Unit tests for spool.c, on real directories under /tmp (mkdtemp).
 *
 * What is checked, and how:
 * - append / iterate / ack in order, idempotent acks, acks never handed out
 *   refused, cursors from a given seq (reconnect), the interval policy's
 *   visibility driven by spool_tick with a fake clock (no sleeps);
 * - reopen keeps the unacked records, the acked seq, the seq counter and the
 *   spool id;
 * - torn tails: the newest segment cut at every byte offset inside its last
 *   record, and a byte of that record's header CRC, data CRC and payload
 *   flipped: the record is gone after reopen, everything before it intact;
 *   with the state of a clean close it comes back as a LOST item
 *   (spool_crash), with a state from before it (a crash mid-append) its seq
 *   is simply next again;
 * - a corrupt older segment (record or header) is quarantined as *.corrupt
 *   and its seqs come as one LOST item (spool_corrupt); damage with valid
 *   records after it in the newest segment keeps the prefix and a copy;
 * - the cap: the exact count and range dropped, one LOST item (spool_full),
 *   also for a cursor that had already passed part of it, surviving reopen
 *   until acked;
 * - wholly acked segments are deleted, the newest kept;
 * - a fork()ed child appending with fsync-every-append killed by SIGKILL at
 *   a random point, several rounds: every append that returned is there and
 *   what is there is a clean prefix with the right payloads;
 * - disk full (a 64 KiB tmpfs; root) and permission denied (a child with
 *   uid/gid 65534 when root): clear errors, nothing half-written;
 * - a segment damaged while the spool is open: the cursor quarantines it
 *   and reports the hole; more gaps than remembered reasons (the oldest
 *   become spool_unknown, none is lost; the fullest state file reads back);
 * - a corrupt state file: kept aside, new spool id, records still there;
 *   odd files (a directory or symlink named like a segment, a torn
 *   segment creation, stray names) ignored or cleaned up.
 * The file format constants below are the documented ones (spool.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spool.h"

#define SEG_HDR 32u
#define REC_HDR 24u

static uint64_t rec_size(size_t len)
{
	return REC_HDR + ((len + 7) & ~(size_t)7);
}

/* snprintf into a PATH_MAX buffer, failing the test on truncation */
__attribute__((format(printf, 2, 3)))
static void pathf(char *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, PATH_MAX, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= PATH_MAX)
		fail_msg("path too long");
}

/* ---- fixtures ---- */

struct fx {
	char root[PATH_MAX];
	char dir[PATH_MAX];	/* root/spool */
	char mnt[PATH_MAX];	/* root/mnt, when a tmpfs is mounted there */
	bool mounted;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	pathf(fx->root, "/tmp/test-spool-XXXXXX");
	if (!mkdtemp(fx->root))
		return -1;
	pathf(fx->dir, "%s/spool", fx->root);
	pathf(fx->mnt, "%s/mnt", fx->root);
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	if (fx->mounted)
		umount2(fx->mnt, MNT_DETACH);
	nftw(fx->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* ---- payloads: a function of the seq, so any record can be checked ---- */

static size_t g_fixed_len;	/* 0: variable lengths */
static bool g_big;		/* variable lengths up to 10 KB (several pages) */

static size_t plen(uint64_t seq)
{
	if (g_fixed_len)
		return g_fixed_len;
	return g_big ? (size_t)((seq * 2654435761u) % 10000) : (size_t)((seq * 37) % 700);
}

static void pfill(uint64_t seq, uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(seq * 131 + i * 7 + 3);
}

static uint8_t ptype(uint64_t seq)
{
	return (uint8_t)(seq % 251);
}

static struct spool *xopen(const char *dir, const struct spool_opts *o)
{
	struct spool *s = NULL;
	char err[512];
	int r = spool_open(dir, o, &s, err, sizeof(err));

	if (r)
		fail_msg("spool_open %s: %d %s", dir, r, err);
	return s;
}

/* Append the record for `want` (its seq must come out as want). */
static void xappend(struct spool *s, uint64_t want)
{
	static uint8_t buf[1 << 16];
	uint64_t seq = 0;
	size_t len = plen(want);
	int r;

	pfill(want, buf, len);
	r = spool_append(s, ptype(want), buf, len, &seq);
	if (r)
		fail_msg("append %llu: %d %s", (unsigned long long)want, r, spool_error(s));
	assert_int_equal(seq, want);
}

static void append_range(struct spool *s, uint64_t from, uint64_t to)
{
	for (uint64_t q = from; q <= to; q++)
		xappend(s, q);
}

static void expect_records(struct spool_cursor *c, uint64_t from, uint64_t to)
{
	static uint8_t want[1 << 16];
	struct spool_item it;

	for (uint64_t q = from; q <= to; q++) {
		int r = spool_cursor_next(c, &it);

		if (r != 1)
			fail_msg("want record %llu, cursor said %d", (unsigned long long)q, r);
		if (it.kind != SPOOL_ITEM_RECORD)
			fail_msg("want record %llu, got LOST %llu-%llu", (unsigned long long)q,
				 (unsigned long long)it.seq, (unsigned long long)it.lost_to);
		assert_int_equal(it.seq, q);
		assert_int_equal(it.type, ptype(q));
		assert_int_equal(it.len, plen(q));
		pfill(q, want, it.len);
		if (it.len)
			assert_memory_equal(it.data, want, it.len);
	}
}

static void expect_lost(struct spool_cursor *c, uint64_t from, uint64_t to, enum spool_lost_reason why)
{
	struct spool_item it;

	assert_int_equal(spool_cursor_next(c, &it), 1);
	if (it.kind != SPOOL_ITEM_LOST)
		fail_msg("want LOST %llu-%llu, got record %llu", (unsigned long long)from,
			 (unsigned long long)to, (unsigned long long)it.seq);
	assert_int_equal(it.seq, from);
	assert_int_equal(it.lost_to, to);
	assert_int_equal(it.reason, why);
}

static void expect_end(struct spool_cursor *c)
{
	struct spool_item it;
	int r = spool_cursor_next(c, &it);

	if (r != 0)
		fail_msg("want the end, got %d (kind %d seq %llu)", r, r == 1 ? (int)it.kind : 0,
			 r == 1 ? (unsigned long long)it.seq : 0ull);
}

static struct spool_cursor *xcursor(struct spool *s, uint64_t after)
{
	struct spool_cursor *c;

	assert_int_equal(spool_cursor_open(s, after, &c), 0);
	return c;
}

static void seg_path(char out[PATH_MAX], const char *dir, uint64_t base, const char *suffix)
{
	pathf(out, "%s/seg-%020llu.spool%s", dir, (unsigned long long)base, suffix);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static void put_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void flip_byte(const char *path, uint64_t off)
{
	uint8_t b;
	int fd = open(path, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static size_t count_suffix(const char *dir, const char *suffix)
{
	size_t n = 0, sl = strlen(suffix);
	struct dirent *de;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l > sl && !strcmp(de->d_name + l - sl, suffix))
			n++;
	}
	closedir(d);
	return n;
}

static const struct spool_opts small_opts = {
	.max_bytes = 1 << 20, .segment_bytes = 4096, .fsync = SPOOL_FSYNC_ALWAYS, .quiet = true,
};

/* ---- CRC ---- */

static void test_crc32c(void **state)
{
	uint8_t zeros[32] = { 0 }, ones[32], buf[1000];
	uint32_t c;
	size_t i;

	(void)state;
	/* RFC 3720 B.4 and the usual check value */
	assert_int_equal(spool_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(spool_crc32c(0, zeros, 32), 0x8a9136aau);
	memset(ones, 0xff, sizeof(ones));
	assert_int_equal(spool_crc32c(0, ones, 32), 0x62a8ab43u);
	assert_int_equal(spool_crc32c(0, "", 0), 0);
	/* in pieces at every split, unaligned starts included */
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 17 + 1);
	c = spool_crc32c(0, buf, sizeof(buf));
	for (i = 0; i <= 40; i++)
		assert_int_equal(spool_crc32c(spool_crc32c(0, buf, i), buf + i, sizeof(buf) - i), c);
}

/* ---- basics ---- */

static void test_append_iterate_ack(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool_cursor *c, *c2;
	struct spool *s;
	uint64_t seq;
	char err[256];
	int r;

	g_fixed_len = 0;
	s = xopen(fx->dir, &small_opts);
	assert_int_equal(strlen(spool_id(s)), 32);
	c = xcursor(s, 0);
	expect_end(c);
	append_range(s, 1, 100);
	expect_records(c, 1, 60);
	append_range(s, 101, 120);
	expect_records(c, 61, 120);
	expect_end(c);

	spool_stats(s, &st);
	assert_int_equal(st.records, 120);
	assert_int_equal(st.first_seq, 1);
	assert_int_equal(st.last_seq, 120);
	assert_int_equal(st.next_seq, 121);
	assert_int_equal(st.durable_seq, 120);
	assert_int_equal(st.lost_ranges, 0);
	assert_true(st.segments > 5);

	/* acks: idempotent, never beyond what was handed out */
	assert_int_equal(spool_ack(s, 50), 0);
	assert_int_equal(spool_ack(s, 30), 0);
	assert_int_equal(spool_ack(s, 50), 0);
	assert_int_equal(spool_ack(s, 121), -ERANGE);
	assert_non_null(strstr(spool_error(s), "121"));
	spool_stats(s, &st);
	assert_int_equal(st.acked_seq, 50);
	assert_int_equal(st.records, 70);

	/* a new cursor starts after the acked seq; so does one asked for less */
	c2 = xcursor(s, 0);
	expect_records(c2, 51, 120);
	expect_end(c2);
	spool_cursor_close(c2);
	c2 = xcursor(s, 10);
	assert_int_equal(spool_cursor_pos(c2), 51);
	expect_records(c2, 51, 52);
	spool_cursor_close(c2);
	/* reconnect: the server has up to 100 */
	c2 = xcursor(s, 100);
	expect_records(c2, 101, 120);
	expect_end(c2);
	spool_cursor_close(c2);
	/* a server ahead of us gets the new records, not silence */
	c2 = xcursor(s, 5000);
	expect_end(c2);
	xappend(s, 121);
	expect_records(c2, 121, 121);
	spool_cursor_close(c2);

	/* an ack overtaking a cursor moves it */
	c2 = xcursor(s, 60);
	assert_int_equal(spool_ack(s, 110), 0);
	expect_records(c2, 111, 121);
	spool_cursor_close(c2);

	/* payload limits; a refused append uses no seq */
	r = spool_append(s, 1, err, 5000, &seq);
	assert_int_equal(r, -EMSGSIZE);
	assert_non_null(strstr(spool_error(s), "over the limit"));
	assert_int_equal(spool_append(s, 1, NULL, 3, &seq), -EINVAL);
	assert_int_equal(spool_append(s, 9, NULL, 0, &seq), 0);	/* empty payload */
	assert_int_equal(seq, 122);
	expect_records(c, 121, 121);
	{
		struct spool_item it;

		assert_int_equal(spool_cursor_next(c, &it), 1);
		assert_int_equal(it.seq, 122);
		assert_int_equal(it.len, 0);
		assert_int_equal(it.type, 9);
	}
	expect_end(c);

	spool_cursor_close(c);
	assert_int_equal(spool_close(s), 0);
	spool_cursor_close(NULL);
	assert_int_equal(spool_close(NULL), 0);
}

static void test_bad_opts(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	struct spool *s = (struct spool *)1;
	char err[256];

	o.segment_bytes = 100;
	assert_int_equal(spool_open(fx->dir, &o, &s, err, sizeof(err)), -EINVAL);
	assert_null(s);
	assert_non_null(strstr(err, "segment_bytes"));
	o = small_opts;
	o.max_bytes = o.segment_bytes;
	assert_int_equal(spool_open(fx->dir, &o, &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "max_bytes"));
	o = small_opts;
	o.fsync = (enum spool_fsync)7;
	assert_int_equal(spool_open(fx->dir, &o, &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "fsync"));
	assert_int_equal(spool_open("", NULL, &s, err, sizeof(err)), -EINVAL);
	assert_false(exists(fx->dir));

	/* the parent must exist */
	{
		char msg[512], p[PATH_MAX];

		pathf(p, "%s/no/such", fx->root);
		assert_int_equal(spool_open(p, NULL, &s, msg, sizeof(msg)), -ENOENT);
		assert_non_null(strstr(msg, "create directory"));
		assert_non_null(strstr(msg, "No such file or directory"));
	}
}

static void test_busy(void **state)
{
	struct fx *fx = *state;
	struct spool *s = xopen(fx->dir, &small_opts), *s2;
	char err[256];

	assert_int_equal(spool_open(fx->dir, &small_opts, &s2, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "in use"));
	assert_int_equal(spool_close(s), 0);
	s = xopen(fx->dir, &small_opts);
	spool_close(s);
}

static void test_interval_policy(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	uint64_t f0;

	g_fixed_len = 0;
	o.fsync = SPOOL_FSYNC_INTERVAL;
	o.fsync_interval_ms = 100;
	s = xopen(fx->dir, &o);
	c = xcursor(s, 0);
	xappend(s, 1);	/* creates the segment: one directory fsync */
	spool_stats(s, &st);
	f0 = st.fsyncs;
	append_range(s, 2, 3);
	/* not synced, not sent */
	expect_end(c);
	spool_stats(s, &st);
	assert_int_equal(st.durable_seq, 0);
	assert_int_equal(st.fsyncs, f0);
	assert_int_equal(spool_tick(s, 1000), 0);	/* starts the clock */
	assert_int_equal(spool_tick(s, 1099), 0);
	expect_end(c);
	assert_int_equal(spool_tick(s, 1100), 0);
	expect_records(c, 1, 3);
	expect_end(c);
	spool_stats(s, &st);
	assert_int_equal(st.durable_seq, 3);
	assert_int_equal(st.fsyncs, f0 + 1);
	/* nothing to do: no fsync */
	assert_int_equal(spool_tick(s, 1300), 0);
	spool_stats(s, &st);
	assert_int_equal(st.fsyncs, f0 + 1);
	/* a full segment is synced when it is left, so its records go at once */
	append_range(s, 4, 40);
	spool_stats(s, &st);
	assert_true(st.durable_seq > 3 && st.durable_seq < 40);
	expect_records(c, 4, st.durable_seq);
	expect_end(c);
	assert_int_equal(spool_sync(s), 0);
	expect_records(c, st.durable_seq + 1, 40);
	expect_end(c);
	spool_cursor_close(c);
	assert_int_equal(spool_close(s), 0);
}

static void test_reopen_keeps(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char id[33], p[PATH_MAX];

	g_fixed_len = 0;
	s = xopen(fx->dir, &small_opts);
	snprintf(id, sizeof(id), "%s", spool_id(s));
	append_range(s, 1, 30);
	assert_int_equal(spool_ack(s, 4), 0);
	c = xcursor(s, 0);
	expect_records(c, 5, 7);
	assert_int_equal(spool_close(s), 0);
	/* a cursor outliving its spool */
	{
		struct spool_item it;

		assert_int_equal(spool_cursor_next(c, &it), -EBADF);
		spool_cursor_close(c);
	}

	s = xopen(fx->dir, &small_opts);
	assert_string_equal(spool_id(s), id);
	spool_stats(s, &st);
	assert_int_equal(st.acked_seq, 4);
	assert_int_equal(st.next_seq, 31);
	assert_int_equal(st.records, 26);
	assert_int_equal(st.lost_ranges, 0);
	assert_int_equal(st.torn_tails, 0);
	c = xcursor(s, 0);
	expect_records(c, 5, 30);
	expect_end(c);
	append_range(s, 31, 35);
	expect_records(c, 31, 35);
	spool_cursor_close(c);
	/* everything acked: only the newest segment stays, and the counter
	 * survives even without any record on disk */
	assert_int_equal(spool_ack(s, 35), 0);
	spool_stats(s, &st);
	assert_int_equal(st.segments, 1);
	assert_int_equal(st.records, 0);
	assert_int_equal(spool_close(s), 0);
	assert_int_equal(count_suffix(fx->dir, ".spool"), 1);
	/* as if an operator removed the segments */
	{
		DIR *d = opendir(fx->dir);
		struct dirent *de;

		assert_non_null(d);
		while ((de = readdir(d)))
			if (!strncmp(de->d_name, "seg-", 4)) {
				pathf(p, "%s/%s", fx->dir, de->d_name);
				assert_int_equal(unlink(p), 0);
			}
		closedir(d);
	}
	s = xopen(fx->dir, &small_opts);
	spool_stats(s, &st);
	assert_int_equal(st.next_seq, 36);
	assert_int_equal(st.lost_ranges, 0);
	xappend(s, 36);
	c = xcursor(s, 0);
	expect_records(c, 36, 36);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
}

/* ---- torn tails ---- */

struct torn_case {
	uint8_t *seg, *state_clean, *state_old;
	size_t seg_len, clean_len, old_len;
	uint64_t last_off;
	char segp[PATH_MAX], statep[PATH_MAX];
};

/* 8 records in one segment; the state of a clean close and one from before
 * the appends (as after a crash). */
static void torn_prepare(struct fx *fx, struct torn_case *tc)
{
	struct spool_opts o = small_opts;
	struct spool *s;

	g_fixed_len = 0;
	o.segment_bytes = 64 << 10;
	s = xopen(fx->dir, &o);
	assert_int_equal(spool_sync(s), 0);
	pathf(tc->statep, "%s/state", fx->dir);
	tc->state_old = slurp(tc->statep, &tc->old_len);
	append_range(s, 1, 8);
	assert_int_equal(spool_close(s), 0);
	tc->state_clean = slurp(tc->statep, &tc->clean_len);
	seg_path(tc->segp, fx->dir, 1, "");
	tc->seg = slurp(tc->segp, &tc->seg_len);
	tc->last_off = tc->seg_len - rec_size(plen(8));
	assert_int_equal(tc->last_off, SEG_HDR + 0 + rec_size(plen(1)) + rec_size(plen(2)) +
			 rec_size(plen(3)) + rec_size(plen(4)) + rec_size(plen(5)) +
			 rec_size(plen(6)) + rec_size(plen(7)));
}

static void torn_free(struct torn_case *tc)
{
	free(tc->seg);
	free(tc->state_clean);
	free(tc->state_old);
}

/* Reopen after damage: records 1..7 intact, then seq 8 lost (clean state)
 * or next again (old state). */
static void torn_check(struct fx *fx, struct torn_case *tc, bool clean, bool damaged)
{
	struct spool_opts o = small_opts;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;

	o.segment_bytes = 64 << 10;
	s = xopen(fx->dir, &o);
	/* cut where the last good record ends */
	assert_int_equal(file_size(tc->segp), tc->last_off);
	spool_stats(s, &st);
	assert_int_equal(st.torn_tails, damaged ? 1 : 0);
	assert_int_equal(st.last_seq, 7);
	c = xcursor(s, 0);
	expect_records(c, 1, 7);
	if (clean) {
		assert_int_equal(st.next_seq, 9);
		assert_int_equal(st.dropped_records, 1);
		expect_lost(c, 8, 8, SPOOL_LOST_CRASH);
		expect_end(c);
		xappend(s, 9);
		expect_records(c, 9, 9);
	} else {
		assert_int_equal(st.next_seq, 8);
		assert_int_equal(st.dropped_records, 0);
		expect_end(c);
		xappend(s, 8);
		expect_records(c, 8, 8);
	}
	expect_end(c);
	spool_cursor_close(c);
	assert_int_equal(spool_close(s), 0);
}

/* Unlink every file in dir. */
static void empty_dir(const char *dir)
{
	char p[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		pathf(p, "%s/%s", dir, de->d_name);
		assert_int_equal(unlink(p), 0);
	}
	closedir(d);
}

/* The spool as prepared, the newest segment cut at cut. */
static void torn_restore(struct torn_case *tc, const char *dir, bool clean, uint64_t cut)
{
	empty_dir(dir);
	put_file(tc->segp, tc->seg, (size_t)cut);
	if (clean)
		put_file(tc->statep, tc->state_clean, tc->clean_len);
	else
		put_file(tc->statep, tc->state_old, tc->old_len);
}

static void test_torn_tail_every_offset(void **state)
{
	struct fx *fx = *state;
	struct torn_case tc;
	uint64_t cut;
	int clean;

	torn_prepare(fx, &tc);
	for (clean = 0; clean < 2; clean++) {
		for (cut = tc.last_off; cut < tc.seg_len; cut++) {
			torn_restore(&tc, fx->dir, clean, cut);
			torn_check(fx, &tc, clean, cut != tc.last_off);
		}
	}
	torn_free(&tc);
}

static void test_torn_tail_bad_crc(void **state)
{
	struct fx *fx = *state;
	/* header CRC, length, seq, data CRC, first and last payload byte */
	const uint64_t offs[] = { 0, 4, 8, 20, 21, REC_HDR, 0 };
	struct torn_case tc;
	size_t i;
	int clean;

	torn_prepare(fx, &tc);
	for (clean = 0; clean < 2; clean++) {
		for (i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			uint64_t at = i + 1 < sizeof(offs) / sizeof(offs[0]) ?
				      tc.last_off + offs[i] : tc.last_off + REC_HDR + plen(8) - 1;

			torn_restore(&tc, fx->dir, clean, tc.seg_len);
			flip_byte(tc.segp, at);
			torn_check(fx, &tc, clean, true);
		}
	}
	/* zeros where the last record was (a power loss after the size grew) */
	torn_restore(&tc, fx->dir, true, tc.seg_len);
	{
		uint8_t *z = calloc(1, tc.seg_len);
		int fd = open(tc.segp, O_WRONLY | O_CLOEXEC);

		assert_non_null(z);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, z, tc.seg_len - tc.last_off, (off_t)tc.last_off),
				 (ssize_t)(tc.seg_len - tc.last_off));
		close(fd);
		free(z);
	}
	torn_check(fx, &tc, true, true);
	torn_free(&tc);
}

/* ---- corruption ---- */

static void four_segments(struct fx *fx)
{
	struct spool *s;

	/* 4096-byte segments of 300-byte payloads: 12 records each */
	g_fixed_len = 300;
	s = xopen(fx->dir, &small_opts);
	append_range(s, 1, 40);
	assert_int_equal(spool_close(s), 0);
}

static void test_corrupt_middle(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char p[PATH_MAX];

	four_segments(fx);
	seg_path(p, fx->dir, 13, "");
	assert_int_equal(file_size(p), SEG_HDR + 12 * rec_size(300));
	/* a payload byte of the 6th record of the second segment */
	flip_byte(p, SEG_HDR + 5 * rec_size(300) + REC_HDR + 100);
	s = xopen(fx->dir, &small_opts);
	spool_stats(s, &st);
	assert_int_equal(st.quarantined, 1);
	assert_int_equal(st.torn_tails, 0);
	assert_int_equal(st.dropped_records, 12);
	assert_int_equal(st.lost_ranges, 1);
	assert_int_equal(st.lost_from, 13);
	assert_int_equal(st.lost_to, 24);
	assert_int_equal(st.records, 28);
	assert_false(exists(p));
	seg_path(p, fx->dir, 13, ".corrupt");
	assert_true(exists(p));
	c = xcursor(s, 0);
	expect_records(c, 1, 12);
	expect_lost(c, 13, 24, SPOOL_LOST_CORRUPT);
	expect_records(c, 25, 40);
	expect_end(c);
	spool_cursor_close(c);
	assert_string_equal(spool_lost_reason_name(SPOOL_LOST_CORRUPT), "spool_corrupt");
	assert_string_equal(spool_lost_reason_name(SPOOL_LOST_FULL), "spool_full");
	assert_string_equal(spool_lost_reason_name(SPOOL_LOST_CRASH), "spool_crash");
	assert_string_equal(spool_lost_reason_name(SPOOL_LOST_UNKNOWN), "spool_unknown");
	/* appends go on after the newest */
	xappend(s, 41);
	assert_int_equal(spool_close(s), 0);

	/* stable: a second open finds nothing new, the gap and its reason stay */
	s = xopen(fx->dir, &small_opts);
	spool_stats(s, &st);
	assert_int_equal(st.quarantined, 1);
	assert_int_equal(st.dropped_records, 12);
	c = xcursor(s, 10);
	expect_records(c, 11, 12);
	expect_lost(c, 13, 24, SPOOL_LOST_CORRUPT);
	expect_records(c, 25, 41);
	spool_cursor_close(c);
	/* the server acks past it: gone */
	assert_int_equal(spool_ack(s, 24), 0);
	spool_stats(s, &st);
	assert_int_equal(st.lost_ranges, 0);
	assert_int_equal(spool_close(s), 0);
}

static void test_corrupt_header(void **state)
{
	struct fx *fx = *state;
	struct spool_cursor *c;
	struct spool *s;
	char p[PATH_MAX];

	four_segments(fx);
	seg_path(p, fx->dir, 25, "");
	flip_byte(p, 17);	/* the base seq in the header */
	s = xopen(fx->dir, &small_opts);
	c = xcursor(s, 0);
	expect_records(c, 1, 24);
	expect_lost(c, 25, 36, SPOOL_LOST_CORRUPT);
	expect_records(c, 37, 40);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
	seg_path(p, fx->dir, 25, ".corrupt");
	assert_true(exists(p));
}

/* Damage inside the newest segment with valid records after it: the
 * prefix is kept, a copy set aside, the seqs after it not reused. */
static void test_damage_inside_newest(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char p[PATH_MAX];

	four_segments(fx);
	seg_path(p, fx->dir, 37, "");
	flip_byte(p, SEG_HDR + 1 * rec_size(300) + REC_HDR + 5);	/* record 38 of 37..40 */
	/* also with a state that knows nothing of them (a crash) */
	{
		char sp[PATH_MAX];

		pathf(sp, "%s/state", fx->dir);
		assert_int_equal(unlink(sp), 0);
	}
	s = xopen(fx->dir, &small_opts);
	spool_stats(s, &st);
	assert_int_equal(st.torn_tails, 1);
	assert_int_equal(st.quarantined, 1);
	assert_int_equal(st.next_seq, 41);	/* 39 and 40 were seen after the damage */
	assert_int_equal(st.last_seq, 37);
	assert_int_equal(file_size(p), SEG_HDR + rec_size(300));
	seg_path(p, fx->dir, 37, ".corrupt");
	assert_true(exists(p));
	assert_int_equal(file_size(p), SEG_HDR + 4 * rec_size(300));
	c = xcursor(s, 0);
	expect_records(c, 1, 37);
	expect_lost(c, 38, 40, SPOOL_LOST_CRASH);
	expect_end(c);
	xappend(s, 41);
	expect_records(c, 41, 41);
	spool_cursor_close(c);
	spool_close(s);
}

/* A segment damaged after open: the cursor puts it in quarantine and
 * reports the hole instead of stopping. */
static void test_corrupt_while_sending(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char p[PATH_MAX];

	g_fixed_len = 300;
	s = xopen(fx->dir, &small_opts);
	append_range(s, 1, 40);
	seg_path(p, fx->dir, 13, "");
	flip_byte(p, SEG_HDR + 3 * rec_size(300) + REC_HDR + 1);
	c = xcursor(s, 0);
	expect_records(c, 1, 15);
	expect_lost(c, 16, 24, SPOOL_LOST_CORRUPT);
	expect_records(c, 25, 40);
	expect_end(c);
	spool_stats(s, &st);
	assert_int_equal(st.quarantined, 1);
	assert_int_equal(st.dropped_records, 12);	/* the whole segment is gone */
	assert_false(exists(p));
	seg_path(p, fx->dir, 13, ".corrupt");
	assert_true(exists(p));
	/* the newest segment too: appends go on in a new one */
	seg_path(p, fx->dir, 37, "");
	flip_byte(p, SEG_HDR + REC_HDR + 1);
	spool_cursor_close(c);
	c = xcursor(s, 24);
	expect_records(c, 25, 36);
	expect_lost(c, 37, 40, SPOOL_LOST_CORRUPT);
	expect_end(c);
	xappend(s, 41);
	expect_records(c, 41, 41);
	spool_cursor_close(c);
	assert_int_equal(spool_close(s), 0);
	s = xopen(fx->dir, &small_opts);
	c = xcursor(s, 0);
	expect_records(c, 1, 12);
	expect_lost(c, 13, 24, SPOOL_LOST_CORRUPT);
	expect_records(c, 25, 36);
	expect_lost(c, 37, 40, SPOOL_LOST_CORRUPT);
	expect_records(c, 41, 41);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
}

/* More gaps than reasons kept: the oldest lose their reason, none is lost,
 * and the state with the most notes reads back. */
static void test_many_gaps(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	const uint64_t nseg = 2 * SPOOL_MAX_LOST_NOTES + 21;	/* odd: the newest stays whole */
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char p[PATH_MAX];
	uint64_t i, gaps = nseg / 2, unknown = gaps - SPOOL_MAX_LOST_NOTES;

	g_fixed_len = 300;
	o.max_bytes = 64 << 20;
	o.fsync = SPOOL_FSYNC_NEVER;
	s = xopen(fx->dir, &o);
	append_range(s, 1, 12 * nseg);
	assert_int_equal(spool_close(s), 0);
	for (i = 1; i < nseg; i += 2) {	/* every second segment, from the 2nd */
		seg_path(p, fx->dir, 12 * i + 1, "");
		flip_byte(p, SEG_HDR + 7);
	}
	for (int round = 0; round < 2; round++) {
		s = xopen(fx->dir, &o);
		spool_stats(s, &st);
		assert_int_equal(st.quarantined, gaps);
		assert_int_equal(st.lost_ranges, gaps);
		assert_int_equal(st.lost_seqs, 12 * gaps);
		assert_int_equal(st.dropped_records, 12 * gaps);
		c = xcursor(s, 0);
		for (i = 0; i < nseg; i++) {
			if (i % 2 == 0)
				expect_records(c, 12 * i + 1, 12 * i + 12);
			else
				expect_lost(c, 12 * i + 1, 12 * i + 12,
					    i / 2 < unknown ? SPOOL_LOST_UNKNOWN : SPOOL_LOST_CORRUPT);
		}
		expect_end(c);
		spool_cursor_close(c);
		assert_int_equal(spool_close(s), 0);
	}
	assert_int_equal(count_suffix(fx->dir, ".corrupt"), SPOOL_KEEP_CORRUPT);
}

static void test_state_corrupt(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char id[33], p[PATH_MAX];

	g_fixed_len = 300;
	s = xopen(fx->dir, &small_opts);
	snprintf(id, sizeof(id), "%s", spool_id(s));
	append_range(s, 1, 30);
	assert_int_equal(spool_ack(s, 20), 0);	/* deletes 1..12 */
	assert_int_equal(spool_close(s), 0);
	pathf(p, "%s/state", fx->dir);
	flip_byte(p, 33);
	s = xopen(fx->dir, &small_opts);
	assert_string_not_equal(spool_id(s), id);
	spool_stats(s, &st);
	/* what is on disk is taken as unacked, and no loss invented */
	assert_int_equal(st.acked_seq, 12);
	assert_int_equal(st.next_seq, 31);
	assert_int_equal(st.lost_ranges, 0);
	c = xcursor(s, 0);
	expect_records(c, 13, 30);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
	pathf(p, "%s/state.corrupt", fx->dir);
	assert_true(exists(p));
}

/* Garbage files: a directory and a symlink named like segments, stray
 * names, a truncated header. */
static void test_odd_files(void **state)
{
	struct fx *fx = *state;
	struct spool_cursor *c;
	struct spool *s;
	char p[PATH_MAX];

	g_fixed_len = 300;
	s = xopen(fx->dir, &small_opts);
	append_range(s, 1, 20);
	assert_int_equal(spool_close(s), 0);
	seg_path(p, fx->dir, 5, "");
	assert_int_equal(mkdir(p, 0700), 0);
	seg_path(p, fx->dir, 7, "");
	assert_int_equal(symlink("/etc/passwd", p), 0);
	pathf(p, "%s/seg-1.spool", fx->dir);
	put_file(p, "x", 1);
	seg_path(p, fx->dir, 21, "");
	put_file(p, "OSSPSEG1", 8);	/* a torn segment creation */
	s = xopen(fx->dir, &small_opts);
	c = xcursor(s, 0);
	expect_records(c, 1, 20);
	expect_end(c);
	xappend(s, 21);
	expect_records(c, 21, 21);
	spool_cursor_close(c);
	spool_close(s);
	assert_int_equal(file_size(p), SEG_HDR + rec_size(300));
}

/* ---- the cap ---- */

static void test_cap_overflow(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	struct spool_stats st;
	struct spool_cursor *c, *c2;
	struct spool *s;

	/* 12 records of 300 bytes per 4096-byte segment (3968 bytes); in 16384
	 * bytes fit four full segments and a fifth with one record (16232):
	 * the second record of a fifth segment drops the oldest. */
	g_fixed_len = 300;
	o.max_bytes = 16384;
	s = xopen(fx->dir, &o);
	c = xcursor(s, 0);
	append_range(s, 1, 36);
	expect_records(c, 1, 30);	/* sent, not acked */
	append_range(s, 37, 100);
	/* segments 61-72, 73-84, 85-96, 97-100 are left: 60 dropped */
	spool_stats(s, &st);
	assert_int_equal(st.dropped_records, 60);
	assert_int_equal(st.first_seq, 61);
	assert_int_equal(st.last_seq, 100);
	assert_int_equal(st.records, 40);
	assert_int_equal(st.segments, 4);
	assert_true(st.bytes <= 16384);
	assert_int_equal(st.bytes, 3 * (SEG_HDR + 12 * rec_size(300)) + SEG_HDR + 4 * rec_size(300));
	assert_int_equal(st.lost_ranges, 1);
	assert_int_equal(st.lost_seqs, 60);
	assert_int_equal(st.lost_from, 1);
	assert_int_equal(st.lost_to, 60);
	/* the cursor that had passed 1..30 hears of the rest only */
	expect_lost(c, 31, 60, SPOOL_LOST_FULL);
	expect_records(c, 61, 100);
	expect_end(c);
	/* a new cursor (a reconnect) hears of all of it, once, in order */
	c2 = xcursor(s, 0);
	expect_lost(c2, 1, 60, SPOOL_LOST_FULL);
	expect_records(c2, 61, 100);
	expect_end(c2);
	spool_cursor_close(c2);
	spool_cursor_close(c);
	assert_int_equal(spool_close(s), 0);

	/* the lost range survives a restart until acked */
	s = xopen(fx->dir, &o);
	spool_stats(s, &st);
	assert_int_equal(st.dropped_records, 60);
	assert_int_equal(st.lost_seqs, 60);
	c = xcursor(s, 0);
	expect_lost(c, 1, 60, SPOOL_LOST_FULL);
	expect_records(c, 61, 100);
	spool_cursor_close(c);
	/* the server has received the LOST item and acks it, not beyond */
	assert_int_equal(spool_ack(s, 60), 0);
	assert_int_equal(spool_close(s), 0);
	s = xopen(fx->dir, &o);
	spool_stats(s, &st);
	assert_int_equal(st.lost_ranges, 0);
	assert_int_equal(st.dropped_records, 60);
	assert_int_equal(st.acked_seq, 60);
	c = xcursor(s, 0);
	expect_records(c, 61, 100);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
}

/* A partly acked segment dropped at the cap: only its unacked part is lost. */
static void test_cap_partly_acked(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;

	g_fixed_len = 300;
	o.max_bytes = 16384;
	s = xopen(fx->dir, &o);
	append_range(s, 1, 49);
	assert_int_equal(spool_ack(s, 5), 0);
	spool_stats(s, &st);
	assert_int_equal(st.dropped_records, 0);
	append_range(s, 50, 50);	/* 1-12 goes, 6-12 unacked */
	spool_stats(s, &st);
	assert_int_equal(st.dropped_records, 7);
	assert_int_equal(st.first_seq, 13);
	c = xcursor(s, 0);
	expect_lost(c, 6, 12, SPOOL_LOST_FULL);
	expect_records(c, 13, 50);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
}

static void test_ack_deletes_segments(void **state)
{
	struct fx *fx = *state;
	struct spool_stats st;
	struct spool *s;
	char p[PATH_MAX];

	four_segments(fx);
	s = xopen(fx->dir, &small_opts);
	assert_int_equal(count_suffix(fx->dir, ".spool"), 4);
	assert_int_equal(spool_ack(s, 11), 0);
	assert_int_equal(count_suffix(fx->dir, ".spool"), 4);
	assert_int_equal(spool_ack(s, 12), 0);
	seg_path(p, fx->dir, 1, "");
	assert_false(exists(p));
	assert_int_equal(count_suffix(fx->dir, ".spool"), 3);
	assert_int_equal(spool_ack(s, 20), 0);
	assert_int_equal(count_suffix(fx->dir, ".spool"), 3);
	assert_int_equal(spool_ack(s, 36), 0);
	assert_int_equal(count_suffix(fx->dir, ".spool"), 1);
	assert_int_equal(spool_ack(s, 40), 0);
	/* the newest stays: it is appended to */
	assert_int_equal(count_suffix(fx->dir, ".spool"), 1);
	spool_stats(s, &st);
	assert_int_equal(st.records, 0);
	assert_int_equal(st.bytes, SEG_HDR + 4 * rec_size(300));
	xappend(s, 41);
	assert_int_equal(count_suffix(fx->dir, ".spool"), 1);
	spool_close(s);
	/* the acks were written: after a reopen nothing comes back */
	s = xopen(fx->dir, &small_opts);
	spool_stats(s, &st);
	assert_int_equal(st.acked_seq, 40);
	assert_int_equal(st.records, 1);
	spool_close(s);
}

/* A smaller cap at the next open drops the oldest at once. */
static void test_cap_shrinks_at_open(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	struct spool_cursor *c;
	struct spool *s;

	four_segments(fx);
	o.max_bytes = 8192;
	s = xopen(fx->dir, &o);
	c = xcursor(s, 0);
	expect_lost(c, 1, 24, SPOOL_LOST_FULL);
	expect_records(c, 25, 40);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);
}

/* ---- kill -9 ---- */

/* Big enough never to drop anything here. */
static const struct spool_opts kill_opts = {
	.max_bytes = 256 << 20, .segment_bytes = 64 << 10, .fsync = SPOOL_FSYNC_ALWAYS, .quiet = true,
};

static void child_appends(const char *dir, int wfd, uint64_t first, uint64_t n)
{
	struct spool *s;
	char err[256];

	if (spool_open(dir, &kill_opts, &s, err, sizeof(err)))
		_exit(2);
	for (uint64_t q = first; q < first + n; q++) {
		static uint8_t buf[1 << 16];
		size_t len = plen(q);
		uint64_t seq;

		pfill(q, buf, len);
		if (spool_append(s, ptype(q), buf, len, &seq) || seq != q)
			_exit(3);
		if (write(wfd, &seq, sizeof(seq)) != sizeof(seq))
			_exit(4);
	}
	_exit(0);
}

static void kill9_rounds(void **state)
{
	struct fx *fx = *state;
	uint64_t next = 1, done, got, k, kill_after, in_flight = 0;
	struct timespec ts;
	unsigned seed;
	int round, pfd[2], status;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	pid_t pid;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	seed = (unsigned)ts.tv_nsec ^ (unsigned)getpid() << 16;
	print_message("kill9 seed %u\n", seed);
	srand(seed);
	for (round = 0; round < 12; round++) {
		kill_after = (uint64_t)rand() % 150;
		assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			child_appends(fx->dir, pfd[1], next, 150);
		}
		close(pfd[1]);
		done = next - 1;
		for (k = 0; k < kill_after; k++) {
			if (read(pfd[0], &got, sizeof(got)) != sizeof(got))
				break;
			assert_int_equal(got, done + 1);
			done = got;
		}
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* appends that returned before the kill but were not read yet */
		while (read(pfd[0], &got, sizeof(got)) == sizeof(got)) {
			assert_int_equal(got, done + 1);
			done = got;
		}
		close(pfd[0]);
		if (WIFEXITED(status))
			assert_int_equal(WEXITSTATUS(status), 0);

		s = xopen(fx->dir, &kill_opts);
		spool_stats(s, &st);
		/* everything that returned is there; at most the one in flight more */
		assert_true(st.last_seq >= done);
		assert_true(st.last_seq <= done + 1);
		assert_int_equal(st.first_seq, 1);
		assert_int_equal(st.lost_ranges, 0);
		assert_int_equal(st.next_seq, st.last_seq + 1);
		c = xcursor(s, 0);
		expect_records(c, 1, st.last_seq);
		expect_end(c);
		spool_cursor_close(c);
		next = st.last_seq + 1;
		in_flight += st.last_seq == done + 1;
		assert_int_equal(spool_close(s), 0);
	}
	assert_true(next > 1);
	print_message("kill9: %llu records, %llu torn tails cut, %llu rounds with the append in flight kept\n",
		      (unsigned long long)next - 1, (unsigned long long)st.torn_tails,
		      (unsigned long long)in_flight);
}

static void test_kill9(void **state)
{
	g_fixed_len = 0;
	g_big = false;
	kill9_rounds(state);
}

/* Records of up to 10 KB: multi-page writes that a kill can cut short. */
static void test_kill9_big(void **state)
{
	g_fixed_len = 0;
	g_big = true;
	kill9_rounds(state);
	g_big = false;
}

/* ---- disk full, permissions ---- */

static bool mount_small(struct fx *fx, const char *size)
{
	char opts[64];

	if (mkdir(fx->mnt, 0755))
		fail_msg("mkdir %s: %s", fx->mnt, strerror(errno));
	snprintf(opts, sizeof(opts), "size=%s,mode=0755", size);
	if (mount("tmpfs", fx->mnt, "tmpfs", 0, opts)) {
		if (errno == EPERM)
			return false;
		fail_msg("mount tmpfs: %s", strerror(errno));
	}
	fx->mounted = true;
	return true;
}

static void test_disk_full(void **state)
{
	struct fx *fx = *state;
	struct spool_opts o = small_opts;
	struct spool_stats st;
	struct spool_cursor *c;
	struct spool *s;
	char dir[PATH_MAX], filler[PATH_MAX], err[512];
	uint64_t ok = 0, q;
	int r = 0, i;

	if (!mount_small(fx, "64k")) {
		skip();
		return;
	}
	pathf(dir, "%s/spool", fx->mnt);
	g_fixed_len = 1000;
	o.segment_bytes = 8192;
	s = xopen(dir, &o);
	for (q = 1; q < 200; q++) {
		uint8_t buf[1000];

		pfill(q, buf, sizeof(buf));
		r = spool_append(s, ptype(q), buf, sizeof(buf), NULL);
		if (r)
			break;
		ok = q;
	}
	assert_int_equal(r, -ENOSPC);
	assert_non_null(strstr(spool_error(s), "No space left on device"));
	assert_non_null(strstr(spool_error(s), dir));
	assert_true(ok > 10);
	/* again: still refused, no seq used, nothing torn */
	{
		uint8_t buf[1000];

		pfill(ok + 1, buf, sizeof(buf));
		assert_int_equal(spool_append(s, ptype(ok + 1), buf, sizeof(buf), NULL), -ENOSPC);
	}
	spool_stats(s, &st);
	assert_int_equal(st.next_seq, ok + 1);
	assert_int_equal(st.append_errors, 2);
	c = xcursor(s, 0);
	expect_records(c, 1, ok);
	expect_end(c);
	/* the server acks: space comes back, appends go on with the next seq */
	assert_int_equal(spool_ack(s, ok), 0);
	for (i = 0; i < 3; i++)
		xappend(s, ok + 1 + (uint64_t)i);
	expect_records(c, ok + 1, ok + 3);
	spool_cursor_close(c);
	assert_int_equal(spool_close(s), 0);
	s = xopen(dir, &o);
	c = xcursor(s, 0);
	expect_records(c, ok + 1, ok + 3);
	expect_end(c);
	spool_cursor_close(c);
	spool_close(s);

	/* a new spool on a full disk: refused, saying why */
	pathf(filler, "%s/filler", fx->mnt);
	{
		static uint8_t big[64 << 10];
		int fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

		assert_true(fd >= 0);
		while (write(fd, big, sizeof(big)) > 0)
			;
		close(fd);
	}
	pathf(dir, "%s/spool2", fx->mnt);
	r = spool_open(dir, &o, &s, err, sizeof(err));
	assert_int_equal(r, -ENOSPC);
	assert_non_null(strstr(err, "No space left on device"));
	assert_non_null(strstr(err, "state"));
}

/* Runs in a child without privileges: 0 or the failing line. */
static int eacces_checks(const char *ro)
{
	char sub[PATH_MAX], err[512];
	struct spool *s;

	pathf(sub, "%s/spool", ro);
	if (spool_open(sub, NULL, &s, err, sizeof(err)) != -EACCES)
		return __LINE__;
	if (!strstr(err, "create directory") || !strstr(err, "Permission denied") || !strstr(err, sub))
		return __LINE__;
	if (spool_open(ro, NULL, &s, err, sizeof(err)) != -EACCES)
		return __LINE__;
	if (!strstr(err, "state") || !strstr(err, "Permission denied"))
		return __LINE__;
	return 0;
}

static void test_permission_denied(void **state)
{
	struct fx *fx = *state;
	char ro[PATH_MAX];
	int status;
	pid_t pid;

	pathf(ro, "%s/ro", fx->root);
	assert_int_equal(mkdir(ro, 0755), 0);
	assert_int_equal(chmod(fx->root, 0755), 0);
	if (geteuid() != 0) {
		/* not root: the directory's mode is enough */
		assert_int_equal(chmod(ro, 0555), 0);
		if (access(ro, W_OK) == 0) {
			print_message("skipped: CAP_DAC_OVERRIDE without root\n");
			skip();
			return;
		}
		assert_int_equal(eacces_checks(ro), 0);
		chmod(ro, 0755);
		return;
	}
	/* root: the checks run in a child that gave up root */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(1);
		_exit(eacces_checks(ro));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status))
		fail_msg("child failed at test_spool.c:%d", WEXITSTATUS(status));
}

#define FX(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		FX(test_append_iterate_ack),
		FX(test_bad_opts),
		FX(test_busy),
		FX(test_interval_policy),
		FX(test_reopen_keeps),
		FX(test_torn_tail_every_offset),
		FX(test_torn_tail_bad_crc),
		FX(test_corrupt_middle),
		FX(test_corrupt_header),
		FX(test_damage_inside_newest),
		FX(test_corrupt_while_sending),
		FX(test_many_gaps),
		FX(test_state_corrupt),
		FX(test_odd_files),
		FX(test_cap_overflow),
		FX(test_cap_partly_acked),
		FX(test_ack_deletes_segments),
		FX(test_cap_shrinks_at_open),
		FX(test_kill9),
		FX(test_kill9_big),
		FX(test_disk_full),
		FX(test_permission_denied),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
