/* Unit tests for logtail.c: real files in a fresh directory under /tmp, a
 * real loop driven with loop_run_once until a condition holds or a deadline
 * passes (no sleeps, no timing thresholds: the rotation idle time only
 * decides when a switch happens, never what is delivered, because the tests
 * write to an old file only at moments where the tailer cannot have
 * switched yet).
 *
 * The high-rate cases run a writer child (100k lines, three rotations of one
 * kind) while the parent runs the tailer. Between two rotations the writer
 * waits until the tailer has seen the previous new file (a byte on a pipe
 * per rotation the tailer reports): a path-based tailer cannot see a file
 * created and rotated away again before it woke up, and real rotations are
 * hours apart. The lines themselves are not synchronised. The writer
 * stops writing to an old file before the new one appears: appends to an
 * old file after that are only safe while they come less than
 * rotate_idle_ms apart, which a loaded test machine cannot promise; the
 * deterministic tests cover them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "logtail.h"
#include "loop.h"

#define DEADLINE_MS 60000
#define NOBODY 65534

struct fx {
	char dir[64];
	char path[128];
	struct loop *l;
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/logtail-test-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/app.log", f->dir);
	f->l = loop_new();
	if (!f->l)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	loop_free(f->l);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- helpers ---- */

struct rec {
	char *s;
	size_t len;
	bool trunc;
};

struct sink {
	struct rec *v;
	size_t n, cap;
	size_t not_nul_terminated;
	struct logtail *self;   /* close it from the callback after close_after lines */
	size_t close_after;
};

static void on_line(void *arg, const char *line, size_t len, bool trunc)
{
	struct sink *s = arg;

	if (line[len] != '\0')
		s->not_nul_terminated++;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 16;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		assert_non_null(s->v);
	}
	s->v[s->n].s = malloc(len + 1);
	assert_non_null(s->v[s->n].s);
	memcpy(s->v[s->n].s, line, len + 1);
	s->v[s->n].len = len;
	s->v[s->n].trunc = trunc;
	s->n++;
	if (s->self && s->n == s->close_after) {
		logtail_close(s->self);
		s->self = NULL;
	}
}

static void sink_free(struct sink *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].s);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static void assert_line(const struct sink *s, size_t i, const char *want, bool trunc)
{
	if (i >= s->n)
		fail_msg("line %zu missing (have %zu)", i, s->n);
	if (s->v[i].len != strlen(want) || memcmp(s->v[i].s, want, s->v[i].len) != 0)
		fail_msg("line %zu: got '%.*s' (%zu bytes), want '%s'", i, (int)s->v[i].len, s->v[i].s,
			 s->v[i].len, want);
	assert_int_equal(s->v[i].trunc, trunc);
}

static void assert_lines(const struct sink *s, const char *const *want, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_line(s, i, want[i], false);
	assert_int_equal(s->n, n);
	assert_int_equal(s->not_nul_terminated, 0);
}

typedef bool (*cond_fn)(void *ctx);

static void run_until(struct loop *l, cond_fn cond, void *ctx, const char *what)
{
	uint64_t end = loop_now_ms() + DEADLINE_MS;

	while (!cond(ctx)) {
		if (loop_now_ms() > end)
			fail_msg("not reached within %d ms: %s", DEADLINE_MS, what);
		assert_int_equal(loop_run_once(l, 50), 0);
	}
}

struct nlines {
	struct sink *s;
	size_t n;
};

static bool have_lines(void *ctx)
{
	struct nlines *c = ctx;

	return c->s->n >= c->n;
}

static void run_until_lines(struct loop *l, struct sink *s, size_t n)
{
	struct nlines c = { s, n };

	run_until(l, have_lines, &c, "lines");
}

struct stwait {
	struct logtail *t;
	const char *state;
	bool open;
	uint64_t rotations;
};

static bool in_state(void *ctx)
{
	struct stwait *w = ctx;
	struct logtail_status st;

	logtail_get_status(w->t, &st);
	return !strcmp(st.state, w->state) && st.open == w->open;
}

static void run_until_state(struct loop *l, struct logtail *t, const char *state, bool open)
{
	struct stwait w = { .t = t, .state = state, .open = open };

	run_until(l, in_state, &w, state);
}

static bool have_rotations(void *ctx)
{
	struct stwait *w = ctx;
	struct logtail_status st;

	logtail_get_status(w->t, &st);
	return st.rotations >= w->rotations;
}

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		assert_true(w > 0);
		c += w;
		n -= (size_t)w;
	}
}

static void put(int fd, const char *s)
{
	write_all(fd, s, strlen(s));
}

static int open_append(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	return fd;
}

static void write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	write_all(fd, p, n);
	close(fd);
}

/* logrotate's copytruncate: copy, then truncate the original in place. */
static int copytruncate(const char *path, const char *copy)
{
	char buf[65536];
	int in = open(path, O_RDONLY | O_CLOEXEC);
	int out = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ssize_t n;
	int rc = 0;

	if (in < 0 || out < 0)
		rc = -1;
	while (!rc && (n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			rc = -1;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 0) < 0)
		rc = -1;
	if (fd >= 0)
		close(fd);
	return rc;
}

static struct logtail *tail(struct fx *f, struct logtail_opts *o, struct sink *s)
{
	struct logtail *t = NULL;

	if (!o->path)
		o->path = f->path;
	if (!o->rotate_idle_ms)
		o->rotate_idle_ms = 20;
	assert_int_equal(logtail_open(f->l, o, on_line, s, &t), 0);
	assert_non_null(t);
	return t;
}

/* ---- basics ---- */

static void test_invalid_args(void **state)
{
	struct fx *f = *state;
	struct logtail_opts o = { .path = f->path };
	struct logtail_opts bad[] = { { .path = "" }, { .path = "/tmp/" }, { .path = "/tmp/x/." },
				      { .path = "/tmp/x/.." }, { .path = "app.log" },
				      { .path = NULL } };
	struct logtail *t = (struct logtail *)1;
	struct logtail_status st;

	assert_int_equal(logtail_open(NULL, &o, on_line, NULL, &t), -EINVAL);
	assert_int_equal(logtail_open(f->l, NULL, on_line, NULL, &t), -EINVAL);
	assert_int_equal(logtail_open(f->l, &o, NULL, NULL, &t), -EINVAL);
	assert_int_equal(logtail_open(f->l, &o, on_line, NULL, NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(logtail_open(f->l, &bad[i], on_line, NULL, &t), -EINVAL);
	logtail_close(NULL);
	logtail_get_status(NULL, &st);
	assert_null(st.state);
	assert_int_equal(logtail_poll_now(NULL), -EINVAL);
}

static void test_start_at_end(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { 0 };
	struct logtail_status st;
	struct stat sb;
	static const char *const want[] = { "partial", "three" };

	write_file(f->path, "one\ntwo\npar", 11);
	struct logtail *t = tail(f, &o, &s);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "following");
	assert_true(st.open);
	assert_int_equal(st.offset, 8); /* after the last newline: "par" will be delivered whole */
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(st.inode, sb.st_ino);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(s.n, 0);

	int fd = open_append(f->path);
	put(fd, "tial\nthree\n");
	close(fd);
	run_until_lines(f->l, &s, 2);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 2);
	logtail_get_status(t, &st);
	assert_int_equal(st.lines, 2);
	assert_int_equal(st.bytes, 14); /* "par" again, then the rest */
	assert_int_equal(st.offset, 22);
	assert_int_equal(st.rotations, 0);
	assert_int_equal(st.last_errno, 0);
	logtail_close(t);
	sink_free(&s);
}

/* A last line already longer than max_line at start: skipped to its end. */
static void test_start_at_end_overlong_partial(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .max_line = 16 };
	struct logtail_status st;
	char big[100];
	static const char *const want[] = { "z" };

	memset(big, 'x', sizeof(big));
	write_file(f->path, big, sizeof(big));
	struct logtail *t = tail(f, &o, &s);
	int fd = open_append(f->path);
	put(fd, "yy\nz\n");
	close(fd);
	run_until_lines(f->l, &s, 1);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 1);
	logtail_get_status(t, &st);
	assert_int_equal(st.discarded, 2);
	logtail_close(t);
	sink_free(&s);
}

static void test_from_start(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .from_start = true };
	static const char *const want[] = { "one", "two", "partial" };

	write_file(f->path, "one\ntwo\npar", 11);
	struct logtail *t = tail(f, &o, &s);
	run_until_lines(f->l, &s, 2);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(s.n, 2);
	int fd = open_append(f->path);
	put(fd, "tial\n");
	close(fd);
	run_until_lines(f->l, &s, 3);
	assert_lines(&s, want, 3);
	logtail_close(t);
	sink_free(&s);
}

/* A line arriving in pieces, with a 3-byte read size so every boundary
 * case of the splitter is crossed. */
static void test_partial_completed_later(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .read_chunk = 3 };
	static const char *const want[] = { "abcdef", "", "ghi", "jklmnopqrstuvwxyz", "0" };

	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, &s);
	int fd = open_append(f->path);
	put(fd, "abc");
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(s.n, 0);
	put(fd, "def\n\nghi");
	run_until_lines(f->l, &s, 2);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(s.n, 2);
	put(fd, "\njklmnop");
	run_until_lines(f->l, &s, 3);
	put(fd, "qrstuvwxyz\n0\n");
	run_until_lines(f->l, &s, 5);
	close(fd);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 5);
	logtail_close(t);
	sink_free(&s);
}

static void test_nul_bytes(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .from_start = true };
	static const char data[] = "a\0b\0\n\0\n\xff\xfe\x01\n";

	write_file(f->path, data, sizeof(data) - 1);
	struct logtail *t = tail(f, &o, &s);
	run_until_lines(f->l, &s, 3);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.v[0].len, 4);
	assert_memory_equal(s.v[0].s, "a\0b\0", 4);
	assert_int_equal(s.v[1].len, 1);
	assert_int_equal(s.v[1].s[0], '\0');
	assert_int_equal(s.v[2].len, 3);
	assert_memory_equal(s.v[2].s, "\xff\xfe\x01", 3);
	assert_int_equal(s.not_nul_terminated, 0);
	logtail_close(t);
	sink_free(&s);
}

static void test_long_lines(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .max_line = 16, .read_chunk = 5, .max_per_wakeup = 5 };
	struct logtail_status st;
	char l100[101], l40[41];

	memset(l100, 'L', 100);
	l100[100] = '\0';
	memset(l40, 'M', 40);
	l40[40] = '\0';
	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, &s);
	int fd = open_append(f->path);
	put(fd, "short\n0123456789abcdef\n0123456789abcdefg\n");
	put(fd, l100);
	put(fd, "\n");
	put(fd, l40 + 20); /* in two writes, the tailer reading in between */
	run_until_lines(f->l, &s, 4);
	assert_int_equal(logtail_poll_now(t), 0);
	put(fd, l40 + 20);
	put(fd, "\n0123456789abcdef");  /* exactly max_line, held until its end is known */
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(s.n, 5);
	put(fd, "\nend\n");
	run_until_lines(f->l, &s, 7);
	close(fd);

	assert_line(&s, 0, "short", false);
	assert_line(&s, 1, "0123456789abcdef", false);
	assert_line(&s, 2, "0123456789abcdef", true);
	assert_line(&s, 3, "LLLLLLLLLLLLLLLL", true);
	assert_line(&s, 4, "MMMMMMMMMMMMMMMM", true);
	assert_line(&s, 5, "0123456789abcdef", false);
	assert_line(&s, 6, "end", false);
	assert_int_equal(s.n, 7);
	logtail_get_status(t, &st);
	assert_int_equal(st.lines, 7);
	assert_int_equal(st.truncated, 3);
	assert_int_equal(st.discarded, 1 + 84 + 24);
	logtail_close(t);
	sink_free(&s);
}

/* A 20 MB line with the default max_line: one truncated line, and the heap
 * does not grow while it is read (buffers are allocated at open). Under ASan
 * mallinfo2 does not see ASan's heap: the check is then vacuous. */
struct memsink {
	size_t n, trunc, len0;
	size_t heap_max;
};

static void on_line_mem(void *arg, const char *line, size_t len, bool trunc)
{
	struct memsink *m = arg;
	struct mallinfo2 mi = mallinfo2();

	(void)line;
	if (m->n == 0)
		m->len0 = len;
	m->n++;
	m->trunc += trunc;
	if (mi.uordblks > m->heap_max)
		m->heap_max = mi.uordblks;
}

static bool mem_lines(void *ctx)
{
	return ((struct memsink *)ctx)->n >= 2;
}

static void test_long_line_bounded_memory(void **state)
{
	struct fx *f = *state;
	struct memsink m = { 0 };
	struct logtail_opts o = { .path = f->path };
	struct logtail_status st;
	struct logtail *t = NULL;
	const size_t big = 20u << 20, piece = 1u << 20;
	char *buf = malloc(piece);

	assert_non_null(buf);
	memset(buf, 'x', piece);
	write_file(f->path, "", 0);
	assert_int_equal(logtail_open(f->l, &o, on_line_mem, &m, &t), 0);
	int fd = open_append(f->path);
	for (size_t i = 0; i < big / piece; i++)
		write_all(fd, buf, piece);
	put(fd, "\nok\n");
	close(fd);
	free(buf);
	size_t base = mallinfo2().uordblks;
	run_until(f->l, mem_lines, &m, "2 lines");
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(m.n, 2);
	assert_int_equal(m.trunc, 1);
	assert_int_equal(m.len0, LOGTAIL_MAX_LINE_DEFAULT);
	assert_true(m.heap_max <= base + 4096);
	logtail_get_status(t, &st);
	assert_int_equal(st.truncated, 1);
	assert_int_equal(st.discarded, big - LOGTAIL_MAX_LINE_DEFAULT);
	assert_int_equal(st.bytes, big + 4);
	logtail_close(t);
}

/* ---- files and directories coming and going ---- */

static void test_file_absent_then_created(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { 0 }; /* from the end, but a file that appears later is read whole */
	struct logtail_status st;
	static const char *const want[] = { "a", "b", "c" };

	struct logtail *t = tail(f, &o, &s);
	assert_int_equal(logtail_poll_now(t), 0);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "waiting for file");
	assert_false(st.open);
	assert_int_equal(st.last_errno, ENOENT);
	assert_int_equal(st.inode, 0);

	write_file(f->path, "a\nb\n", 4);
	run_until_lines(f->l, &s, 2);
	int fd = open_append(f->path);
	put(fd, "c\n");
	close(fd);
	run_until_lines(f->l, &s, 3);
	assert_lines(&s, want, 3);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "following");
	assert_int_equal(st.last_errno, 0);
	assert_int_equal(st.rotations, 0);
	logtail_close(t);
	sink_free(&s);
}

/* Directory missing, created, then the file deleted and the directory
 * removed (the tailer finishes the deleted file, waits for the directory
 * again), and recreated. */
static void test_dir_absent_then_created(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	char sub[128], path[160];
	struct logtail_opts o = { .path = path, .dir_retry_ms = 20 };
	struct logtail_status st;
	static const char *const want[] = { "x", "y" };

	snprintf(sub, sizeof(sub), "%s/sub", f->dir);
	snprintf(path, sizeof(path), "%s/app.log", sub);
	struct logtail *t = tail(f, &o, &s);
	assert_int_equal(logtail_poll_now(t), 0);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "waiting for directory");
	assert_int_equal(st.last_errno, ENOENT);

	assert_int_equal(mkdir(sub, 0755), 0);
	run_until_state(f->l, t, "waiting for file", false);
	write_file(path, "x\n", 2);
	run_until_lines(f->l, &s, 1);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(sub), 0);
	run_until_state(f->l, t, "waiting for directory", false);

	assert_int_equal(mkdir(sub, 0755), 0);
	write_file(path, "y\n", 2);
	run_until_lines(f->l, &s, 2);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 2);
	logtail_get_status(t, &st);
	assert_int_equal(st.rotations, 1);
	assert_string_equal(st.state, "following");
	logtail_close(t);
	sink_free(&s);
}

/* Root bypasses file modes, so the tailer runs in a child that became
 * nobody: the file is mode 000 first (EACCES, reported), then 0644 (picked
 * up from the IN_ATTRIB of the chmod). The child reports each step on a
 * pipe; it cannot use cmocka, so it exits with a code naming the step that
 * failed. */
struct perm_child {
	int ok;
	size_t lines;
	char line[64];
	size_t len;
};

static void on_line_perm(void *arg, const char *line, size_t len, bool trunc)
{
	struct perm_child *c = arg;

	(void)trunc;
	if (c->lines++ == 0 && len < sizeof(c->line)) {
		memcpy(c->line, line, len);
		c->len = len;
	}
}

static int child_wait(struct loop *l, struct logtail *t, const char *state, int err, struct perm_child *c,
		      size_t lines)
{
	uint64_t end = loop_now_ms() + DEADLINE_MS;
	struct logtail_status st;

	for (;;) {
		logtail_get_status(t, &st);
		if ((!state || (!strcmp(st.state, state) && st.last_errno == err)) && c->lines >= lines)
			return 0;
		if (loop_now_ms() > end || loop_run_once(l, 50) < 0)
			return -1;
	}
}

static int perm_child_main(const char *path, int tell, int hear)
{
	struct perm_child c = { 0 };
	struct logtail_opts o = { .path = path, .rotate_idle_ms = 20 };
	struct logtail *t = NULL;
	struct loop *l;
	char b;

	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
		return 10;
	if (open(path, O_RDONLY) >= 0 || errno != EACCES)
		return 11; /* modes are not enforced: the test would prove nothing */
	l = loop_new();
	if (!l || logtail_open(l, &o, on_line_perm, &c, &t) < 0)
		return 12;
	if (child_wait(l, t, "permission denied", EACCES, &c, 0) < 0)
		return 13;
	if (write(tell, "D", 1) != 1 || read(hear, &b, 1) != 1)
		return 14;
	if (child_wait(l, t, "following", 0, &c, 0) < 0)
		return 15;
	if (write(tell, "F", 1) != 1)
		return 16;
	if (child_wait(l, t, NULL, 0, &c, 1) < 0)
		return 17;
	logtail_poll_now(t);
	if (c.lines != 1 || c.len != 5 || memcmp(c.line, "after", 5) != 0)
		return 18;
	logtail_close(t);
	loop_free(l);
	return 0;
}

static char expect_byte(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char b = 0;

	assert_int_equal(poll(&p, 1, DEADLINE_MS), 1);
	assert_int_equal(read(fd, &b, 1), 1);
	return b;
}

static void test_permission_denied_then_fixed(void **state)
{
	struct fx *f = *state;
	int tell[2], hear[2], status;
	pid_t pid;

	assert_int_equal(chmod(f->dir, 0755), 0);
	write_file(f->path, "before\n", 7);
	assert_int_equal(chmod(f->path, 0), 0);
	assert_int_equal(pipe2(tell, O_CLOEXEC), 0);
	assert_int_equal(pipe2(hear, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(perm_child_main(f->path, tell[1], hear[0]));
	close(tell[1]);
	close(hear[0]);

	assert_int_equal(expect_byte(tell[0]), 'D');
	assert_int_equal(chmod(f->path, 0644), 0);
	assert_int_equal(write(hear[1], "c", 1), 1);
	assert_int_equal(expect_byte(tell[0]), 'F');
	/* It existed when the tailer started: read from its end once readable. */
	int fd = open_append(f->path);
	put(fd, "after\n");
	close(fd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("child failed: status 0x%x (exit code = step)", status);
	close(tell[0]);
	close(hear[1]);
}

static void test_not_regular(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { 0 };
	struct logtail_status st;

	assert_int_equal(mkfifo(f->path, 0644), 0); /* opening must not block either */
	struct logtail *t = tail(f, &o, &s);
	assert_int_equal(logtail_poll_now(t), 0);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "not a regular file");
	assert_false(st.open);
	assert_int_equal(unlink(f->path), 0);
	write_file(f->path, "r\n", 2);
	run_until_lines(f->l, &s, 1);
	assert_line(&s, 0, "r", false);
	logtail_close(t);
	sink_free(&s);
}

/* ---- rotation, deterministic ---- */

/* rename + create: the old file keeps receiving lines after the rename and
 * after the new file appeared, and ends without a newline; everything of the
 * old file comes before anything of the new one. (Lines arriving in the old
 * file after the tailer has seen the new one: test_rename_twice_while_draining.) */
static void test_rename_rotation(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { 0 };
	struct logtail_status st;
	char old[160];
	struct stat sb;
	static const char *const want[] = { "o1", "o2", "o3", "o4", "o5-partial", "n1", "n2" };

	snprintf(old, sizeof(old), "%s.1", f->path);
	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, &s);
	int w = open_append(f->path);
	put(w, "o1\no2\n");
	run_until_lines(f->l, &s, 2);

	assert_int_equal(rename(f->path, old), 0);
	put(w, "o3\n"); /* the writer has not reopened yet */
	run_until_lines(f->l, &s, 3);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "following");

	/* The new file appears, the writer still appends to the old one (and
	 * ends it without a newline), then reopens. */
	int n = open_append(f->path);
	put(n, "n1\n");
	put(w, "o4\no5-partial");
	close(w);
	put(n, "n2\n");
	run_until_lines(f->l, &s, 7);
	close(n);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 7);
	logtail_get_status(t, &st);
	assert_int_equal(st.rotations, 1);
	assert_int_equal(st.pending, 0);
	assert_string_equal(st.state, "following");
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(st.inode, sb.st_ino);
	assert_int_equal(st.offset, 6);
	logtail_close(t);
	sink_free(&s);
}

/* Two rotations seen while the oldest file is still being drained: three
 * files held, read in order. */
static void test_rename_twice_while_draining(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .rotate_idle_ms = 60000 }; /* never finished by time here */
	struct logtail_status st;
	char p1[160], p2[160];
	static const char *const want[] = { "a1", "a2" };

	snprintf(p1, sizeof(p1), "%s.1", f->path);
	snprintf(p2, sizeof(p2), "%s.2", f->path);
	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, &s);
	int a = open_append(f->path);
	put(a, "a1\n");
	run_until_lines(f->l, &s, 1);
	assert_int_equal(rename(f->path, p1), 0);
	int b = open_append(f->path);
	put(b, "b1\n");
	struct stwait wr = { .t = t, .rotations = 1 };
	run_until(f->l, have_rotations, &wr, "second file seen");
	assert_int_equal(rename(p1, p2), 0);
	assert_int_equal(rename(f->path, p1), 0);
	int c = open_append(f->path);
	put(c, "c1\n");
	wr.rotations = 2;
	run_until(f->l, have_rotations, &wr, "third file seen");
	put(a, "a2\n");
	run_until_lines(f->l, &s, 2);
	assert_int_equal(logtail_poll_now(t), 0);
	/* The idle time has not passed: b1 and c1 wait for a's end. */
	assert_lines(&s, want, 2);
	logtail_get_status(t, &st);
	assert_string_equal(st.state, "draining rotated file");
	assert_int_equal(st.pending, 2);
	close(a);
	close(b);
	close(c);
	logtail_close(t); /* with files pending */
	sink_free(&s);
}

static void test_copytruncate(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { 0 };
	struct logtail_status st;
	char copy[160];
	static const char *const want[] = { "a1", "a2", "b1", "c1-longer-line", "c2", "d1", "e1" };

	snprintf(copy, sizeof(copy), "%s.1", f->path);
	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, &s);
	int w = open_append(f->path);
	put(w, "a1\na2\n");
	run_until_lines(f->l, &s, 2);

	/* The tailer is caught up: nothing is at risk. */
	assert_int_equal(copytruncate(f->path, copy), 0);
	put(w, "b1\n");
	run_until_lines(f->l, &s, 3);
	logtail_get_status(t, &st);
	assert_int_equal(st.truncations, 1);

	/* Truncated and grown past the offset before the tailer wakes up: found
	 * by the bytes before the offset having changed. */
	assert_int_equal(copytruncate(f->path, copy), 0);
	put(w, "c1-longer-line\nc2\n");
	run_until_lines(f->l, &s, 5);
	logtail_get_status(t, &st);
	assert_int_equal(st.truncations, 2);

	/* A partial line cut by the truncation is discarded (its end is in the
	 * copy). */
	put(w, "d1\nd2-part");
	run_until_lines(f->l, &s, 6);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_int_equal(copytruncate(f->path, copy), 0);
	put(w, "e1\n");
	run_until_lines(f->l, &s, 7);
	close(w);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 7);
	logtail_get_status(t, &st);
	assert_int_equal(st.truncations, 3);
	assert_int_equal(st.discarded, 7);
	assert_int_equal(st.rotations, 0);
	assert_int_equal(st.offset, 3);
	logtail_close(t);
	sink_free(&s);
}

/* delete + recreate, the writer still appending to the deleted file after
 * the new one appeared; then delete with no replacement: the deleted file is
 * finished once idle (not held forever), and a later file is picked up. */
static void test_delete_recreate(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { 0 };
	struct logtail_status st;
	static const char *const want[] = { "a1", "a2", "a3", "b1", "c1" };

	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, &s);
	int a = open_append(f->path);
	put(a, "a1\n");
	run_until_lines(f->l, &s, 1);
	assert_int_equal(unlink(f->path), 0);
	put(a, "a2\n");
	int b = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
	assert_true(b >= 0);
	put(b, "b1\n");
	put(a, "a3\n");
	close(a);
	run_until_lines(f->l, &s, 4);
	logtail_get_status(t, &st);
	assert_int_equal(st.rotations, 1);

	assert_int_equal(unlink(f->path), 0);
	close(b);
	run_until_state(f->l, t, "waiting for file", false);
	write_file(f->path, "c1\n", 3);
	run_until_lines(f->l, &s, 5);
	assert_int_equal(logtail_poll_now(t), 0);
	assert_lines(&s, want, 5);
	logtail_get_status(t, &st);
	assert_int_equal(st.rotations, 2);
	logtail_close(t);
	sink_free(&s);
}

/* ---- ownership, fairness ---- */

static void test_close_in_callback(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .from_start = true, .read_chunk = 4 };

	write_file(f->path, "1\n2\n3\n4\n5\n", 10);
	struct logtail *t = tail(f, &o, &s);
	s.self = t;
	s.close_after = 2;
	assert_int_equal(logtail_poll_now(t), 0); /* closes t inside */
	assert_int_equal(s.n, 2);
	assert_null(s.self);
	for (int i = 0; i < 5; i++)
		assert_int_equal(loop_run_once(f->l, 10), 0);
	assert_int_equal(s.n, 2);

	sink_free(&s);

	/* The same from a loop callback. */
	t = tail(f, &o, &s);
	s.self = t;
	s.close_after = 3;
	run_until_lines(f->l, &s, 3);
	for (int i = 0; i < 5; i++)
		assert_int_equal(loop_run_once(f->l, 10), 0);
	assert_int_equal(s.n, 3);
	assert_null(s.self);
	sink_free(&s);
}

struct busy {
	struct logtail *t;
	int rc;
	size_t n;
};

static void on_line_busy(void *arg, const char *line, size_t len, bool trunc)
{
	struct busy *b = arg;

	(void)line;
	(void)len;
	(void)trunc;
	b->n++;
	b->rc = logtail_poll_now(b->t);
}

static void test_poll_now_busy_in_callback(void **state)
{
	struct fx *f = *state;
	struct busy b = { 0 };
	struct logtail_opts o = { .path = f->path, .from_start = true };

	write_file(f->path, "x\n", 2);
	assert_int_equal(logtail_open(f->l, &o, on_line_busy, &b, &b.t), 0);
	assert_int_equal(logtail_poll_now(b.t), 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.rc, -EBUSY);
	logtail_close(b.t);
}

struct other {
	int fired;
	struct logtail *t;
	uint64_t bytes_then;
};

static void on_other(void *arg, int fd, uint32_t events)
{
	struct other *o = arg;
	struct logtail_status st;
	char b;

	(void)events;
	if (read(fd, &b, 1) == 1 && !o->fired++) {
		logtail_get_status(o->t, &st);
		o->bytes_then = st.bytes;
	}
}

struct sizes {
	struct logtail *t;
	uint64_t bytes;
};

static bool read_all(void *ctx)
{
	struct sizes *z = ctx;
	struct logtail_status st;

	logtail_get_status(z->t, &st);
	return st.bytes >= z->bytes;
}

/* An 8 MB backlog is read 64 KiB per loop iteration; another fd that is
 * ready is served while most of it is still unread. */
static void test_bounded_per_wakeup(void **state)
{
	struct fx *f = *state;
	struct sink s = { 0 };
	struct logtail_opts o = { .from_start = true, .read_chunk = 16384, .max_per_wakeup = 65536 };
	struct logtail_status st;
	struct other ot = { 0 };
	const size_t total = 8u << 20;
	char *data = malloc(total);
	int p[2];

	assert_non_null(data);
	for (size_t i = 0; i < total; i++)
		data[i] = (i % 64 == 63) ? '\n' : 'a' + (char)(i % 26);
	write_file(f->path, data, total);
	free(data);
	struct logtail *t = tail(f, &o, &s);
	ot.t = t;
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	struct loop_io *io = loop_io_add(f->l, p[0], EPOLLIN, on_other, &ot);
	assert_non_null(io);

	assert_int_equal(loop_run_once(f->l, 50), 0);
	logtail_get_status(t, &st);
	assert_int_equal(st.bytes, 65536);
	assert_int_equal(st.lines, 65536 / 64);
	run_until(f->l, read_all, &(struct sizes){ t, total }, "8 MB read");
	assert_int_equal(ot.fired, 1);
	assert_true(ot.bytes_then < total / 2);
	logtail_get_status(t, &st);
	assert_int_equal(st.lines, total / 64);
	assert_int_equal(s.n, total / 64);
	loop_io_del(f->l, io);
	close(p[0]);
	close(p[1]);
	logtail_close(t);
	sink_free(&s);
}

static void test_many_tailers(void **state)
{
	struct fx *f = *state;
	enum { NT = 10, NL = 2000 };
	struct sink s[NT];
	struct logtail *t[NT];
	char path[NT][160];

	memset(s, 0, sizeof(s));
	for (int i = 0; i < NT; i++) {
		struct logtail_opts o = { .path = path[i] };

		snprintf(path[i], sizeof(path[i]), "%s/f%d.log", f->dir, i);
		t[i] = tail(f, &o, &s[i]);
	}
	for (int i = 0; i < NT; i++) {
		int fd = open_append(path[i]);
		char line[64];

		for (int k = 0; k < NL; k++) {
			snprintf(line, sizeof(line), "%d:%d\n", i, k);
			put(fd, line);
		}
		close(fd);
	}
	for (int i = 0; i < NT; i++) {
		run_until_lines(f->l, &s[i], NL);
		assert_int_equal(logtail_poll_now(t[i]), 0);
		assert_int_equal(s[i].n, NL);
		for (int k = 0; k < NL; k++) {
			char want[64];

			snprintf(want, sizeof(want), "%d:%d", i, k);
			assert_line(&s[i], (size_t)k, want, false);
		}
	}
	for (int i = 0; i < NT; i++) {
		logtail_close(t[i]);
		sink_free(&s[i]);
	}
}

/* ---- high rate, with a writer child ---- */

enum wmode { W_RENAME, W_DELETE, W_COPYTRUNC, W_TRUNCATE };

#define RATE_N 100000u
#define RATE_LATE 200u /* rename: lines into the renamed file before the new one is created */
static const uint32_t rate_rot[] = { 25000, 50000, 75000 };
#define RATE_NROT (sizeof(rate_rot) / sizeof(rate_rot[0]))

/* "<n> " then 0..119 letters derived from n. */
static size_t make_line(char *buf, uint32_t i)
{
	int n = sprintf(buf, "%u ", i);
	size_t fill = ((i * 2654435761u) >> 24) % 120;

	for (size_t k = 0; k < fill; k++)
		buf[(size_t)n + k] = (char)('a' + (i + k) % 26);
	buf[(size_t)n + fill] = '\n';
	return (size_t)n + fill + 1;
}

static int wr(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Renames and deletes: block-buffered like most loggers (4 KiB writes that
 * split lines), flushed at a line end before a rotation. copytruncate: one
 * write per line with O_APPEND, the case in which copytruncate works at all. */
static int writer_main(const char *path, enum wmode m, int ack)
{
	char buf[16384], other[192];
	size_t bl = 0;
	unsigned r = 0;
	uint32_t reopen_at = 0;
	int fd = open(path, O_WRONLY | O_APPEND);

	if (fd < 0)
		return 2;
	for (uint32_t i = 1; i <= RATE_N; i++) {
		if (r < RATE_NROT && i == rate_rot[r]) {
			char b;

			if (wr(fd, buf, bl) < 0)
				return 3;
			bl = 0;
			if (r > 0 && ack >= 0 && read(ack, &b, 1) != 1)
				return 4;
			snprintf(other, sizeof(other), "%s.%u", path, r + 1);
			if (m == W_RENAME) {
				if (rename(path, other) < 0)
					return 5;
				reopen_at = i + RATE_LATE;
			} else if (m == W_DELETE) {
				int nfd;

				if (unlink(path) < 0)
					return 6;
				nfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, 0644);
				if (nfd < 0)
					return 7;
				close(fd);
				fd = nfd;
			} else if (m == W_COPYTRUNC) {
				if (copytruncate(path, other) < 0)
					return 8;
			} else {
				int tfd = open(path, O_WRONLY); /* `: > file`, no copy: nothing gives the tailer time */

				if (tfd < 0 || ftruncate(tfd, 0) < 0)
					return 8;
				close(tfd);
			}
			r++;
		}
		if (reopen_at && i == reopen_at) {
			int nfd;

			if (wr(fd, buf, bl) < 0)
				return 3;
			bl = 0;
			nfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, 0644);
			if (nfd < 0)
				return 9;
			close(fd);
			fd = nfd;
			reopen_at = 0;
		}
		bl += make_line(buf + bl, i);
		if (m >= W_COPYTRUNC) {
			if (wr(fd, buf, bl) < 0)
				return 3;
			bl = 0;
		} else if (bl >= 4096) {
			if (wr(fd, buf, 4096) < 0)
				return 3;
			memmove(buf, buf + 4096, bl - 4096);
			bl -= 4096;
		}
	}
	if (wr(fd, buf, bl) < 0)
		return 3;
	close(fd);
	return 0;
}

struct rate {
	uint8_t *seen;
	uint64_t got, bad, dups, disorder;
	uint32_t last;
};

static void on_line_rate(void *arg, const char *line, size_t len, bool trunc)
{
	struct rate *r = arg;
	char want[192];
	char *end;
	unsigned long i = strtoul(line, &end, 10);

	r->got++;
	if (trunc || end == line || *end != ' ' || i < 1 || i > RATE_N ||
	    make_line(want, (uint32_t)i) - 1 != len || memcmp(want, line, len) != 0) {
		r->bad++;
		return;
	}
	if (r->seen[i]++)
		r->dups++;
	if (i <= r->last)
		r->disorder++;
	r->last = (uint32_t)i;
}

static void run_rate(struct fx *f, enum wmode m, unsigned batch_ms)
{
	struct rate r = { 0 };
	struct logtail_opts o = { .path = f->path, .rotate_idle_ms = 20, .batch_ms = batch_ms };
	struct logtail_status st;
	struct logtail *t = NULL;
	int ack[2], status = 0;
	unsigned acked = 0;
	bool exited = false;
	pid_t pid;

	r.seen = calloc(RATE_N + 1, 1);
	assert_non_null(r.seen);
	write_file(f->path, "", 0);
	assert_int_equal(logtail_open(f->l, &o, on_line_rate, &r, &t), 0);
	assert_int_equal(pipe2(ack, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(writer_main(f->path, m, m >= W_COPYTRUNC ? -1 : ack[0]));
	close(ack[0]);

	uint64_t end = loop_now_ms() + 2 * DEADLINE_MS;
	while (!r.seen[RATE_N] || !exited) {
		if (loop_now_ms() > end)
			fail_msg("timeout: %llu lines, line %u %sseen, writer %s", (unsigned long long)r.got, RATE_N,
				 r.seen[RATE_N] ? "" : "not ", exited ? "exited" : "running");
		assert_int_equal(loop_run_once(f->l, 50), 0);
		logtail_get_status(t, &st);
		for (; m < W_COPYTRUNC && acked < st.rotations; acked++) {
			/* the writer waits for the first acks only, and may have
			 * finished when the last rotation is seen */
			ssize_t w = write(ack[1], "a", 1);
			assert_true(w == 1 || (w < 0 && errno == EPIPE));
		}
		if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
			exited = true;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				fail_msg("writer failed: status 0x%x", status);
		}
	}
	assert_int_equal(logtail_poll_now(t), 0); /* nothing more may come */
	logtail_get_status(t, &st);
	assert_int_equal(r.bad, 0);
	assert_int_equal(r.dups, 0);
	assert_int_equal(r.disorder, 0);
	assert_int_equal(st.truncated, 0);
	if (m < W_COPYTRUNC) {
		for (uint32_t i = 1; i <= RATE_N; i++)
			if (r.seen[i] != 1)
				fail_msg("line %u seen %u times", i, r.seen[i]);
		assert_int_equal(r.got, RATE_N);
		assert_int_equal(st.rotations, RATE_NROT);
		assert_int_equal(st.truncations, 0);
		assert_int_equal(st.discarded, 0);
	} else {
		/* Per epoch between two truncations: what was delivered is a prefix
		 * of it (the rest was written after the tailer's last read and
		 * before the truncation, and is only in the copy). The last epoch is
		 * complete. */
		uint32_t lost = 0, epochs_seen = 0;

		for (unsigned e = 0; e <= RATE_NROT; e++) {
			uint32_t a = e ? rate_rot[e - 1] : 1, b = e < RATE_NROT ? rate_rot[e] : RATE_N + 1, i = a;

			while (i < b && r.seen[i])
				i++;
			epochs_seen += i > a;
			lost += b - i;
			for (uint32_t k = i; k < b; k++)
				if (r.seen[k])
					fail_msg("epoch %u: line %u delivered after a gap at %u", e, k, i);
			if (e == RATE_NROT)
				assert_int_equal(i, b);
		}
		assert_true(st.truncations <= RATE_NROT);
		if (epochs_seen > 1)
			assert_true(st.truncations >= 1);
		print_message("%s: %u of %u lines lost (written after the tailer's last read and "
			      "before a truncation), %llu truncations seen\n", m == W_COPYTRUNC ? "copytruncate" : "truncate",
			      lost, RATE_N, (unsigned long long)st.truncations);
	}
	close(ack[1]);
	logtail_close(t);
	free(r.seen);
}

static void test_rate_rename(void **state)
{
	run_rate(*state, W_RENAME, 0);
}

static void test_rate_delete(void **state)
{
	run_rate(*state, W_DELETE, 0);
}

static void test_rate_copytruncate(void **state)
{
	run_rate(*state, W_COPYTRUNC, 0);
}

/* Truncation with no copy first: more lines are at risk, the same holds. */
static void test_rate_truncate(void **state)
{
	run_rate(*state, W_TRUNCATE, 0);
}

/* The same writer and rotations, read in batches as the agent does. */
static void test_rate_rename_batched(void **state)
{
	run_rate(*state, W_RENAME, 10);
}

static void test_rate_delete_batched(void **state)
{
	run_rate(*state, W_DELETE, 10);
}

/* Batching: a write after a quiet spell is served by the notification it
 * makes; those made inside the window are merged into one wakeup at its
 * end. One write per loop iteration, as nginx does per request: without
 * batching, one wakeup each; with it, far fewer, and every line still
 * arrives, in order. (A window of 60 s: the writes all fall inside it
 * however slow the machine; logtail_poll_now ends the test.) */
static void batch_run(struct fx *f, unsigned batch_ms, struct sink *s, struct logtail_status *st)
{
	struct logtail_opts o = { .batch_ms = batch_ms };
	char line[32];

	write_file(f->path, "", 0);
	struct logtail *t = tail(f, &o, s);
	int fd = open_append(f->path);
	put(fd, "line 0\n");
	run_until_lines(f->l, s, 1); /* the first: at once, whatever the window */
	for (int i = 1; i < 100; i++) {
		snprintf(line, sizeof(line), "line %d\n", i);
		put(fd, line);
		assert_int_equal(loop_run_once(f->l, 0), 0);
	}
	close(fd);
	assert_int_equal(logtail_poll_now(t), 0);
	logtail_get_status(t, st);
	logtail_close(t);
	assert_int_equal(s->n, 100);
	for (int i = 0; i < 100; i++) {
		snprintf(line, sizeof(line), "line %d", i);
		assert_line(s, (size_t)i, line, false);
	}
}

static void test_batching(void **state)
{
	struct fx *f = *state;
	struct sink s1 = { 0 }, s2 = { 0 };
	struct logtail_status plain, batched;

	batch_run(f, 0, &s1, &plain);
	batch_run(f, 60000, &s2, &batched);
	assert_int_equal(plain.wakeups, 100);
	assert_int_equal(batched.wakeups, 1);
	assert_int_equal(batched.lines, 100);
	sink_free(&s1);
	sink_free(&s2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_invalid_args),
		T(test_start_at_end),
		T(test_start_at_end_overlong_partial),
		T(test_from_start),
		T(test_partial_completed_later),
		T(test_nul_bytes),
		T(test_long_lines),
		T(test_long_line_bounded_memory),
		T(test_file_absent_then_created),
		T(test_dir_absent_then_created),
		T(test_permission_denied_then_fixed),
		T(test_not_regular),
		T(test_rename_rotation),
		T(test_rename_twice_while_draining),
		T(test_copytruncate),
		T(test_delete_recreate),
		T(test_close_in_callback),
		T(test_poll_now_busy_in_callback),
		T(test_bounded_per_wakeup),
		T(test_many_tailers),
		T(test_rate_rename),
		T(test_rate_delete),
		T(test_rate_copytruncate),
		T(test_rate_truncate),
		T(test_rate_rename_batched),
		T(test_rate_delete_batched),
		T(test_batching),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
