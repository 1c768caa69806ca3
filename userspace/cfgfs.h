/* cfgfs: the file layer of config management (issue 4).
 *
 * Synchronous and local: every call does plain file I/O on local paths and
 * returns; nothing waits on another process, a socket or a FIFO. Nothing
 * here keeps global state, so the calls are reentrant; one struct cfgfs_txn
 * must not be used from two threads at once.
 *
 * Paths: a request path is checked once with cfgfs_check_path, which gives
 * the *resolved* path (realpath of the parent directory + "/" + name). All
 * other calls take only resolved paths and re-walk them component by
 * component with O_NOFOLLOW, so a directory swapped for a symlink after the
 * check makes them fail (-ELOOP/-ENOTDIR) instead of following it. They
 * do not compare with the allowed dirs again: pass them only paths that
 * came out of cfgfs_check_path (or cfgfs_list).
 *
 * Return values are 0 or -errno unless said otherwise. Ownership: strings
 * and buffers passed in are only borrowed; what a call hands back through
 * an out-parameter belongs to the caller and is released as noted. */
#ifndef OS_CFGFS_H
#define OS_CFGFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define CFGFS_DEFAULT_MAX_FILE_BYTES	(4u << 20)
#define CFGFS_DEFAULT_MAX_TOTAL_BYTES	(16u << 20)
#define CFGFS_DEFAULT_MAX_FILES		256u

#define CFGFS_LIST_MAX_DEPTH	8	/* allowed/f is depth 1; files deeper than 8 are not listed */
#define CFGFS_LIST_MAX_ENTRIES	10000	/* regular files listed */
#define CFGFS_LIST_MAX_SCANNED	100000	/* directory entries looked at, of any type */

#define CFGFS_BACKUP_DEFAULT_MAX	(64u << 20)	/* bytes of backups one txn may hold */

/* Limits of one apply. The listing uses max_file_bytes only; max_total_bytes
 * and max_files are for the caller to enforce on a request. */
struct cfgfs_limits {
	size_t max_file_bytes;
	size_t max_total_bytes;
	size_t max_files;
};

void cfgfs_limits_default(struct cfgfs_limits *lim);

/* ---- paths ---- */

/* Pure syntax check of path[0..len), no file system access: not empty,
 * shorter than PATH_MAX, no NUL byte, absolute, normalised (no empty, "."
 * or ".." component, no trailing '/', not "/" itself), every component at
 * most NAME_MAX bytes and free of control characters (0x01-0x1f, 0x7f: a
 * newline in a file name would forge lines in logs). 0 or -EINVAL with a
 * message in err (err may be NULL). */
int cfgfs_path_syntax(const char *path, size_t len, char *err, size_t errlen);

/* Check one requested path against the allowed directories (absolute,
 * normalised; each is resolved with realpath here, so an allowed dir that
 * is a symlink is compared by its target; one that does not exist allows
 * nothing). The path's parent, after realpath, must be an allowed dir or
 * lie below one; its final component, if it exists, must be a regular file
 * (lstat semantics). On success fills resolved (rlen >= PATH_MAX is always
 * enough) and *exists (may be NULL).
 * Errors, each with a message in err:
 *   -EINVAL   malformed path (see cfgfs_path_syntax), resolved path too long
 *   -EACCES   outside the allowed dirs, also when a symlink in the parent
 *             leads outside, or a directory changed while checking
 *   -ENOENT   the parent directory does not exist (inside an allowed dir)
 *   -ENOTDIR  a component of the parent is not a directory
 *   -EISDIR   the final component is a directory
 *   -EPERM    the final component is a symlink, device, FIFO or socket
 *   other     -errno of a failed lstat */
int cfgfs_check_path(char *const *allowed, size_t nallowed, const char *path,
		     char *resolved, size_t rlen, bool *exists, char *err, size_t errlen);

/* ---- listing and reading ---- */

struct cfgfs_entry {
	char *path;		/* resolved absolute path; owned by the array */
	uint64_t size;
	uint32_t mode;		/* permission bits only (st_mode & 07777) */
	uint32_t uid;
	uint32_t gid;
	int64_t mtime_ns;	/* nanoseconds since the epoch */
	char sha256[SHA256_HEX_LEN + 1];	/* "" when too_large */
	bool too_large;		/* size > max_file_bytes: not hashed */
};

/* Every regular file below the allowed dirs (each resolved first), walked
 * with openat and O_NOFOLLOW: symlinks (to files or dirs), devices, FIFOs
 * and sockets are skipped, never opened. Recursion stops at
 * CFGFS_LIST_MAX_DEPTH; at most CFGFS_LIST_MAX_ENTRIES files are listed
 * and CFGFS_LIST_MAX_SCANNED entries looked at, beyond which *truncated
 * (may be NULL) is set. Sorted by path (strcmp), without duplicates when
 * allowed dirs overlap. Unreadable directories and files that vanish or
 * cannot be opened meanwhile are skipped. lim NULL means the defaults.
 * *out is an array of *count entries (NULL when 0), released with
 * cfgfs_list_free. Errors: -ENOMEM only. */
int cfgfs_list(char *const *allowed, size_t nallowed, const struct cfgfs_limits *lim,
	       struct cfgfs_entry **out, size_t *count, bool *truncated);
void cfgfs_list_free(struct cfgfs_entry *e, size_t count);

/* Read a whole file given by a resolved path (O_NOFOLLOW, O_NONBLOCK so a
 * FIFO swapped in cannot block, then fstat: regular files only). *data is
 * malloc'd, NUL-terminated (the NUL not counted in *len), freed with
 * free(). Errors: -EFBIG when larger than max bytes (also when the file
 * grows past max while read), -EISDIR, -EPERM (symlink or not a regular
 * file), -ENOENT, -EINVAL (malformed path), -ELOOP/-ENOTDIR (a directory
 * on the path is now a symlink), -ENOMEM. */
int cfgfs_read(const char *resolved, size_t max, uint8_t **data, size_t *len);

/* ---- transactions: backup, atomic writes, restore ---- */

struct cfgfs_txn;	/* opaque */

enum cfgfs_op {
	CFGFS_OP_NONE = 0,	/* backed up, not changed (or its change failed before the rename) */
	CFGFS_OP_WRITE,		/* new content renamed into place */
	CFGFS_OP_DELETE,	/* unlinked */
};

/* A new, empty transaction. max_backup_bytes bounds the total size of the
 * backups it holds in memory (0: CFGFS_BACKUP_DEFAULT_MAX). NULL on ENOMEM. */
struct cfgfs_txn *cfgfs_txn_new(size_t max_backup_bytes);

/* Snapshot a resolved path: content, mode, uid/gid, atime/mtime and sha256,
 * or "did not exist". Must precede every write or delete of that path.
 * Backing up a path twice keeps the first snapshot and returns 0.
 * Errors: -EINVAL (malformed), -EPERM/-EISDIR (not a regular file), -EFBIG
 * (over the txn's backup budget), -ENOMEM, I/O errors. */
int cfgfs_txn_backup(struct cfgfs_txn *t, const char *resolved);

/* Replace the content of a backed-up path atomically: a temp file
 * ".NAME.cfgfs-RANDOM" (O_CREAT|O_EXCL|O_NOFOLLOW, 0600) in the same
 * directory, all data written, owner then mode set, fsync, renameat over
 * the target, fsync of the directory.
 * Owner and mode: those of the file replaced (its current lstat). A new
 * file gets 0644, owner = the agent's euid (root), group = the directory's
 * group when that is not root (0), else the agent's egid (root).
 * On failure the temp file is removed and the target is untouched, except
 * when only the final directory fsync failed: the new content is then in
 * place and cfgfs_txn_op() says CFGFS_OP_WRITE (restore puts it back).
 * Errors: -EINVAL (path not backed up or malformed), -EPERM/-EISDIR (target
 * is no longer a regular file), -ENOSPC/-EDQUOT/-EIO..., see
 * cfgfs_txn_error(). */
int cfgfs_txn_write(struct cfgfs_txn *t, const char *resolved, const uint8_t *data, size_t len);

/* Unlink a backed-up regular file and fsync its directory. -ENOENT (and
 * nothing changed) when it does not exist; -EPERM/-EISDIR when it is not a
 * regular file; -EINVAL when not backed up. */
int cfgfs_txn_delete(struct cfgfs_txn *t, const char *resolved);

/* Put every backed-up path back as it was: byte for byte, with its mode,
 * owner, atime and mtime (temp file + rename as above), and unlink the
 * paths that did not exist. A path already identical to its backup
 * (content, mode, owner) is left alone. When the disk is full (ENOSPC or
 * EDQUOT on the temp file) the current file is unlinked first to free its
 * space and the atomic write retried: on a full disk a short window where
 * the file is missing is preferred to not restoring it. Tries every path,
 * newest backup first; returns 0 or the first error (see
 * cfgfs_txn_error()). May be called again after a failure. */
int cfgfs_txn_restore(struct cfgfs_txn *t);

/* For the audit log, i < cfgfs_txn_count(t), in backup order. Strings are
 * owned by the txn. sha_before is "" when the file did not exist,
 * sha_after is "" unless op is CFGFS_OP_WRITE (a restore does not change
 * them: they describe what the apply did). */
size_t cfgfs_txn_count(const struct cfgfs_txn *t);
const char *cfgfs_txn_path(const struct cfgfs_txn *t, size_t i);
const char *cfgfs_txn_sha_before(const struct cfgfs_txn *t, size_t i);
const char *cfgfs_txn_sha_after(const struct cfgfs_txn *t, size_t i);
bool cfgfs_txn_existed(const struct cfgfs_txn *t, size_t i);
enum cfgfs_op cfgfs_txn_op(const struct cfgfs_txn *t, size_t i);
/* The message of the last failed call on t ("write /p: fsync: No space
 * left on device"), "" if none. Owned by t. */
const char *cfgfs_txn_error(const struct cfgfs_txn *t);
/* Frees the txn and its backups; changes no file. Accepts NULL. */
void cfgfs_txn_free(struct cfgfs_txn *t);

/* ---- base64 (RFC 4648 section 4, standard alphabet) ---- */

/* Strict decoding: length a multiple of 4, '=' padding required and only
 * at the end, no whitespace or line breaks (send `base64 -w0` output), and
 * the unused bits of the last character must be zero, so every byte string
 * has exactly one accepted encoding. "" decodes to 0 bytes. *out is
 * malloc'd (never NULL on success), NUL-terminated (not counted in
 * *outlen), freed with free(). -EINVAL or -ENOMEM; *out NULL on error. */
int cfgfs_base64_decode(const char *in, size_t inlen, uint8_t **out, size_t *outlen);
/* Padded encoding, malloc'd and NUL-terminated; *outlen (may be NULL) gets
 * its length. NULL on ENOMEM or overflow. */
char *cfgfs_base64_encode(const uint8_t *in, size_t len, size_t *outlen);

#endif
