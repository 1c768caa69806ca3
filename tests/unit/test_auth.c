/* Unit tests for auth.c: the token file's parser and its permission checks,
 * generation of a missing file, the constant-time comparison, the header
 * check, the per-peer limiter (with a fake clock: no sleeps) and the
 * unix-socket helpers. Files live under a mkdtemp directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "auth.h"
#include "sha256.h"

static char dir[64];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_auth.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void put(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void id_of(const char *tok, char out[AUTH_ID_LEN + 1])
{
	char hex[SHA256_HEX_LEN + 1];
	sha256_hex(tok, strlen(tok), hex);
	memcpy(out, hex, AUTH_ID_LEN);
	out[AUTH_ID_LEN] = '\0';
}

static void test_ct_equal(void **state)
{
	(void)state;
	assert_true(auth_ct_equal("abcd", "abcd", 4));
	assert_false(auth_ct_equal("abcd", "abce", 4));
	assert_false(auth_ct_equal("\x80" "bcd", "\x00" "bcd", 4));
	assert_true(auth_ct_equal("x", "y", 0));
	uint8_t a[32], b[32];
	memset(a, 7, sizeof(a));
	memcpy(b, a, sizeof(b));
	for (size_t i = 0; i < sizeof(a); i++) {
		b[i] ^= 1;
		assert_false(auth_ct_equal(a, b, sizeof(a)));
		b[i] ^= 1;
	}
	assert_true(auth_ct_equal(a, b, sizeof(a)));
}

static void test_parse_ok(void **state)
{
	struct auth_tokens *t = NULL;
	char err[256] = "", id[AUTH_ID_LEN + 1], want[AUTH_ID_LEN + 1];
	const char *one = "0123456789abcdef";
	(void)state;
	/* with and without the trailing newline */
	assert_int_equal(auth_tokens_parse(one, strlen(one), "f", &t, err, sizeof(err)), 0);
	assert_int_equal(t->n, 1);
	id_of(one, want);
	assert_string_equal(t->t[0].id, want);
	auth_tokens_free(t);
	const char *two = "first.token-A_b~c+d/e=\nsecond-token-0000000\n";
	assert_int_equal(auth_tokens_parse(two, strlen(two), "f", &t, err, sizeof(err)), 0);
	assert_int_equal(t->n, 2);
	assert_int_equal(auth_tokens_check(t, "Bearer second-token-0000000", id), AUTH_OK);
	id_of("second-token-0000000", want);
	assert_string_equal(id, want);
	assert_int_equal(auth_tokens_check(t, "bearer first.token-A_b~c+d/e=", id), AUTH_OK);
	id_of("first.token-A_b~c+d/e=", want);
	assert_string_equal(id, want);
	auth_tokens_free(t);
	auth_tokens_free(NULL);
}

static void test_parse_errors(void **state)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{ "", "f: empty token file" },
		{ "\n", "f:1: empty line" },
		{ "short\n", "f:1: token too short" },
		{ "0123456789abcdef\n\n", "f:2: empty line" },
		{ "0123456789abcdef\n\nabcdefabcdefabcdef", "f:2: empty line" },
		{ "0123456789abcdef \n", "f:1: invalid character 0x20" },
		{ "0123456789abcdef\r\n", "f:1: invalid character 0x0d" },
		{ " 0123456789abcdef\n", "f:1: invalid character 0x20" },
		{ "0123456789abcdef\n# comment is junk\n", "f:2: invalid character 0x23" },
		{ "0123456789abcdef\n012345678\xc3\xa9" "abcdef\n", "f:2: invalid character 0xc3" },
		{ "0123456789abcdef\n\n\n", "f:2: empty line" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct auth_tokens *t = (struct auth_tokens *)0x1;
		char err[256] = "";
		int rc = auth_tokens_parse(cases[i].text, strlen(cases[i].text), "f", &t, err, sizeof(err));
		if (rc != -EINVAL || !strstr(err, cases[i].msg))
			print_error("case %zu: rc %d err \"%s\", want \"%s\"\n", i, rc, err, cases[i].msg);
		assert_int_equal(rc, -EINVAL);
		assert_null(t);
		assert_non_null(strstr(err, cases[i].msg));
	}
	/* a token of the maximum length passes, one more does not */
	char big[AUTH_TOKEN_MAX + 2];
	memset(big, 'k', sizeof(big));
	struct auth_tokens *t = NULL;
	char err[256];
	assert_int_equal(auth_tokens_parse(big, AUTH_TOKEN_MAX, "f", &t, err, sizeof(err)), 0);
	auth_tokens_free(t);
	assert_int_equal(auth_tokens_parse(big, AUTH_TOKEN_MAX + 1, "f", &t, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "f:1: token too long"));
}

static void test_check_header(void **state)
{
	struct auth_tokens *t = NULL;
	char err[128], id[AUTH_ID_LEN + 1];
	const char *tok = "s3cret-s3cret-s3cret";
	(void)state;
	assert_int_equal(auth_tokens_parse(tok, strlen(tok), "f", &t, err, sizeof(err)), 0);
	assert_int_equal(auth_tokens_check(t, "Bearer s3cret-s3cret-s3cret", id), AUTH_OK);
	assert_int_equal(auth_tokens_check(t, "BEARER s3cret-s3cret-s3cret", id), AUTH_OK);
	assert_int_equal(auth_tokens_check(t, NULL, id), AUTH_MISSING);
	assert_int_equal(auth_tokens_check(t, "", id), AUTH_MISSING);
	assert_int_equal(auth_tokens_check(t, "Basic czNjcmV0", id), AUTH_BAD_SCHEME);
	assert_int_equal(auth_tokens_check(t, "s3cret-s3cret-s3cret", id), AUTH_BAD_SCHEME);
	assert_int_equal(auth_tokens_check(t, "Bearer", id), AUTH_BAD_SCHEME);
	assert_int_equal(auth_tokens_check(t, "Bearer ", id), AUTH_WRONG);
	assert_int_equal(auth_tokens_check(t, "Bearer  s3cret-s3cret-s3cret", id), AUTH_WRONG);
	assert_int_equal(auth_tokens_check(t, "Bearer s3cret-s3cret-s3cre", id), AUTH_WRONG);
	assert_int_equal(auth_tokens_check(t, "Bearer s3cret-s3cret-s3crett", id), AUTH_WRONG);
	assert_int_equal(auth_tokens_check(t, "Bearer S3CRET-S3CRET-S3CRET", id), AUTH_WRONG);
	assert_string_equal(id, "");
	char big[AUTH_TOKEN_MAX + 64];
	snprintf(big, sizeof(big), "Bearer %0*d", AUTH_TOKEN_MAX + 10, 0);
	assert_int_equal(auth_tokens_check(t, big, id), AUTH_WRONG);
	/* no token set: nothing matches */
	assert_int_equal(auth_tokens_check(NULL, "Bearer s3cret-s3cret-s3cret", id), AUTH_WRONG);
	auth_tokens_free(t);
}

static void test_load_permissions(void **state)
{
	char p[128], err[512];
	struct auth_tokens *t = NULL;
	bool created = true;
	(void)state;
	snprintf(p, sizeof(p), "%s/token", dir);
	put(p, "abcdefabcdefabcdef\n", 0600);
	assert_int_equal(auth_tokens_load(p, false, &t, &created, err, sizeof(err)), 0);
	assert_false(created);
	assert_int_equal(t->n, 1);
	auth_tokens_free(t);
	static const mode_t bad[] = { 0644, 0640, 0604, 0620, 0602, 0610, 0601, 0660, 0666 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(chmod(p, bad[i]), 0);
		t = (struct auth_tokens *)0x1;
		assert_int_equal(auth_tokens_load(p, true, &t, &created, err, sizeof(err)), -EPERM);
		assert_null(t);
		assert_non_null(strstr(err, "readable or writable by group or other"));
		assert_memory_equal(err, p, strlen(p));
	}
	/* 0400 is fine: the agent only reads it */
	assert_int_equal(chmod(p, 0400), 0);
	assert_int_equal(auth_tokens_load(p, false, &t, NULL, err, sizeof(err)), 0);
	auth_tokens_free(t);
	/* a directory, a symlink, a fifo, missing without create */
	char d[160], l[160], f[160], m[160];
	snprintf(d, sizeof(d), "%s/d", dir);
	assert_int_equal(mkdir(d, 0700), 0);
	assert_int_equal(auth_tokens_load(d, true, &t, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	snprintf(l, sizeof(l), "%s/l", dir);
	assert_int_equal(symlink(p, l), 0);
	assert_int_equal(auth_tokens_load(l, true, &t, NULL, err, sizeof(err)), -ELOOP);
	assert_non_null(strstr(err, "symbolic link"));
	snprintf(f, sizeof(f), "%s/fifo", dir);
	assert_int_equal(mkfifo(f, 0600), 0);
	assert_int_equal(auth_tokens_load(f, true, &t, NULL, err, sizeof(err)), -EINVAL);
	snprintf(m, sizeof(m), "%s/missing", dir);
	assert_int_equal(auth_tokens_load(m, false, &t, NULL, err, sizeof(err)), -ENOENT);
	assert_int_equal(access(m, F_OK), -1);
	/* junk inside a private file: file:line */
	put(p, "abcdefabcdefabcdef\nbad token\n", 0600);
	assert_int_equal(auth_tokens_load(p, false, &t, NULL, err, sizeof(err)), -EINVAL);
	char want[200];
	snprintf(want, sizeof(want), "%s:2: invalid character 0x20", p);
	assert_non_null(strstr(err, want));
	put(p, "", 0600);
	assert_int_equal(auth_tokens_load(p, true, &t, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "empty token file"));
}

static void test_generate(void **state)
{
	char p[256], sub[128], err[512], buf[128];
	struct auth_tokens *t = NULL;
	bool created = false;
	struct stat st;
	(void)state;
	snprintf(sub, sizeof(sub), "%s/new", dir);
	snprintf(p, sizeof(p), "%s/token", sub);
	assert_int_equal(auth_tokens_load(p, true, &t, &created, err, sizeof(err)), 0);
	assert_true(created);
	assert_int_equal(t->n, 1);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	int fd = open(p, O_RDONLY);
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(n, 65);
	assert_int_equal(buf[64], '\n');
	for (int i = 0; i < 64; i++)
		assert_non_null(strchr("0123456789abcdef", buf[i]));
	buf[64] = '\0';
	char id[AUTH_ID_LEN + 1], hdr[80];
	memcpy(hdr, "Bearer ", 7);
	memcpy(hdr + 7, buf, 65);
	assert_int_equal(auth_tokens_check(t, hdr, id), AUTH_OK);
	assert_string_equal(id, t->t[0].id);
	auth_tokens_free(t);
	/* present now: read, not replaced; another new file has another token */
	char p2[256];
	snprintf(p2, sizeof(p2), "%s/token2", sub);
	const struct {
		const char *path;
		bool created;
		enum auth_result res;
	} again[] = { { p, false, AUTH_OK }, { p2, true, AUTH_WRONG } };
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(auth_tokens_load(again[i].path, true, &t, &created, err, sizeof(err)), 0);
		assert_int_equal(created, again[i].created);
		assert_int_equal(auth_tokens_check(t, hdr, id), again[i].res);
		auth_tokens_free(t);
	}
	/* a parent that cannot be made */
	char deep[200];
	snprintf(deep, sizeof(deep), "%s/no/such/token", dir);
	assert_true(auth_tokens_load(deep, true, &t, &created, err, sizeof(err)) < 0);
	assert_null(t);
	assert_non_null(strstr(err, "cannot create its directory"));
}

static void test_limiter(void **state)
{
	struct auth_limiter *l = auth_limiter_new(4);
	uint64_t now = 1000000;
	(void)state;
	assert_non_null(l);
	for (int i = 1; i < AUTH_FREE_FAILURES; i++)
		assert_int_equal(auth_limiter_fail(l, "10.0.0.1", now + (uint64_t)i), 0);
	assert_int_equal(auth_limiter_blocked(l, "10.0.0.1", now + 10), 0);
	/* the fifth failure starts 1 s; attempts during it do not extend it */
	assert_int_equal(auth_limiter_fail(l, "10.0.0.1", now + 10), AUTH_BACKOFF_MIN_MS);
	assert_int_equal(auth_limiter_blocked(l, "10.0.0.1", now + 10), AUTH_BACKOFF_MIN_MS);
	assert_int_equal(auth_limiter_fail(l, "10.0.0.1", now + 500), 0);
	assert_int_equal(auth_limiter_blocked(l, "10.0.0.1", now + 500), AUTH_BACKOFF_MIN_MS - 490);
	assert_int_equal(auth_limiter_blocked(l, "10.0.0.2", now + 500), 0);   /* others unaffected */
	assert_int_equal(auth_limiter_blocked(l, "10.0.0.1", now + 1010), 0);
	/* failing again after it doubles the backoff, up to the maximum */
	uint64_t t = now + 1010, want = 2 * AUTH_BACKOFF_MIN_MS;
	for (int i = 0; i < 20; i++) {
		assert_int_equal(auth_limiter_fail(l, "10.0.0.1", t), want);
		t += want;
		want = want * 2 > AUTH_BACKOFF_MAX_MS ? AUTH_BACKOFF_MAX_MS : want * 2;
	}
	/* a success forgets the peer */
	auth_limiter_success(l, "10.0.0.1");
	assert_int_equal(auth_limiter_blocked(l, "10.0.0.1", t), 0);
	for (int i = 1; i < AUTH_FREE_FAILURES; i++)
		assert_int_equal(auth_limiter_fail(l, "10.0.0.1", t), 0);
	/* failures spread wider than the window start over */
	t += AUTH_WINDOW_MS + 1;
	for (int i = 1; i < AUTH_FREE_FAILURES; i++)
		assert_int_equal(auth_limiter_fail(l, "10.0.0.1", t), 0);
	auth_limiter_free(l);
	auth_limiter_free(NULL);
}

static void test_limiter_bounded(void **state)
{
	struct auth_limiter *l = auth_limiter_new(4);
	char peer[32];
	(void)state;
	/* p0 is blocked; then 10 other peers fail once each, later */
	for (int i = 0; i < AUTH_FREE_FAILURES; i++)
		auth_limiter_fail(l, "p0", 100);
	assert_true(auth_limiter_blocked(l, "p0", 101) > 0);
	for (int i = 1; i <= 10; i++) {
		snprintf(peer, sizeof(peer), "p%d", i);
		auth_limiter_fail(l, peer, 200 + (uint64_t)i);
		assert_true(auth_limiter_size(l) <= 4);
	}
	assert_int_equal(auth_limiter_size(l), 4);
	/* the least recently failing were dropped: p0 and p1..p6; p7..p10 kept */
	assert_int_equal(auth_limiter_blocked(l, "p0", 300), 0);
	for (int i = 7; i <= 10; i++) {
		snprintf(peer, sizeof(peer), "p%d", i);
		for (int k = 1; k < AUTH_FREE_FAILURES - 1; k++)
			assert_int_equal(auth_limiter_fail(l, peer, 300), 0);
		assert_int_equal(auth_limiter_fail(l, peer, 300), AUTH_BACKOFF_MIN_MS);
	}
	auth_limiter_free(l);
}

static void test_unix_socket(void **state)
{
	char p[128], err[256];
	struct stat st;
	(void)state;
	snprintf(p, sizeof(p), "%s/s.sock", dir);
	int fd = auth_unix_listen(p, 0600, err, sizeof(err));
	assert_true(fd >= 0);
	assert_int_equal(stat(p, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	/* the peer's uid */
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	memcpy(sun.sun_path, p, strlen(p) + 1);
	assert_int_equal(connect(c, (struct sockaddr *)&sun, sizeof(sun)), 0);
	int s = accept(fd, NULL, NULL);
	assert_true(s >= 0);
	unsigned uid = 12345;
	assert_int_equal(auth_peer_uid(s, &uid), 0);
	assert_int_equal(uid, geteuid());
	close(s);
	close(c);
	close(fd);
	/* a stale socket is replaced, with another mode */
	fd = auth_unix_listen(p, 0660, err, sizeof(err));
	assert_true(fd >= 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	close(fd);
	/* a regular file in the way is left alone */
	char f[160];
	snprintf(f, sizeof(f), "%s/file", dir);
	put(f, "keep", 0644);
	assert_int_equal(auth_unix_listen(f, 0600, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "exists and is not a socket"));
	assert_int_equal(stat(f, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	/* too long for sun_path */
	char lp[200];
	memset(lp, 'x', sizeof(lp) - 1);
	lp[0] = '/';
	lp[sizeof(lp) - 1] = '\0';
	assert_int_equal(auth_unix_prepare(lp, err, sizeof(err)), -ENAMETOOLONG);
}

static void expect_key(const char *in, const char *want)
{
	char a[46];

	snprintf(a, sizeof(a), "%s", in);
	auth_peer_key(a, sizeof(a));
	assert_string_equal(a, want);
}

/* IPv6 peers are their /64: a host cannot dodge the backoff or the stream
 * limit by taking a new address from its prefix for each attempt. */
static void test_peer_key(void **state)
{
	(void)state;
	expect_key("192.0.2.7", "192.0.2.7");
	expect_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64");
	expect_key("2001:db8:1:2::9", "2001:db8:1:2::/64");
	expect_key("2001:db8:1:3::9", "2001:db8:1:3::/64");
	expect_key("fe80::1", "fe80::/64");
	expect_key("::1", "::1");
	expect_key("::ffff:192.0.2.7", "::ffff:192.0.2.7");
	expect_key("unix", "unix");
	expect_key("unknown", "unknown");
	expect_key("fe80::1%eth0", "fe80::1%eth0");
	expect_key("2001:db8::1::2", "2001:db8::1::2");
	expect_key("", "");

	/* two addresses of one /64 share one backoff */
	struct auth_limiter *l = auth_limiter_new(5);
	char a[46] = "2001:db8:1:2::1", b[46] = "2001:db8:1:2::2";
	uint64_t t = 1000;

	assert_non_null(l);
	auth_peer_key(a, sizeof(a));
	auth_peer_key(b, sizeof(b));
	for (int i = 0; i < AUTH_FREE_FAILURES; i++)
		auth_limiter_fail(l, a, t);
	assert_true(auth_limiter_blocked(l, b, t) > 0);
	auth_limiter_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ct_equal),
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_check_header),
		cmocka_unit_test_setup_teardown(test_load_permissions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_generate, setup, teardown),
		cmocka_unit_test(test_limiter),
		cmocka_unit_test(test_limiter_bounded),
		cmocka_unit_test(test_peer_key),
		cmocka_unit_test_setup_teardown(test_unix_socket, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
