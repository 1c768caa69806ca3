/* Unit tests for sha256.c and cfgfs.c.
 *
 * SHA-256 on the FIPS 180-2 / NIST example messages, on lengths around the
 * padding boundaries (digests from Python's hashlib) and fed in odd-sized
 * pieces. cfgfs on real temporary trees under /tmp (mkdtemp): path checks
 * (malformed, outside, symlinked parents, symlink/dir/FIFO/device final
 * components, a directory swapped for a symlink after the check), the
 * listing, reads, and transactions (byte-exact restore of binary content,
 * mode and owner kept, new files removed, deletes undone, no temp file
 * left), including a full 64 KiB tmpfs. These run as root (chown, mknod,
 * mount); the tests that need it skip otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "cfgfs.h"
#include "sha256.h"

/* ---- SHA-256 ---- */

static void check_hex(const void *data, size_t len, const char *want)
{
	char hex[65];

	sha256_hex(data, len, hex);
	assert_string_equal(hex, want);
}

static void test_sha256_vectors(void **state)
{
	(void)state;
	check_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	check_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
		  "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu", 112,
		  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_sha256_million_a(void **state)
{
	static const char want[] = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
	uint8_t d[32];
	char hex[65], *m;
	struct sha256 c;
	int i;

	(void)state;
	m = malloc(1000000);
	assert_non_null(m);
	memset(m, 'a', 1000000);
	check_hex(m, 1000000, want);
	free(m);

	/* the same in 1000 updates of 1000 */
	sha256_init(&c);
	for (i = 0; i < 1000; i++)
		sha256_update(&c, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
			      1000);
	sha256_final(&c, d);
	sha256_to_hex(d, hex);
	assert_string_equal(hex, want);
}

static void pattern(uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + 3);
}

static void test_sha256_boundaries(void **state)
{
	static const struct {
		size_t n;
		const char *hex;
	} v[] = {
		{ 55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b" },
		{ 56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27" },
		{ 57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73" },
		{ 63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055" },
		{ 64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241" },
		{ 65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e" },
		{ 119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e" },
		{ 120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5" },
		{ 127, "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07" },
		{ 128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6" },
		{ 129, "307f8fc2c1622b92762e818d39a185d4d667ad49a4b07ceae1f4afa008a93ec4" },
		{ 1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371" },
	};
	uint8_t buf[1000];
	size_t i;

	(void)state;
	pattern(buf, sizeof(buf));
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		check_hex(buf, v[i].n, v[i].hex);
}

/* Any split of the input into pieces gives the one-shot digest. */
static void test_sha256_incremental(void **state)
{
	static const size_t sizes[] = { 0, 1, 3, 7, 13, 31, 55, 56, 63, 64, 65, 127, 129, 200 };
	uint8_t buf[1000], d[32];
	char one[65], inc[65];
	struct sha256 c;
	size_t start, i, off, n;

	(void)state;
	pattern(buf, sizeof(buf));
	sha256_hex(buf, sizeof(buf), one);
	for (start = 0; start < sizeof(sizes) / sizeof(sizes[0]); start++) {
		sha256_init(&c);
		for (off = 0, i = start; off < sizeof(buf); i++) {
			n = sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
			if (n > sizeof(buf) - off)
				n = sizeof(buf) - off;
			sha256_update(&c, buf + off, n);
			off += n;
		}
		sha256_final(&c, d);
		sha256_to_hex(d, inc);
		assert_string_equal(inc, one);
	}
	/* byte by byte */
	sha256_init(&c);
	for (off = 0; off < sizeof(buf); off++)
		sha256_update(&c, buf + off, 1);
	sha256_final(&c, d);
	sha256_to_hex(d, inc);
	assert_string_equal(inc, one);
}

/* ---- temporary trees ---- */

struct fx {
	char root[PATH_MAX];	/* realpath of the mkdtemp dir */
	char conf[PATH_MAX];	/* root/conf: the allowed dir */
	char full[PATH_MAX];	/* root/full: tmpfs mount point, when mounted */
	bool mounted;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* out = root + "/" + rel */
static void root_path(char out[PATH_MAX], const char *root, const char *rel)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", root, rel);

	if (n <= 0 || n >= PATH_MAX)
		fail_msg("path too long");
}

#define P(buf, fx, rel) root_path((buf), (fx)->root, (rel))

static void put(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

static void puts_file(const char *path, const char *s)
{
	put(path, s, strlen(s), 0644);
}

/* Whole file into a malloc'd buffer; NULL when missing. */
static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static void assert_content(const char *path, const void *want, size_t wlen)
{
	size_t len;
	uint8_t *b = slurp(path, &len);

	assert_non_null(b);
	assert_int_equal(len, wlen);
	assert_memory_equal(b, want, wlen);
	free(b);
}

static void assert_missing(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

/* Number of cfgfs temp files anywhere below dir. */
static size_t temps_below(const char *dir)
{
	char sub[PATH_MAX];
	struct dirent *de;
	size_t n = 0;
	DIR *d = opendir(dir);

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strstr(de->d_name, ".cfgfs-"))
			n++;
		if (de->d_type == DT_DIR) {
			snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
			n += temps_below(sub);
		}
	}
	closedir(d);
	return n;
}

static int fx_setup(void **state)
{
	char tmpl[] = "/tmp/test_cfgfs.XXXXXX";
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx || !mkdtemp(tmpl) || !realpath(tmpl, fx->root))
		return -1;
	root_path(fx->conf, fx->root, "conf");
	root_path(fx->full, fx->root, "full");
	if (mkdir(fx->conf, 0755))
		return -1;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	if (fx->mounted)
		umount2(fx->full, MNT_DETACH);
	rm_tree(fx->root);
	free(fx);
	return 0;
}

static bool is_root(void)
{
	return geteuid() == 0;
}

/* ---- path checks ---- */

struct chk {
	int r;
	bool exists;
	char resolved[PATH_MAX];
	char err[256];
};

static struct chk check(char *const *allowed, size_t n, const char *path)
{
	struct chk c;

	memset(&c, 0, sizeof(c));
	c.r = cfgfs_check_path(allowed, n, path, c.resolved, sizeof(c.resolved), &c.exists,
			       c.err, sizeof(c.err));
	if (c.r)
		assert_true(c.err[0] != '\0');	/* every refusal says why */
	return c;
}

static void test_path_syntax(void **state)
{
	struct fx *fx = *state;
	char *allowed[] = { fx->conf };
	char p[PATH_MAX], *big;
	struct chk c;

	P(p, fx, "conf/a.conf");
	puts_file(p, "x\n");

	assert_int_equal(check(allowed, 1, "conf/a.conf").r, -EINVAL);
	assert_int_equal(check(allowed, 1, "a.conf").r, -EINVAL);
	assert_int_equal(check(allowed, 1, "").r, -EINVAL);
	assert_int_equal(check(allowed, 1, "/").r, -EINVAL);
	P(p, fx, "conf/../conf/a.conf");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	P(p, fx, "conf/..");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	P(p, fx, "conf/./a.conf");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	P(p, fx, "conf/.");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	P(p, fx, "conf//a.conf");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	P(p, fx, "conf/a.conf/");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	P(p, fx, "conf/a\nb");
	assert_int_equal(check(allowed, 1, p).r, -EINVAL);
	/* spaces, quotes, shell metacharacters and UTF-8 are plain bytes */
	P(p, fx, "conf/my site's \"x\" $(id);.conf");
	assert_int_equal(check(allowed, 1, p).r, 0);
	P(p, fx, "conf/caf\xc3\xa9.conf");
	assert_int_equal(check(allowed, 1, p).r, 0);
	/* names that merely start with dots are fine */
	P(p, fx, "conf/..a");
	assert_int_equal(check(allowed, 1, p).r, 0);
	P(p, fx, "conf/.a");
	assert_int_equal(check(allowed, 1, p).r, 0);

	/* 5000 characters, no NUL */
	big = malloc(5001);
	assert_non_null(big);
	memset(big, 'a', 5000);
	big[5000] = '\0';
	memcpy(big, fx->conf, strlen(fx->conf));
	big[strlen(fx->conf)] = '/';
	assert_int_equal(check(allowed, 1, big).r, -EINVAL);
	/* one component longer than NAME_MAX */
	big[strlen(fx->conf) + 1 + NAME_MAX + 1] = '\0';
	assert_int_equal(check(allowed, 1, big).r, -EINVAL);
	free(big);

	/* NUL inside the given length */
	assert_int_equal(cfgfs_path_syntax("/a\0b", 4, NULL, 0), -EINVAL);
	assert_int_equal(cfgfs_path_syntax("/a/b", 4, NULL, 0), 0);

	/* resolved buffer too small */
	P(p, fx, "conf/a.conf");
	{
		char small[8];
		bool ex;

		assert_int_equal(cfgfs_check_path(allowed, 1, p, small, sizeof(small), &ex, NULL, 0),
				 -EINVAL);
	}
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);
}

static void test_path_allowed(void **state)
{
	struct fx *fx = *state;
	char *allowed[] = { fx->conf };
	char p[PATH_MAX], q[PATH_MAX];
	struct chk c;

	P(p, fx, "conf/a.conf");
	puts_file(p, "x\n");
	P(p, fx, "conf/sub");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "outside");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "outside/secret");
	puts_file(p, "secret\n");
	P(p, fx, "conf2");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "conf2/x");
	puts_file(p, "x\n");

	/* existing file */
	P(p, fx, "conf/a.conf");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);
	assert_true(c.exists);
	assert_string_equal(c.resolved, p);

	/* new files, also in a subdirectory */
	P(p, fx, "conf/new.conf");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);
	assert_false(c.exists);
	assert_string_equal(c.resolved, p);
	P(p, fx, "conf/sub/new.conf");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);
	assert_false(c.exists);

	/* parent missing inside: ENOENT; outside: EACCES, not ENOENT */
	P(p, fx, "conf/nodir/x.conf");
	assert_int_equal(check(allowed, 1, p).r, -ENOENT);
	P(p, fx, "conf/a.conf/x");
	assert_int_equal(check(allowed, 1, p).r, -ENOTDIR);
	P(p, fx, "outside/nodir/x");
	assert_int_equal(check(allowed, 1, p).r, -EACCES);

	/* outside */
	P(p, fx, "outside/secret");
	assert_int_equal(check(allowed, 1, p).r, -EACCES);
	assert_int_equal(check(allowed, 1, "/etc/passwd").r, -EACCES);
	assert_int_equal(check(allowed, 1, "/a.conf").r, -EACCES);
	/* a sibling that shares the prefix is not inside */
	P(p, fx, "conf2/x");
	assert_int_equal(check(allowed, 1, p).r, -EACCES);
	/* the allowed dir itself is not a file inside it */
	assert_int_equal(check(allowed, 1, fx->conf).r, -EACCES);
	/* no allowed dirs at all */
	P(p, fx, "conf/a.conf");
	assert_int_equal(check(allowed, 0, p).r, -EACCES);

	/* a symlinked parent inside the allowed dir that leads outside */
	P(p, fx, "conf/escape");
	assert_int_equal(symlink("../outside", p), 0);
	P(p, fx, "conf/escape/secret");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, -EACCES);
	assert_non_null(strstr(c.err, "outside"));
	P(p, fx, "conf/escape/new.conf");
	assert_int_equal(check(allowed, 1, p).r, -EACCES);
	/* a symlinked parent that stays inside is fine, resolved */
	P(p, fx, "conf/alias");
	assert_int_equal(symlink("sub", p), 0);
	P(p, fx, "conf/alias/n.conf");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);
	P(q, fx, "conf/sub/n.conf");
	assert_string_equal(c.resolved, q);
	/* a symlink loop in the parent */
	P(p, fx, "conf/loop");
	assert_int_equal(symlink("loop", p), 0);
	P(p, fx, "conf/loop/x");
	assert_int_equal(check(allowed, 1, p).r, -EACCES);
}

static void test_path_allowed_symlink(void **state)
{
	struct fx *fx = *state;
	char link[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
	char *allowed[] = { link };
	struct chk c;

	P(link, fx, "link_allowed");
	assert_int_equal(symlink("conf", link), 0);
	P(p, fx, "conf/a.conf");
	puts_file(p, "x\n");

	/* through the link: resolved to the real directory */
	P(p, fx, "link_allowed/a.conf");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);
	assert_true(c.exists);
	P(q, fx, "conf/a.conf");
	assert_string_equal(c.resolved, q);
	/* by the real path: compared resolved, so allowed */
	c = check(allowed, 1, q);
	assert_int_equal(c.r, 0);
	assert_string_equal(c.resolved, q);

	/* an allowed dir that does not exist allows nothing */
	P(link, fx, "nonexistent");
	assert_int_equal(check(allowed, 1, q).r, -EACCES);
}

static void test_path_not_regular(void **state)
{
	struct fx *fx = *state;
	char *allowed[] = { fx->conf };
	char p[PATH_MAX];

	P(p, fx, "conf/a.conf");
	puts_file(p, "x\n");
	P(p, fx, "conf/lnk");
	assert_int_equal(symlink("a.conf", p), 0);
	assert_int_equal(check(allowed, 1, p).r, -EPERM);
	P(p, fx, "conf/dangling");
	assert_int_equal(symlink("/nonexistent/x", p), 0);
	assert_int_equal(check(allowed, 1, p).r, -EPERM);
	P(p, fx, "conf/dir");
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(check(allowed, 1, p).r, -EISDIR);
	P(p, fx, "conf/fifo");
	assert_int_equal(mkfifo(p, 0644), 0);
	assert_int_equal(check(allowed, 1, p).r, -EPERM);
	P(p, fx, "conf/null");
	if (mknod(p, S_IFCHR | 0666, makedev(1, 3)) == 0)
		assert_int_equal(check(allowed, 1, p).r, -EPERM);
	else
		print_message("mknod: %s (device case not run)\n", strerror(errno));
	/* a symlink to a directory */
	P(p, fx, "conf/dirlink");
	assert_int_equal(symlink("dir", p), 0);
	assert_int_equal(check(allowed, 1, p).r, -EPERM);
}

/* A directory swapped for a symlink after the check: every later call
 * refuses to follow it, and nothing is written outside. */
static void test_swap_after_check(void **state)
{
	struct fx *fx = *state;
	char *allowed[] = { fx->conf };
	char p[PATH_MAX], q[PATH_MAX];
	struct cfgfs_txn *t;
	uint8_t *data;
	size_t len;
	struct chk c;

	P(p, fx, "conf/sub");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "conf/sub/a.conf");
	puts_file(p, "inside\n");
	P(p, fx, "outside");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "outside/a.conf");
	puts_file(p, "outside\n");

	P(p, fx, "conf/sub/a.conf");
	c = check(allowed, 1, p);
	assert_int_equal(c.r, 0);

	t = cfgfs_txn_new(0);
	assert_non_null(t);
	assert_int_equal(cfgfs_txn_backup(t, c.resolved), 0);

	P(p, fx, "conf/sub");
	P(q, fx, "conf/sub.old");
	assert_int_equal(rename(p, q), 0);
	assert_int_equal(symlink("../outside", p), 0);

	assert_true(cfgfs_read(c.resolved, 1 << 20, &data, &len) < 0);
	assert_null(data);
	assert_true(cfgfs_txn_write(t, c.resolved, (const uint8_t *)"evil\n", 5) < 0);
	assert_true(cfgfs_txn_error(t)[0] != '\0');
	assert_true(cfgfs_txn_delete(t, c.resolved) < 0);
	assert_true(cfgfs_txn_restore(t) < 0);
	assert_int_equal(cfgfs_txn_op(t, 0), CFGFS_OP_NONE);
	cfgfs_txn_free(t);
	t = cfgfs_txn_new(0);
	assert_true(cfgfs_txn_backup(t, c.resolved) < 0);
	assert_int_equal(cfgfs_txn_count(t), 0);
	cfgfs_txn_free(t);
	P(p, fx, "conf/sub.old/a.conf");
	assert_content(p, "inside\n", 7);
	P(p, fx, "outside/a.conf");
	assert_content(p, "outside\n", 8);
	P(p, fx, "outside");
	assert_int_equal(temps_below(p), 0);
}

/* ---- reading ---- */

static void test_read(void **state)
{
	struct fx *fx = *state;
	static const uint8_t bin[] = { 0, 1, 2, 0, 0xff, '\n', 0 };
	char p[PATH_MAX];
	uint8_t *data;
	size_t len;

	P(p, fx, "conf/bin");
	put(p, bin, sizeof(bin), 0600);
	assert_int_equal(cfgfs_read(p, 1 << 20, &data, &len), 0);
	assert_int_equal(len, sizeof(bin));
	assert_memory_equal(data, bin, sizeof(bin));
	assert_int_equal(data[len], 0);
	free(data);
	/* exactly at the limit, and one byte over */
	assert_int_equal(cfgfs_read(p, sizeof(bin), &data, &len), 0);
	free(data);
	assert_int_equal(cfgfs_read(p, sizeof(bin) - 1, &data, &len), -EFBIG);
	assert_null(data);

	P(p, fx, "conf/empty");
	put(p, "", 0, 0644);
	assert_int_equal(cfgfs_read(p, 0, &data, &len), 0);
	assert_int_equal(len, 0);
	assert_non_null(data);
	free(data);

	P(p, fx, "conf/lnk");
	assert_int_equal(symlink("bin", p), 0);
	assert_int_equal(cfgfs_read(p, 1 << 20, &data, &len), -EPERM);
	P(p, fx, "conf/fifo");
	assert_int_equal(mkfifo(p, 0644), 0);
	assert_int_equal(cfgfs_read(p, 1 << 20, &data, &len), -EPERM);	/* and does not block */
	P(p, fx, "conf");
	assert_int_equal(cfgfs_read(fx->conf, 1 << 20, &data, &len), -EISDIR);
	P(p, fx, "conf/missing");
	assert_int_equal(cfgfs_read(p, 1 << 20, &data, &len), -ENOENT);
	assert_int_equal(cfgfs_read("relative", 1 << 20, &data, &len), -EINVAL);
	P(p, fx, "conf/../conf/bin");
	assert_int_equal(cfgfs_read(p, 1 << 20, &data, &len), -EINVAL);
}

/* ---- listing ---- */

static size_t find_entry(const struct cfgfs_entry *e, size_t n, const char *path)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(e[i].path, path))
			return i;
	fail_msg("%s not listed", path);
	return 0;
}

static void test_list(void **state)
{
	struct fx *fx = *state;
	char *allowed[] = { fx->conf };
	char p[PATH_MAX], d[PATH_MAX], hex[65];
	struct cfgfs_limits lim;
	struct cfgfs_entry *e;
	uint8_t big[3000];
	struct stat st;
	size_t n, i, j;
	bool trunc;
	int depth;

	P(p, fx, "conf/b.conf");
	puts_file(p, "bbb\n");
	P(p, fx, "conf/a.conf");
	put(p, "a\0a", 3, 0640);
	P(p, fx, "conf/sub");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "conf/sub/c.conf");
	puts_file(p, "ccc\n");
	P(p, fx, "conf/big");
	memset(big, 'x', sizeof(big));
	put(p, big, sizeof(big), 0644);
	/* not listed: symlinks to a file and to a dir outside, a FIFO */
	P(p, fx, "conf/lnk.conf");
	assert_int_equal(symlink("a.conf", p), 0);
	P(p, fx, "outside");
	assert_int_equal(mkdir(p, 0755), 0);
	P(p, fx, "outside/secret");
	puts_file(p, "s\n");
	P(p, fx, "conf/out");
	assert_int_equal(symlink("../outside", p), 0);
	P(p, fx, "conf/fifo");
	assert_int_equal(mkfifo(p, 0644), 0);
	/* a chain conf/d1/.../d11 with a file f at each level */
	snprintf(d, sizeof(d), "%s", fx->conf);
	for (depth = 1; depth <= 11; depth++) {
		size_t l = strlen(d);

		snprintf(d + l, sizeof(d) - l, "/d%d", depth);
		assert_int_equal(mkdir(d, 0755), 0);
		root_path(p, d, "f");
		puts_file(p, "deep\n");
	}

	cfgfs_limits_default(&lim);
	lim.max_file_bytes = 2000;
	assert_int_equal(cfgfs_list(allowed, 1, &lim, &e, &n, &trunc), 0);
	assert_false(trunc);

	for (i = 1; i < n; i++)
		assert_true(strcmp(e[i - 1].path, e[i].path) < 0);
	for (i = 0; i < n; i++) {
		assert_null(strstr(e[i].path, "lnk"));
		assert_null(strstr(e[i].path, "secret"));
		assert_null(strstr(e[i].path, "fifo"));
		assert_int_equal(lstat(e[i].path, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(e[i].size, (uint64_t)st.st_size);
		assert_int_equal(e[i].mode, st.st_mode & 07777);
		assert_int_equal(e[i].mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
		if (e[i].too_large) {
			assert_string_equal(e[i].sha256, "");
		} else {
			size_t len;
			uint8_t *b = slurp(e[i].path, &len);

			sha256_hex(b, len, hex);
			assert_string_equal(e[i].sha256, hex);
			free(b);
		}
	}
	/* expected: a.conf, b.conf, big, sub/c.conf, and d<k>/.../f for the
	 * files at depth <= 8 (d<k>/f is at depth k + 1: d1 .. d7) */
	P(p, fx, "conf/a.conf");
	i = find_entry(e, n, p);
	assert_int_equal(e[i].mode, 0640);
	assert_int_equal(e[i].size, 3);
	sha256_hex("a\0a", 3, hex);
	assert_string_equal(e[i].sha256, hex);
	assert_false(e[i].too_large);
	P(p, fx, "conf/b.conf");
	find_entry(e, n, p);
	P(p, fx, "conf/sub/c.conf");
	find_entry(e, n, p);
	P(p, fx, "conf/big");
	i = find_entry(e, n, p);
	assert_true(e[i].too_large);
	assert_int_equal(e[i].size, sizeof(big));
	j = 4;
	snprintf(d, sizeof(d), "%s", fx->conf);
	for (depth = 1; depth <= 11; depth++) {
		size_t l = strlen(d);

		snprintf(d + l, sizeof(d) - l, "/d%d", depth);
		root_path(p, d, "f");
		if (depth + 1 <= CFGFS_LIST_MAX_DEPTH) {
			find_entry(e, n, p);
			j++;
		} else {
			for (i = 0; i < n; i++)
				assert_string_not_equal(e[i].path, p);
		}
	}
	assert_int_equal(j, 11);
	assert_int_equal(n, j);
	cfgfs_list_free(e, n);

	/* overlapping allowed dirs: no duplicates; a missing one is skipped */
	{
		char sub[PATH_MAX], missing[PATH_MAX];
		char *two[] = { sub, fx->conf, missing };
		size_t n2;

		P(sub, fx, "conf/sub");
		P(missing, fx, "nope");
		assert_int_equal(cfgfs_list(two, 3, &lim, &e, &n2, NULL), 0);
		assert_int_equal(n2, n);
		cfgfs_list_free(e, n2);
	}

	/* nothing to list */
	assert_int_equal(cfgfs_list(allowed, 0, NULL, &e, &n, &trunc), 0);
	assert_int_equal(n, 0);
	assert_null(e);
	cfgfs_list_free(e, n);
}

/* An allowed dir that is a symlink is listed under its real path, the
 * same path cfgfs_check_path resolves to. */
static void test_list_allowed_symlink(void **state)
{
	struct fx *fx = *state;
	char link[PATH_MAX], p[PATH_MAX];
	char *allowed[] = { link };
	struct cfgfs_entry *e;
	size_t n;

	P(link, fx, "link");
	assert_int_equal(symlink("conf", link), 0);
	P(p, fx, "conf/a.conf");
	puts_file(p, "a\n");
	assert_int_equal(cfgfs_list(allowed, 1, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].path, p);
	assert_false(e[0].too_large);
	cfgfs_list_free(e, n);
}

static void test_list_truncated(void **state)
{
	struct fx *fx = *state;
	char *allowed[] = { fx->conf };
	char name[64], p[PATH_MAX];
	struct cfgfs_entry *e;
	bool trunc;
	size_t n;
	int i;

	for (i = 0; i < CFGFS_LIST_MAX_ENTRIES + 5; i++) {
		snprintf(name, sizeof(name), "conf/f%05d", i);
		P(p, fx, name);
		put(p, "", 0, 0644);
	}
	assert_int_equal(cfgfs_list(allowed, 1, NULL, &e, &n, &trunc), 0);
	assert_true(trunc);
	assert_int_equal(n, CFGFS_LIST_MAX_ENTRIES);
	for (i = 1; i < (int)n; i++)
		assert_true(strcmp(e[i - 1].path, e[i].path) < 0);
	cfgfs_list_free(e, n);
}

/* ---- transactions ---- */

static const uint8_t old_bin[] = { 'o', 'l', 'd', 0, 0, 0xfe, 0xff, '\n', 0, 'x' };
static const uint8_t new_bin[] = { 0, 'n', 'e', 'w', 0, 0x80, '\r', '\n', 0 };

static void test_txn_write_restore(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX], hex[65];
	struct cfgfs_txn *t;
	struct stat st0, st;

	if (!is_root())
		skip();
	P(p, fx, "conf/a.conf");
	put(p, old_bin, sizeof(old_bin), 0640);
	assert_int_equal(chown(p, 1234, 1234), 0);
	{
		/* an old mtime, to see it restored */
		struct timespec ts[2] = { { 1000000000, 123456789 }, { 1000000000, 987654321 } };

		assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
	}
	assert_int_equal(stat(p, &st0), 0);

	t = cfgfs_txn_new(0);
	assert_non_null(t);
	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	assert_int_equal(cfgfs_txn_backup(t, p), 0);	/* twice: one entry */
	assert_int_equal(cfgfs_txn_count(t), 1);
	assert_int_equal(cfgfs_txn_op(t, 0), CFGFS_OP_NONE);
	assert_int_equal(cfgfs_txn_write(t, p, new_bin, sizeof(new_bin)), 0);

	assert_content(p, new_bin, sizeof(new_bin));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 1234);
	assert_int_not_equal(st.st_ino, st0.st_ino);	/* a new inode: renamed into place */
	assert_int_equal(temps_below(fx->root), 0);

	assert_string_equal(cfgfs_txn_path(t, 0), p);
	assert_true(cfgfs_txn_existed(t, 0));
	assert_int_equal(cfgfs_txn_op(t, 0), CFGFS_OP_WRITE);
	sha256_hex(old_bin, sizeof(old_bin), hex);
	assert_string_equal(cfgfs_txn_sha_before(t, 0), hex);
	sha256_hex(new_bin, sizeof(new_bin), hex);
	assert_string_equal(cfgfs_txn_sha_after(t, 0), hex);

	/* a second write of the same path in the same txn */
	assert_int_equal(cfgfs_txn_write(t, p, (const uint8_t *)"third", 5), 0);
	assert_content(p, "third", 5);

	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_content(p, old_bin, sizeof(old_bin));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 1234);
	assert_int_equal(st.st_mtim.tv_sec, st0.st_mtim.tv_sec);
	assert_int_equal(st.st_mtim.tv_nsec, st0.st_mtim.tv_nsec);
	assert_int_equal(temps_below(fx->root), 0);

	/* restoring again changes nothing (same inode: left alone) */
	assert_int_equal(cfgfs_txn_restore(t), 0);
	{
		struct stat st2;

		assert_int_equal(stat(p, &st2), 0);
		assert_int_equal(st2.st_ino, st.st_ino);
	}
	cfgfs_txn_free(t);
}

static void test_txn_setid_mode_kept(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX];
	struct cfgfs_txn *t;
	struct stat st;

	if (!is_root())
		skip();
	/* chown clears set-id bits: they must survive a write */
	P(p, fx, "conf/odd");
	puts_file(p, "x");
	assert_int_equal(chown(p, 1234, 1234), 0);
	assert_int_equal(chmod(p, 02751), 0);
	t = cfgfs_txn_new(0);
	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	assert_int_equal(cfgfs_txn_write(t, p, (const uint8_t *)"y", 1), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 02751);
	assert_int_equal(st.st_uid, 1234);
	cfgfs_txn_free(t);
}

static void test_txn_new_file(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX], d[PATH_MAX];
	struct cfgfs_txn *t;
	struct stat st;
	mode_t um;

	if (!is_root())
		skip();
	um = umask(077);	/* the mode must not depend on the umask */
	P(p, fx, "conf/new.conf");
	t = cfgfs_txn_new(0);
	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	assert_false(cfgfs_txn_existed(t, 0));
	assert_string_equal(cfgfs_txn_sha_before(t, 0), "");
	assert_int_equal(cfgfs_txn_write(t, p, (const uint8_t *)"hello\n", 6), 0);
	assert_content(p, "hello\n", 6);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_gid, 0);

	/* in a directory whose group is not root: that group */
	P(d, fx, "conf/grp");
	assert_int_equal(mkdir(d, 0755), 0);
	assert_int_equal(chown(d, 0, 4321), 0);
	P(d, fx, "conf/grp/g.conf");
	assert_int_equal(cfgfs_txn_backup(t, d), 0);
	assert_int_equal(cfgfs_txn_write(t, d, (const uint8_t *)"", 0), 0);
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_gid, 4321);
	umask(um);

	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_missing(p);
	assert_missing(d);
	assert_int_equal(temps_below(fx->root), 0);
	cfgfs_txn_free(t);
}

static void test_txn_delete_restore(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX], q[PATH_MAX];
	struct cfgfs_txn *t;
	struct stat st;

	if (!is_root())
		skip();
	P(p, fx, "conf/del.conf");
	put(p, old_bin, sizeof(old_bin), 0600);
	assert_int_equal(chown(p, 1234, 4321), 0);
	t = cfgfs_txn_new(0);

	/* delete without a backup: refused */
	assert_int_equal(cfgfs_txn_delete(t, p), -EINVAL);
	assert_int_equal(cfgfs_txn_write(t, p, (const uint8_t *)"x", 1), -EINVAL);
	assert_content(p, old_bin, sizeof(old_bin));

	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	assert_int_equal(cfgfs_txn_delete(t, p), 0);
	assert_missing(p);
	assert_int_equal(cfgfs_txn_op(t, 0), CFGFS_OP_DELETE);
	assert_string_equal(cfgfs_txn_sha_after(t, 0), "");
	/* deleting what is not there */
	assert_int_equal(cfgfs_txn_delete(t, p), -ENOENT);
	P(q, fx, "conf/never");
	assert_int_equal(cfgfs_txn_backup(t, q), 0);
	assert_int_equal(cfgfs_txn_delete(t, q), -ENOENT);

	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_content(p, old_bin, sizeof(old_bin));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 4321);
	assert_missing(q);
	assert_int_equal(temps_below(fx->root), 0);
	cfgfs_txn_free(t);
}

static void test_txn_refuses_non_regular(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX], q[PATH_MAX];
	struct cfgfs_txn *t;
	struct stat st;

	P(q, fx, "conf/target");
	puts_file(q, "target\n");
	P(p, fx, "conf/lnk");
	assert_int_equal(symlink("target", p), 0);
	t = cfgfs_txn_new(0);
	assert_int_equal(cfgfs_txn_backup(t, p), -EPERM);
	P(p, fx, "conf/dir");
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(cfgfs_txn_backup(t, p), -EISDIR);
	P(p, fx, "conf/fifo");
	assert_int_equal(mkfifo(p, 0644), 0);
	assert_int_equal(cfgfs_txn_backup(t, p), -EPERM);

	/* backed up as missing, then a symlink appears: the write refuses */
	P(p, fx, "conf/late");
	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	assert_int_equal(symlink("target", p), 0);
	assert_int_equal(cfgfs_txn_write(t, p, (const uint8_t *)"evil", 4), -EPERM);
	assert_int_equal(cfgfs_txn_delete(t, p), -EPERM);
	assert_content(q, "target\n", 7);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(temps_below(fx->root), 0);
	/* restore removes what was not there before (the link, not its target) */
	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_missing(p);
	assert_content(q, "target\n", 7);
	cfgfs_txn_free(t);
}

static void test_txn_backup_limit(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX], q[PATH_MAX];
	struct cfgfs_txn *t;

	P(p, fx, "conf/a");
	put(p, "0123456789", 10, 0644);
	P(q, fx, "conf/b");
	put(q, "0123456789", 10, 0644);
	t = cfgfs_txn_new(15);
	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	assert_int_equal(cfgfs_txn_backup(t, q), -EFBIG);
	assert_int_equal(cfgfs_txn_count(t), 1);
	assert_non_null(strstr(cfgfs_txn_error(t), "limit"));
	assert_int_equal(cfgfs_txn_backup(t, "relative"), -EINVAL);
	cfgfs_txn_free(t);
	cfgfs_txn_free(NULL);
}

/* ---- disk full ---- */

static bool mount_small(struct fx *fx)
{
	if (mkdir(fx->full, 0755))
		fail_msg("mkdir %s: %s", fx->full, strerror(errno));
	if (mount("tmpfs", fx->full, "tmpfs", 0, "size=64k,mode=0755")) {
		if (errno == EPERM)
			return false;
		fail_msg("mount tmpfs: %s", strerror(errno));
	}
	fx->mounted = true;
	return true;
}

static void test_disk_full_single(void **state)
{
	struct fx *fx = *state;
	char p[PATH_MAX];
	struct cfgfs_txn *t;
	uint8_t *big;
	int r;

	if (!mount_small(fx))
		skip();
	P(p, fx, "full/a.conf");
	put(p, old_bin, sizeof(old_bin), 0644);
	big = malloc(200 << 10);
	assert_non_null(big);
	memset(big, 'B', 200 << 10);

	t = cfgfs_txn_new(0);
	assert_int_equal(cfgfs_txn_backup(t, p), 0);
	r = cfgfs_txn_write(t, p, big, 200 << 10);
	assert_true(r == -ENOSPC || r == -EDQUOT);
	assert_non_null(strstr(cfgfs_txn_error(t), "No space"));
	assert_int_equal(cfgfs_txn_op(t, 0), CFGFS_OP_NONE);
	assert_content(p, old_bin, sizeof(old_bin));
	assert_int_equal(temps_below(fx->full), 0);
	/* the space was given back: a small write still works */
	assert_int_equal(cfgfs_txn_write(t, p, new_bin, sizeof(new_bin)), 0);
	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_content(p, old_bin, sizeof(old_bin));
	cfgfs_txn_free(t);
	free(big);
}

static void test_disk_full_multi(void **state)
{
	struct fx *fx = *state;
	char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX];
	struct cfgfs_txn *t;
	uint8_t *big;

	if (!mount_small(fx))
		skip();
	P(a, fx, "full/a.conf");
	puts_file(a, "a old\n");
	P(b, fx, "full/b.conf");
	put(b, old_bin, sizeof(old_bin), 0600);
	P(c, fx, "full/c.conf");	/* new in this txn */
	big = malloc(200 << 10);
	assert_non_null(big);
	memset(big, 'B', 200 << 10);

	t = cfgfs_txn_new(0);
	assert_int_equal(cfgfs_txn_backup(t, a), 0);
	assert_int_equal(cfgfs_txn_backup(t, b), 0);
	assert_int_equal(cfgfs_txn_backup(t, c), 0);
	assert_int_equal(cfgfs_txn_write(t, a, (const uint8_t *)"a new\n", 6), 0);
	assert_int_equal(cfgfs_txn_write(t, c, (const uint8_t *)"c new\n", 6), 0);
	assert_true(cfgfs_txn_write(t, b, big, 200 << 10) < 0);
	assert_content(b, old_bin, sizeof(old_bin));
	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_content(a, "a old\n", 6);
	assert_content(b, old_bin, sizeof(old_bin));
	assert_missing(c);
	assert_int_equal(temps_below(fx->full), 0);
	cfgfs_txn_free(t);
	free(big);
}

/* Restore on a disk so full that the backup and the new content do not fit
 * side by side: the new file is removed first, then the backup written. */
static void test_disk_full_restore(void **state)
{
	struct fx *fx = *state;
	char a[PATH_MAX], filler[PATH_MAX];
	struct cfgfs_txn *t;
	struct statvfs sv;
	uint8_t *oldc, *newc, *fill;
	size_t oldn = 16 << 10, newn = 24 << 10, filln;
	int fd;
	ssize_t w;

	if (!mount_small(fx))
		skip();
	oldc = malloc(oldn);
	newc = malloc(newn);
	assert_non_null(oldc);
	assert_non_null(newc);
	pattern(oldc, oldn);
	memset(newc, 'N', newn);
	P(a, fx, "full/a.conf");
	put(a, oldc, oldn, 0644);

	t = cfgfs_txn_new(0);
	assert_int_equal(cfgfs_txn_backup(t, a), 0);
	assert_int_equal(cfgfs_txn_write(t, a, newc, newn), 0);

	/* fill what is left */
	assert_int_equal(statvfs(fx->full, &sv), 0);
	filln = (size_t)sv.f_bavail * sv.f_frsize;
	P(filler, fx, "full/filler");
	fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	fill = calloc(1, filln + 4096);
	assert_non_null(fill);
	w = write(fd, fill, filln + 4096);	/* short write at ENOSPC */
	assert_true(w > 0);
	close(fd);
	free(fill);
	assert_int_equal(statvfs(fx->full, &sv), 0);
	assert_true((size_t)sv.f_bavail * sv.f_frsize < oldn);

	assert_int_equal(cfgfs_txn_restore(t), 0);
	assert_content(a, oldc, oldn);
	assert_int_equal(temps_below(fx->full), 0);
	cfgfs_txn_free(t);
	free(oldc);
	free(newc);
}

/* ---- base64 ---- */

static void b64_ok(const char *in, const void *want, size_t wlen)
{
	uint8_t *out;
	size_t n;
	char *enc;

	assert_int_equal(cfgfs_base64_decode(in, strlen(in), &out, &n), 0);
	assert_non_null(out);
	assert_int_equal(n, wlen);
	assert_memory_equal(out, want, wlen);
	assert_int_equal(out[n], 0);
	free(out);
	enc = cfgfs_base64_encode(want, wlen, &n);
	assert_non_null(enc);
	assert_string_equal(enc, in);
	assert_int_equal(n, strlen(in));
	free(enc);
}

static void b64_bad(const char *in, size_t len)
{
	uint8_t *out = (uint8_t *)"sentinel";
	size_t n = 99;

	assert_int_equal(cfgfs_base64_decode(in, len, &out, &n), -EINVAL);
	assert_null(out);
	assert_int_equal(n, 0);
}

static void test_base64(void **state)
{
	uint8_t all[256], *out;
	size_t n, i;
	char *enc;

	(void)state;
	/* RFC 4648 section 10 */
	b64_ok("", "", 0);
	b64_ok("Zg==", "f", 1);
	b64_ok("Zm8=", "fo", 2);
	b64_ok("Zm9v", "foo", 3);
	b64_ok("Zm9vYg==", "foob", 4);
	b64_ok("Zm9vYmE=", "fooba", 5);
	b64_ok("Zm9vYmFy", "foobar", 6);
	b64_ok("AP8A/w==", "\0\xff\0\xff", 4);
	b64_ok("+/+/", "\xfb\xff\xbf", 3);

	for (i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	for (i = 0; i <= 256; i++) {
		enc = cfgfs_base64_encode(all + 256 - i, i, &n);
		assert_non_null(enc);
		assert_int_equal(cfgfs_base64_decode(enc, n, &out, &n), 0);
		assert_int_equal(n, i);
		if (i)
			assert_memory_equal(out, all + 256 - i, i);
		free(out);
		free(enc);
	}

	/* invalid characters */
	b64_bad("Zm9*", 4);
	b64_bad("Zm9v!A==", 8);
	b64_bad("Zm-_", 4);	/* base64url is not accepted */
	b64_bad("Zm9\0", 4);
	b64_bad("Zm\xc3\xa9", 4);
	/* whitespace and line breaks */
	b64_bad("Zm9v\n", 5);
	b64_bad("Zm9v\nYmFy", 9);
	b64_bad("Zm9 ", 4);
	b64_bad(" Zm9v", 5);
	b64_bad("Zm9v\r\n", 6);
	/* padding */
	b64_bad("Zg", 2);
	b64_bad("Zg=", 3);
	b64_bad("Zm8", 3);
	b64_bad("Z===", 4);
	b64_bad("====", 4);
	b64_bad("=Zm9", 4);
	b64_bad("Zm=v", 4);
	b64_bad("Zg==Zm9v", 8);	/* padding in the middle */
	b64_bad("Zg===", 5);
	b64_bad("Zm9vYg=", 7);
	/* non-canonical: unused bits set */
	b64_bad("Zh==", 4);
	b64_bad("Zm9=", 4);
	/* lengths */
	b64_bad("A", 1);
	b64_bad("AB", 2);
	b64_bad("ABC", 3);
	b64_bad("ABCDE", 5);

	/* an empty input decodes to an empty, freeable buffer */
	assert_int_equal(cfgfs_base64_decode("", 0, &out, &n), 0);
	assert_non_null(out);
	assert_int_equal(n, 0);
	free(out);
}

#define FX(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_sha256_million_a),
		cmocka_unit_test(test_sha256_boundaries),
		cmocka_unit_test(test_sha256_incremental),
		FX(test_path_syntax),
		FX(test_path_allowed),
		FX(test_path_allowed_symlink),
		FX(test_path_not_regular),
		FX(test_swap_after_check),
		FX(test_read),
		FX(test_list),
		FX(test_list_allowed_symlink),
		FX(test_list_truncated),
		FX(test_txn_write_restore),
		FX(test_txn_setid_mode_kept),
		FX(test_txn_new_file),
		FX(test_txn_delete_restore),
		FX(test_txn_refuses_non_regular),
		FX(test_txn_backup_limit),
		FX(test_disk_full_single),
		FX(test_disk_full_multi),
		FX(test_disk_full_restore),
		cmocka_unit_test(test_base64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
