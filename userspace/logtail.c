/* Log tailer: see logtail.h for the behaviour. How it is built:
 *
 * Everything happens in work(), which is idempotent and runs from three
 * places: the inotify fd (after the queued events have been turned into
 * flags), the eventfd "kick" (kept readable while a backlog remains, so a
 * 1 GB file is read max_per_wakeup bytes per loop iteration between the
 * other ready fds, never sleeping in between), and a one-shot timer (a
 * rotated file's idle deadline, the directory retry). work() (re)watches the
 * directory, compares the path with the files it holds when an event asked
 * for it, reads the current file, and finishes it once it has been
 * superseded and stayed idle.
 *
 * Files are identified by (st_dev, st_ino). Every file the tailer has seen
 * at the path and not finished is held open, so its inode number cannot be
 * reused and its content survives renames and unlinks. (The file present at
 * open, which may not be openable yet, is also matched on its birth time.) The current file is
 * watched through /proc/self/fd/N, which names the open inode even after it
 * was renamed or deleted (no race between open and watch); without /proc it
 * falls back to the path, or, failing that, to the retry timer.
 *
 * Reads use pread at the tailer's own offset. Truncation is seen either as
 * a read at the offset returning 0 with st_size < offset, or, when the file
 * grew back past the offset before the tailer woke up, as the 32 bytes just
 * before the offset no longer being what was read there. That check runs
 * after each read: bytes changed means the read may have returned the new
 * content's middle (dropped, the file is read again from 0); the file now
 * shorter than the offset means it was truncated after the read (what was
 * read is delivered, then the file is read again from 0). */
#include "logtail.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

#define FP_LEN 32
#define MAX_PENDING 8
#define MAX_EVENT_READS 64   /* inotify reads per wakeup; the rest waits one iteration */
#define MAX_LINE_LIMIT (1u << 30)

#define DIR_MASK (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | \
		  IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define FILE_MASK (IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF)

struct tfile {
	int fd;        /* -1: none */
	int wd;        /* inotify watch, -1: none (only the current file is watched) */
	dev_t dev;
	ino_t ino;
	uint64_t off;
};

/* A file present at open and one created later under the same inode number
 * differ in their birth time, where the filesystem records one. */
struct ident {
	uint64_t dev, ino;
	int64_t btime_s;
	uint32_t btime_ns;
	bool btime;
};

struct logtail {
	struct loop *l;
	char *path;
	char *dir;
	const char *base;    /* into path */
	size_t max_line, chunk, per_wakeup;
	uint64_t idle_ms, retry_ms;
	logtail_line_fn fn;
	void *arg;

	int ifd;
	struct loop_io *iio;
	int kfd;
	struct loop_io *kio;
	bool kicked;
	struct loop_timer *timer;
	uint64_t due;        /* when the timer fires, 0: disarmed */
	unsigned batch_ms;
	struct loop_timer *btimer; /* ends the batching window (NULL: no batching) */

	int dir_wd;
	int dir_err;         /* why the directory is not watched */
	int file_err;        /* why the path could not be stat'ed/opened last time */
	bool notreg;
	int last_errno;
	bool check;          /* compare the path with the files held */
	bool at_end;         /* the file at the path at open time is read from its end */
	struct ident start;  /* ... and that is its identity */
	bool had_file;

	struct tfile cur;
	struct tfile pend[MAX_PENDING];
	unsigned npend;
	bool gone;           /* cur is no longer the file at the path, or deleted */
	uint64_t gone_ms;
	uint64_t data_ms;    /* last data read from cur */

	char *line;          /* max_line + 1 */
	size_t llen;
	bool skipping;       /* discarding the rest of an overlong line */
	char *rbuf;          /* chunk */
	unsigned char fp[FP_LEN];
	size_t fplen;

	uint64_t lines, bytes, truncated, discarded, rotations, truncations, wakeups;

	const char *logged;  /* last state logged */
	int depth;           /* inside one of our loop callbacks */
	bool closing;        /* logtail_close from the line callback */
};

static void timer_at(struct logtail *t, uint64_t when)
{
	uint64_t now = loop_now_ms();

	if (t->due && t->due <= when)
		return;
	t->due = when;
	if (loop_timer_arm(t->timer, when > now ? when - now : 1, 0) < 0)
		log_warn("logtail %s: timerfd: %s", t->path, strerror(errno));
}

static void kick(struct logtail *t)
{
	uint64_t one = 1;

	if (t->kicked)
		return;
	if (write(t->kfd, &one, sizeof(one)) == sizeof(one))
		t->kicked = true;
	else
		timer_at(t, loop_now_ms()); /* cannot happen with a fresh eventfd; still make progress */
}

static void unkick(struct logtail *t)
{
	uint64_t v;

	if (!t->kicked)
		return;
	if (read(t->kfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("logtail %s: eventfd: %s", t->path, strerror(errno));
	t->kicked = false;
}

static int ident_of(int dirfd, const char *path, int flags, struct ident *id)
{
	struct statx sx;
	struct stat st;

	if (statx(dirfd, path, flags, STATX_TYPE | STATX_INO | STATX_BTIME, &sx) < 0) {
		if (errno != ENOSYS)
			return -errno;
		if (fstatat(dirfd, path, &st, flags) < 0) /* no statx: no birth time either */
			return -errno;
		memset(id, 0, sizeof(*id));
		id->dev = st.st_dev;
		id->ino = st.st_ino;
		return S_ISREG(st.st_mode) ? 0 : -EINVAL;
	}
	if (!S_ISREG(sx.stx_mode))
		return -EINVAL;
	id->dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
	id->ino = sx.stx_ino;
	id->btime = sx.stx_mask & STATX_BTIME;
	id->btime_s = id->btime ? sx.stx_btime.tv_sec : 0;
	id->btime_ns = id->btime ? sx.stx_btime.tv_nsec : 0;
	return 0;
}

/* Is fd the file that was at the path when the tailer was opened? */
static bool is_start_file(const struct logtail *t, int fd)
{
	struct ident id;

	return ident_of(fd, "", AT_EMPTY_PATH, &id) == 0 && id.dev == t->start.dev && id.ino == t->start.ino &&
	       id.btime == t->start.btime && id.btime_s == t->start.btime_s && id.btime_ns == t->start.btime_ns;
}

static bool same_file(const struct tfile *f, const struct stat *st)
{
	return f->fd >= 0 && f->dev == st->st_dev && f->ino == st->st_ino;
}

static bool held(const struct logtail *t, const struct stat *st)
{
	if (same_file(&t->cur, st))
		return true;
	for (unsigned i = 0; i < t->npend; i++)
		if (same_file(&t->pend[i], st))
			return true;
	return false;
}

static void mark_gone(struct logtail *t)
{
	if (t->cur.fd < 0 || t->gone)
		return;
	t->gone = true;
	t->gone_ms = loop_now_ms();
}

/* ---- lines ---- */

static void emit(struct logtail *t, const char *p, size_t n, bool trunc)
{
	t->lines++;
	if (trunc)
		t->truncated++;
	t->fn(t->arg, p, n, trunc);
}

/* Splits p[0..n) into lines. Complete lines are delivered straight from the
 * read buffer (their '\n' overwritten by '\0'); only a line spread over reads
 * is copied, into line[], which never holds more than max_line bytes. */
static void feed(struct logtail *t, char *p, size_t n)
{
	while (n > 0 && !t->closing) {
		char *nl = memchr(p, '\n', n);
		size_t seg = nl ? (size_t)(nl - p) : n;

		if (t->skipping) {
			t->discarded += seg;
			if (nl)
				t->skipping = false;
		} else if (nl && t->llen == 0 && seg <= t->max_line) {
			*nl = '\0';
			emit(t, p, seg, false);
		} else if (seg <= t->max_line - t->llen) {
			memcpy(t->line + t->llen, p, seg);
			t->llen += seg;
			if (nl) {
				size_t len = t->llen;

				t->line[len] = '\0';
				t->llen = 0;
				emit(t, t->line, len, false);
			}
		} else {
			size_t room = t->max_line - t->llen;

			memcpy(t->line + t->llen, p, room);
			t->line[t->max_line] = '\0';
			t->discarded += seg - room;
			t->llen = 0;
			t->skipping = !nl;
			emit(t, t->line, t->max_line, true);
		}
		if (!nl)
			break;
		n -= seg + 1;
		p = nl + 1;
	}
}

/* ---- the current file ---- */

static void fp_load(struct logtail *t)
{
	size_t n = t->cur.off < FP_LEN ? (size_t)t->cur.off : FP_LEN;

	t->fplen = 0;
	if (n && pread(t->cur.fd, t->fp, n, (off_t)(t->cur.off - n)) == (ssize_t)n)
		t->fplen = n;
}

enum fp_result { FP_SAME, FP_SHORT, FP_CHANGED };

/* After a read at off: are the bytes before off still those read there? */
static enum fp_result fp_check(struct logtail *t)
{
	unsigned char now[FP_LEN];
	ssize_t n;

	if (!t->fplen)
		return FP_SAME;
	n = pread(t->cur.fd, now, t->fplen, (off_t)(t->cur.off - t->fplen));
	if (n < 0)
		return FP_SAME; /* cannot tell; restarting would repeat the whole file */
	if (n != (ssize_t)t->fplen)
		return FP_SHORT;
	return memcmp(now, t->fp, t->fplen) ? FP_CHANGED : FP_SAME;
}

static void fp_update(struct logtail *t, const char *p, size_t n)
{
	if (n >= FP_LEN) {
		memcpy(t->fp, p + n - FP_LEN, FP_LEN);
		t->fplen = FP_LEN;
		return;
	}
	size_t keep = t->fplen < FP_LEN - n ? t->fplen : FP_LEN - n;

	memmove(t->fp, t->fp + t->fplen - keep, keep);
	memcpy(t->fp + keep, p, n);
	t->fplen = keep + n;
}

/* Where "from the end" starts: just after the last '\n', so a line being
 * written is delivered whole. A last line already longer than max_line is
 * skipped up to its '\n'. */
static uint64_t end_offset(struct logtail *t, int fd, uint64_t size)
{
	uint64_t lim = size > t->max_line + 1 ? size - t->max_line - 1 : 0;
	uint64_t end = size;

	while (end > lim) {
		size_t n = end - lim < t->chunk ? (size_t)(end - lim) : t->chunk;

		if (pread(fd, t->rbuf, n, (off_t)(end - n)) != (ssize_t)n)
			return size;
		const char *nl = memrchr(t->rbuf, '\n', n);
		if (nl)
			return end - n + (uint64_t)(nl - t->rbuf) + 1;
		end -= n;
	}
	if (lim == 0)
		return 0;
	t->skipping = true;
	return size;
}

static void watch_cur(struct logtail *t)
{
	char p[64];
	struct stat st;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", t->cur.fd);
	t->cur.wd = inotify_add_watch(t->ifd, p, FILE_MASK);
	if (t->cur.wd < 0 && errno == ENOENT) {
		/* No /proc: the path, if it still names our file. */
		t->cur.wd = inotify_add_watch(t->ifd, t->path, FILE_MASK);
		if (t->cur.wd >= 0 && (stat(t->path, &st) < 0 || !same_file(&t->cur, &st))) {
			inotify_rm_watch(t->ifd, t->cur.wd);
			t->cur.wd = -1;
			errno = ENOENT;
		}
	}
	if (t->cur.wd < 0)
		log_warn("logtail %s: cannot watch the open file (%s); checking it every %llu ms",
			 t->path, strerror(errno), (unsigned long long)t->retry_ms);
}

static void start_cur(struct logtail *t, const struct tfile *f)
{
	t->cur = *f;
	t->gone = false;
	t->data_ms = loop_now_ms();
	t->llen = 0;
	fp_load(t);
	watch_cur(t);
}

static void finish_cur(struct logtail *t)
{
	if (t->llen && !t->skipping) {
		t->line[t->llen] = '\0';
		emit(t, t->line, t->llen, false);
	}
	t->llen = 0;
	t->skipping = false;
	if (t->cur.wd >= 0)
		inotify_rm_watch(t->ifd, t->cur.wd);
	close(t->cur.fd);
	t->cur.fd = -1;
	t->cur.wd = -1;
	t->cur.off = 0;
	t->fplen = 0;
	t->gone = false;
}

static void truncation(struct logtail *t)
{
	t->truncations++;
	t->discarded += t->llen;
	t->llen = 0;
	t->skipping = false;
	t->cur.off = 0;
	t->fplen = 0;
	log_info("logtail %s: file truncated, reading it from the start", t->path);
}

/* Reads cur until its end or until *budget is spent. true: budget spent
 * (there may be more). */
static bool read_cur(struct logtail *t, size_t *budget)
{
	while (*budget) {
		size_t want = *budget < t->chunk ? *budget : t->chunk;
		ssize_t n = pread(t->cur.fd, t->rbuf, want, (off_t)t->cur.off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != t->last_errno)
				log_warn("logtail %s: read: %s", t->path, strerror(errno));
			t->last_errno = errno;
			return false;
		}
		if (n == 0) {
			struct stat st;

			if (fstat(t->cur.fd, &st) == 0 && (uint64_t)st.st_size < t->cur.off) {
				truncation(t);
				continue;
			}
			return false;
		}
		/* Changed bytes before off: truncated, then grown past off,
		 * before or while we read, so what we read may be new data
		 * from its middle: dropped. Shorter than off now: we read
		 * n bytes at off, so it was at least off + n long then, and
		 * was truncated after the read: the data is good. */
		enum fp_result fp = fp_check(t);
		if (fp == FP_CHANGED) {
			truncation(t);
			continue;
		}
		*budget -= (size_t)n;
		t->cur.off += (uint64_t)n;
		t->bytes += (uint64_t)n;
		t->data_ms = loop_now_ms();
		fp_update(t, t->rbuf, (size_t)n);
		feed(t, t->rbuf, (size_t)n);
		if (t->closing)
			return false;
		if (fp == FP_SHORT) {
			truncation(t);
			continue;
		}
		if ((size_t)n < want)
			return false; /* a short read is the end for now: more data brings an event */
	}
	return true;
}

/* ---- the path ---- */

static void path_failed(struct logtail *t, int e)
{
	t->file_err = e;
	if (t->cur.fd < 0 || e != ENOENT)
		t->last_errno = e;
}

/* Compares the path with the files held; opens a new one. */
static void check_path(struct logtail *t)
{
	struct stat st;
	int fd;

	t->check = false;
	if (t->cur.fd >= 0 && fstat(t->cur.fd, &st) == 0 && st.st_nlink == 0)
		mark_gone(t);
	if (stat(t->path, &st) < 0) {
		path_failed(t, errno);
		return;
	}
	if (same_file(&t->cur, &st))
		return;
	mark_gone(t); /* something else is at the path now */
	if (held(t, &st))
		return;
	fd = open(t->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		path_failed(t, errno);
		return;
	}
	if (fstat(fd, &st) < 0) {
		path_failed(t, errno);
		close(fd);
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		t->notreg = true;
		path_failed(t, EINVAL);
		close(fd);
		return;
	}
	if (held(t, &st)) { /* replaced between stat and open by one we have */
		close(fd);
		return;
	}
	if (t->cur.fd >= 0 && t->npend == MAX_PENDING) {
		log_warn("logtail %s: %d rotated files not finished yet; the newest waits", t->path, MAX_PENDING);
		close(fd);
		return;
	}

	struct tfile f = { .fd = fd, .wd = -1, .dev = st.st_dev, .ino = st.st_ino, .off = 0 };

	if (t->had_file) {
		t->rotations++;
		log_info("logtail %s: new file (inode %llu)", t->path, (unsigned long long)st.st_ino);
	}
	t->had_file = true;
	t->file_err = 0;
	t->notreg = false;
	t->last_errno = 0;
	if (t->cur.fd >= 0) {
		t->pend[t->npend++] = f;
	} else {
		t->skipping = false;
		if (t->at_end && is_start_file(t, fd))
			f.off = end_offset(t, fd, (uint64_t)st.st_size);
		start_cur(t, &f);
	}
	t->at_end = false;
}

static void dir_watch(struct logtail *t)
{
	int wd = inotify_add_watch(t->ifd, t->dir, DIR_MASK);

	if (wd < 0) {
		if (errno != t->dir_err && errno != ENOENT && errno != ENOTDIR)
			log_warn("logtail %s: cannot watch %s: %s", t->path, t->dir, strerror(errno));
		t->dir_err = errno;
		if (t->cur.fd < 0)
			t->last_errno = errno;
		timer_at(t, loop_now_ms() + t->retry_ms);
	} else {
		t->dir_wd = wd;
		t->dir_err = 0;
	}
	t->check = true; /* the file may exist, or have changed meanwhile */
}

static void promote(struct logtail *t)
{
	struct tfile f = t->pend[0];

	t->npend--;
	memmove(t->pend, t->pend + 1, t->npend * sizeof(t->pend[0]));
	t->skipping = false;
	start_cur(t, &f);
}

static const char *state_name(const struct logtail *t)
{
	int e;

	if (t->cur.fd >= 0)
		return t->gone || t->npend ? "draining rotated file" : "following";
	if (t->dir_wd < 0 && t->dir_err) {
		e = t->dir_err;
		if (e == ENOENT || e == ENOTDIR)
			return "waiting for directory";
	} else {
		e = t->file_err;
		if (e == 0 || e == ENOENT)
			return "waiting for file";
		if (t->notreg)
			return "not a regular file";
	}
	if (e == EACCES || e == EPERM)
		return "permission denied";
	return "error";
}

static void log_state(struct logtail *t)
{
	const char *s = state_name(t);

	if (s == t->logged)
		return;
	t->logged = s;
	if (!strcmp(s, "permission denied") || !strcmp(s, "error") || !strcmp(s, "not a regular file"))
		log_warn("logtail %s: %s (%s)", t->path, s, strerror(t->last_errno));
	else if (t->cur.fd >= 0)
		log_info("logtail %s: %s inode %llu from offset %llu", t->path, s,
			 (unsigned long long)t->cur.ino, (unsigned long long)t->cur.off);
	else
		log_info("logtail %s: %s", t->path, s);
}

/* ---- the work ---- */

static void work(struct logtail *t, size_t budget)
{
	bool more = false;

	if (t->dir_wd < 0)
		dir_watch(t);
	if (t->check)
		check_path(t);
	for (;;) {
		if (t->cur.fd < 0) {
			if (!t->npend)
				break;
			promote(t);
			check_path(t);
		}
		if (read_cur(t, &budget)) {
			more = true;
			break;
		}
		if (t->closing)
			return;
		if (!t->gone)
			break;
		uint64_t since = t->gone_ms > t->data_ms ? t->gone_ms : t->data_ms;
		if (loop_now_ms() < since + t->idle_ms) {
			timer_at(t, since + t->idle_ms);
			break;
		}
		finish_cur(t);
		if (t->closing)
			return;
		if (!t->npend)
			check_path(t); /* records why nothing follows (missing, denied) */
	}
	if (more)
		kick(t);
	else
		unkick(t);
	if (t->cur.fd >= 0 && t->cur.wd < 0)
		timer_at(t, loop_now_ms() + t->retry_ms);
	log_state(t);
}

static void on_event(struct logtail *t, const struct inotify_event *ev)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		t->check = true;
		return;
	}
	if (t->dir_wd >= 0 && ev->wd == t->dir_wd) {
		if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED)) {
			if (!(ev->mask & IN_IGNORED))
				inotify_rm_watch(t->ifd, t->dir_wd);
			t->dir_wd = -1;
			t->check = true;
		} else if (!ev->len || !strcmp(ev->name, t->base)) {
			t->check = true;
		}
		return;
	}
	if (t->cur.wd >= 0 && ev->wd == t->cur.wd) {
		if (ev->mask & IN_IGNORED) {
			t->cur.wd = -1;
			t->check = true;
		} else if (ev->mask & (IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF)) {
			t->check = true;
		}
	}
	/* Anything else: a watch we dropped (its IN_IGNORED). IN_MODIFY needs no
	 * flag: work() always reads. */
}

static void drain_events(struct logtail *t)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (int i = 0; i < MAX_EVENT_READS; i++) {
		ssize_t n = read(t->ifd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const void *)p;

			p += sizeof(*ev) + ev->len;
			on_event(t, ev);
		}
	}
}

static void destroy(struct logtail *t)
{
	loop_io_del(t->l, t->iio);
	loop_io_del(t->l, t->kio);
	loop_timer_free(t->l, t->timer);
	loop_timer_free(t->l, t->btimer);
	if (t->ifd >= 0)
		close(t->ifd);
	if (t->kfd >= 0)
		close(t->kfd);
	if (t->cur.fd >= 0)
		close(t->cur.fd);
	for (unsigned i = 0; i < t->npend; i++)
		close(t->pend[i].fd);
	free(t->line);
	free(t->rbuf);
	free(t->path);
	free(t->dir);
	free(t);
}

static void enter(struct logtail *t)
{
	t->depth++;
}

static void leave(struct logtail *t)
{
	if (--t->depth == 0 && t->closing)
		destroy(t);
}

static void on_inotify(void *arg, int fd, uint32_t events)
{
	struct logtail *t = arg;

	(void)fd;
	(void)events;
	enter(t);
	t->wakeups++;
	drain_events(t);
	work(t, t->per_wakeup);
	/* a window without notifications (see "Batching" in logtail.h) */
	if (t->btimer && !t->closing && loop_io_mod(t->l, t->iio, 0) == 0) {
		if (loop_timer_arm(t->btimer, t->batch_ms, 0) < 0)
			loop_io_mod(t->l, t->iio, EPOLLIN);
	}
	leave(t);
}

/* The window is over: notifications queued meanwhile wake on_inotify now. */
static void on_batch_end(void *arg)
{
	struct logtail *t = arg;

	if (loop_io_mod(t->l, t->iio, EPOLLIN) < 0)
		log_warn("logtail %s: epoll: %s", t->path, strerror(errno));
}

static void on_kick(void *arg, int fd, uint32_t events)
{
	struct logtail *t = arg;

	(void)fd;
	(void)events;
	enter(t);
	work(t, t->per_wakeup);
	leave(t);
}

static void on_timer(void *arg)
{
	struct logtail *t = arg;

	enter(t);
	t->due = 0;
	t->check = true;
	work(t, t->per_wakeup);
	leave(t);
}

/* ---- API ---- */

int logtail_open(struct loop *l, const struct logtail_opts *o, logtail_line_fn fn, void *arg,
		 struct logtail **out)
{
	struct logtail *t;
	size_t len;
	char *slash;
	int err;

	if (!l || !o || !o->path || !fn || !out)
		return -EINVAL;
	len = strlen(o->path);
	if (o->path[0] != '/' || o->path[len - 1] == '/' || o->max_line > MAX_LINE_LIMIT ||
	    o->read_chunk > MAX_LINE_LIMIT)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->l = l;
	t->fn = fn;
	t->arg = arg;
	t->ifd = t->kfd = -1;
	t->cur.fd = t->cur.wd = -1;
	t->dir_wd = -1;
	t->at_end = !o->from_start;
	t->max_line = o->max_line ? o->max_line : LOGTAIL_MAX_LINE_DEFAULT;
	t->chunk = o->read_chunk ? o->read_chunk : LOGTAIL_READ_CHUNK_DEFAULT;
	t->per_wakeup = o->max_per_wakeup ? o->max_per_wakeup : LOGTAIL_PER_WAKEUP_DEFAULT;
	if (t->per_wakeup < t->chunk)
		t->per_wakeup = t->chunk;
	t->idle_ms = o->rotate_idle_ms ? o->rotate_idle_ms : LOGTAIL_ROTATE_IDLE_MS_DEFAULT;
	t->retry_ms = o->dir_retry_ms ? o->dir_retry_ms : LOGTAIL_DIR_RETRY_MS_DEFAULT;
	t->batch_ms = o->batch_ms;

	t->path = strdup(o->path);
	t->line = malloc(t->max_line + 1);
	t->rbuf = malloc(t->chunk);
	if (!t->path || !t->line || !t->rbuf) {
		err = -ENOMEM;
		goto fail;
	}
	slash = strrchr(t->path, '/');
	t->dir = slash == t->path ? strdup("/") : strndup(t->path, (size_t)(slash - t->path));
	t->base = slash + 1;
	if (!t->dir) {
		err = -ENOMEM;
		goto fail;
	}
	if (!strcmp(t->base, ".") || !strcmp(t->base, "..")) {
		err = -EINVAL;
		goto fail;
	}

	t->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (t->ifd < 0) {
		err = -errno;
		log_error("logtail %s: inotify_init1: %s", t->path, strerror(errno));
		goto fail;
	}
	t->kfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->kfd < 0) {
		err = -errno;
		goto fail;
	}
	errno = ENOMEM;
	t->timer = loop_timer_new(l, on_timer, t);
	if (!t->timer) {
		err = -errno;
		goto fail;
	}
	errno = ENOMEM;
	if (t->batch_ms && !(t->btimer = loop_timer_new(l, on_batch_end, t))) {
		err = -errno;
		goto fail;
	}
	errno = ENOMEM;
	t->iio = loop_io_add(l, t->ifd, EPOLLIN, on_inotify, t);
	if (!t->iio) {
		err = -errno;
		goto fail;
	}
	errno = ENOMEM;
	t->kio = loop_io_add(l, t->kfd, EPOLLIN, on_kick, t);
	if (!t->kio) {
		err = -errno;
		goto fail;
	}

	/* The directory first, then the file: a file created in between is
	 * then reported, not missed. Reading is left to the loop. */
	if (t->at_end && ident_of(AT_FDCWD, t->path, 0, &t->start) < 0)
		t->at_end = false; /* whatever appears later is new: read it whole */
	dir_watch(t);
	check_path(t);
	kick(t);
	*out = t;
	return 0;

fail:
	destroy(t);
	return err;
}

void logtail_close(struct logtail *t)
{
	if (!t)
		return;
	if (t->depth) {
		t->closing = true;
		return;
	}
	destroy(t);
}

int logtail_poll_now(struct logtail *t)
{
	size_t budget;
	struct stat st;

	if (!t)
		return -EINVAL;
	if (t->depth)
		return -EBUSY;
	enter(t);
	drain_events(t);
	/* What is there now, not what a fast writer adds while we read. */
	budget = t->per_wakeup;
	if (t->cur.fd >= 0 && fstat(t->cur.fd, &st) == 0 && (uint64_t)st.st_size > t->cur.off)
		budget += (size_t)((uint64_t)st.st_size - t->cur.off);
	work(t, budget);
	leave(t);
	return 0;
}

void logtail_get_status(const struct logtail *t, struct logtail_status *st)
{
	memset(st, 0, sizeof(*st));
	if (!t)
		return;
	st->path = t->path;
	st->open = t->cur.fd >= 0;
	st->last_errno = t->last_errno;
	st->state = state_name(t);
	st->lines = t->lines;
	st->bytes = t->bytes;
	st->truncated = t->truncated;
	st->discarded = t->discarded;
	st->rotations = t->rotations;
	st->truncations = t->truncations;
	st->inode = t->cur.fd >= 0 ? (uint64_t)t->cur.ino : 0;
	st->offset = t->cur.fd >= 0 ? t->cur.off : 0;
	st->pending = t->npend;
	st->wakeups = t->wakeups;
}
