/* Following a log file like `tail -F`, driven by inotify, safe across
 * rotation (issue 6 §1). The line parsers sit behind the callback.
 *
 * One tailer follows one path. It watches the path's directory (names
 * appearing, leaving, changing mode) and the file it reads (writes,
 * truncation, attribute changes) with its own inotify instance; nothing is
 * polled except a missing or unreadable directory, retried every
 * dir_retry_ms. Each tailer holds 4 fds (inotify, an eventfd that keeps it
 * runnable while it has a backlog, two timerfds) plus one per open log file;
 * inotify instances count against fs.inotify.max_user_instances (128 by
 * default, per uid, root included), so ~10 tailers are cheap.
 *
 * Where reading starts: the file present at logtail_open is read from its
 * end (just after its last newline, so a last line being written is
 * delivered whole), or from its start with from_start. Every file that
 * appears later (after a rotation, or because there was none) is read from
 * its start. If the file existed but could not be opened (permission
 * denied), the end rule still applies when it becomes readable, if it is
 * still the same inode.
 *
 * Rotation:
 *  - rename + create (logrotate's default) and delete + recreate: when a new
 *    file appears at the path it is opened at once (so the tailer holds it
 *    even if it is rotated again) and queued; the old file is still read,
 *    through the fd, until it is at its end and has not grown for
 *    rotate_idle_ms (counted from when the new file was seen or from the last
 *    data read from the old file, whichever is later: writers keep appending
 *    to the old file until they reopen). Then the old file is finished and
 *    the new one is read from its start. A file deleted with no replacement
 *    is finished the same way (so the tailer does not pin a deleted file's
 *    space forever). Lines are delivered in file order: no line of a newer
 *    file before the old one is finished. A writer that appends to the old
 *    file after it stayed silent for rotate_idle_ms with the new file there
 *    loses those lines (the tailer has moved on): the price of not holding
 *    rotated files forever.
 *  - copytruncate: the file shrinking below the read offset (or its bytes
 *    just before the offset changing, when it grew back past the offset
 *    before the tailer woke up: a 32-byte fingerprint is compared after
 *    every read) counts a truncation and restarts at offset 0. Lines written
 *    after the tailer's last read and before the truncation are lost: they
 *    are only in the copy, whose name the tailer does not know; every other
 *    line is delivered exactly once. Identical bytes at the same offsets
 *    before and after a truncation defeat the fingerprint.
 *  - A file that appears and is rotated away again before the tailer woke up
 *    to open it is not seen (no path-based tailer can); rotations are
 *    hours apart in practice.
 *
 * Lines: delivered without their '\n', as bytes with a length (NUL bytes
 * included; '\r' is kept); line[len] is always '\0' for convenience. A last
 * line without '\n' is held until it is completed; when its file is finished
 * (rotation, deletion) it is delivered as it is. A partial line cut by a
 * truncation is discarded (its bytes count in discarded), since its rest is
 * in the copy. A line longer than max_line is delivered once, truncated to
 * its first max_line bytes with truncated = true, and the rest up to its
 * '\n' is read and discarded. Memory is max_line + read_chunk per tailer,
 * allocated at open, whatever the input.
 *
 * Fairness: at most max_per_wakeup bytes are read per loop wakeup; with more
 * to read the tailer keeps its eventfd readable, so the loop comes back to
 * it after serving the other ready fds, without sleeping.
 *
 * Batching (batch_ms > 0): a writer that logs each line with its own
 * write() (nginx without access_log buffer=) makes one notification per
 * line. The first notification after a quiet spell is served at once;
 * after it, the inotify fd is not watched for batch_ms, so what is written
 * meanwhile is read in one go when the window ends (the kernel merges the
 * queued notifications). A sparse log is thus read with no added delay,
 * and a busy one at most 1000 / batch_ms times a second, each line at most
 * batch_ms late.
 *
 * Errors: a missing directory or file, or one that cannot be opened, is not
 * an error of logtail_open: the tailer reports it in its status and retries
 * when the directory changes (entries created or moved, modes changed) or,
 * for the directory itself, on the retry timer.
 *
 * Ownership: the tailer copies opts->path; the status' path and state point
 * into the tailer / static storage and are valid until logtail_close. The
 * loop must outlive the tailer. Single-threaded, like the loop. */
#ifndef OS_LOGTAIL_H
#define OS_LOGTAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct logtail;

#define LOGTAIL_MAX_LINE_DEFAULT (64u * 1024)
#define LOGTAIL_READ_CHUNK_DEFAULT (64u * 1024)
#define LOGTAIL_PER_WAKEUP_DEFAULT (1024u * 1024)
#define LOGTAIL_ROTATE_IDLE_MS_DEFAULT 5000u
#define LOGTAIL_DIR_RETRY_MS_DEFAULT 2000u

struct logtail_opts {
	const char *path;        /* absolute path of the log file (its directory is watched) */
	bool from_start;         /* read the file present at open from its start */
	size_t max_line;         /* 0 = LOGTAIL_MAX_LINE_DEFAULT */
	size_t read_chunk;       /* bytes per read; 0 = LOGTAIL_READ_CHUNK_DEFAULT */
	size_t max_per_wakeup;   /* 0 = LOGTAIL_PER_WAKEUP_DEFAULT (at least read_chunk) */
	unsigned rotate_idle_ms; /* 0 = LOGTAIL_ROTATE_IDLE_MS_DEFAULT */
	unsigned dir_retry_ms;   /* 0 = LOGTAIL_DIR_RETRY_MS_DEFAULT */
	unsigned batch_ms;       /* 0 = read at every notification; see "Batching" */
};

/* Called from the loop for each line; line is valid during the call only.
 * The callback may call logtail_close on its own tailer: no further line is
 * delivered and the tailer is freed when the callback returns. */
typedef void (*logtail_line_fn)(void *arg, const char *line, size_t len, bool truncated);

/* 0 and *out set, or -EINVAL (missing argument, path not absolute, ending
 * in '/', "." or ".."), -ENOMEM, -errno of inotify_init1/eventfd/timerfd
 * (EMFILE: too many inotify instances). Sets up the watches and opens the
 * file if it is there (to fix the starting offset), but never calls fn:
 * lines come from the loop. */
int logtail_open(struct loop *l, const struct logtail_opts *o, logtail_line_fn fn, void *arg,
		 struct logtail **out);

/* Closes everything; lines not delivered yet are dropped. Accepts NULL. From
 * inside the line callback: see logtail_line_fn. */
void logtail_close(struct logtail *t);

struct logtail_status {
	const char *path;
	bool open;          /* a file is open and being read */
	int last_errno;     /* why the last open/watch/read failed; 0 once a file is open */
	/* "following", "draining rotated file", "waiting for file",
	 * "waiting for directory", "permission denied", "not a regular file",
	 * "error" */
	const char *state;
	uint64_t lines;       /* delivered, truncated ones included */
	uint64_t bytes;       /* read from files */
	uint64_t truncated;   /* lines longer than max_line */
	uint64_t discarded;   /* bytes read but not delivered (overlong line tails, partial line cut by a truncation) */
	uint64_t rotations;   /* new files at the path after the first one */
	uint64_t truncations; /* copytruncate (or any shrink/rewrite) detected */
	uint64_t inode;       /* of the file being read, 0 if none */
	uint64_t offset;      /* bytes of it consumed */
	unsigned pending;     /* newer files opened, waiting for the current one to finish */
	uint64_t wakeups;     /* inotify notifications served (batched ones count once) */
};

/* Accepts NULL t (all zero, state NULL). */
void logtail_get_status(const struct logtail *t, struct logtail_status *st);

/* Process queued notifications and read everything the current file holds
 * now, without the per-wakeup bound (tests, shutdown). The rotation rules
 * still apply (an old file is not finished before rotate_idle_ms). 0,
 * -EINVAL for NULL, or -EBUSY from inside the line callback. */
int logtail_poll_now(struct logtail *t);

#endif
