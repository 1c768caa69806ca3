/* cfgfs: checked paths, listing, bounded reads and transactional writes of
 * the managed config files.
 *
 * Design, step by step, and why:
 *
 * - Checking a request path is two-phase. First a pure syntax check (no
 *   "..", ".", "//", trailing '/', NUL or control characters, bounded
 *   length), so nothing malformed ever reaches a system call. Then
 *   realpath() of the *parent* only, compared with the realpath of each
 *   allowed dir: symlinks in directories are resolved (so an allowed dir
 *   may be a symlink, and a symlinked subdir pointing outside is refused),
 *   while the final component is looked at with lstat semantics and must be
 *   a regular file or absent. A symlink as the final component is refused,
 *   not resolved: rename() would replace the link itself, but reads and
 *   the validator would follow it.
 *
 * - realpath() and a later open() by name are two lookups; a directory
 *   swapped for a symlink in between would redirect the second one. So every
 *   later operation re-walks the resolved directory from "/" with
 *   openat(O_NOFOLLOW|O_DIRECTORY) one component at a time and then works
 *   only relative to that directory fd (openat, fstatat, renameat,
 *   unlinkat). A resolved path has no symlink by construction; if one
 *   appears, the walk fails with ELOOP/ENOTDIR instead of following it.
 *
 * - Files are opened with O_NOFOLLOW (a symlink swapped in for the file
 *   gives ELOOP), O_NONBLOCK (opening a FIFO swapped in would otherwise
 *   block the core loop until a writer comes), O_NOCTTY and O_CLOEXEC
 *   (the agent forks validators), then fstat'ed on the fd: what is checked
 *   is what is read. Reads are bounded and detect files that grow.
 *
 * - A write goes to a temp file in the target's directory (same file
 *   system, so rename is atomic), created O_CREAT|O_EXCL|O_NOFOLLOW with
 *   mode 0600, so nobody can pre-plant it or read it half-written. After
 *   the data: fchown before fchmod (chown clears set-id bits), fsync of the
 *   file *before* the rename (otherwise a crash can leave the new name on
 *   an empty or partial inode), renameat over the target (readers see the
 *   old or the new file, never a mix), then fsync of the directory so the
 *   rename itself is durable before the caller reports success or signals
 *   a reload. Any failure before the rename unlinks the temp file and
 *   leaves the target as it was; ENOSPC shows up at write() or at fsync().
 *
 * - Backups are kept in memory (content, mode, owner, times), bounded per
 *   transaction. Restore rewrites each file with the same temp+rename, so a
 *   failed restore of one file leaves it either old or new, never torn;
 *   files identical to their backup are not touched. A crash of the agent
 *   mid-apply loses the in-memory backup (the files keep whatever state the
 *   last completed rename gave them).
 *
 * All functions return 0 or -errno. */
#include "cfgfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OPEN_FILE_FLAGS	(O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
#define TEMP_TAG	".cfgfs-"
#define TEMP_NAME_KEEP	200	/* bytes of the target's name kept in its temp name */
#define HASH_CHUNK	65536

void cfgfs_limits_default(struct cfgfs_limits *lim)
{
	lim->max_file_bytes = CFGFS_DEFAULT_MAX_FILE_BYTES;
	lim->max_total_bytes = CFGFS_DEFAULT_MAX_TOTAL_BYTES;
	lim->max_files = CFGFS_DEFAULT_MAX_FILES;
}

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- small I/O helpers ---- */

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t r;

	while (len) {
		r = write(fd, p, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Read fd to EOF into a malloc'd, NUL-terminated buffer of at most max
 * bytes (-EFBIG beyond). hint is the size fstat gave. */
static int read_bounded(int fd, size_t max, size_t hint, uint8_t **data, size_t *len)
{
	size_t cap, n = 0;
	uint8_t *buf, *nb;
	ssize_t r;

	if (max > SIZE_MAX / 4)
		max = SIZE_MAX / 4;
	/* one byte more than expected: reading it means the file grew (or
	 * reaching EOF there leaves room for the NUL) */
	cap = (hint < max ? hint : max) + 1;
	if (cap < 256)
		cap = 256;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			free(buf);
			return (int)r;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			free(buf);
			return -EFBIG;
		}
	}
	if (n == cap) {
		nb = realloc(buf, n + 1);
		if (!nb) {
			free(buf);
			return -ENOMEM;
		}
		buf = nb;
	}
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return 0;
}

/* ---- path syntax ---- */

int cfgfs_path_syntax(const char *path, size_t len, char *err, size_t errlen)
{
	size_t i, start;

	if (!path || len == 0) {
		set_err(err, errlen, "empty path");
		return -EINVAL;
	}
	if (len >= PATH_MAX) {
		set_err(err, errlen, "path too long (%zu bytes, limit %d)", len, PATH_MAX - 1);
		return -EINVAL;
	}
	if (memchr(path, '\0', len)) {
		set_err(err, errlen, "path contains a NUL byte");
		return -EINVAL;
	}
	if (path[0] != '/') {
		set_err(err, errlen, "path is not absolute");
		return -EINVAL;
	}
	if (len == 1) {
		set_err(err, errlen, "path is the root directory");
		return -EINVAL;
	}
	if (path[len - 1] == '/') {
		set_err(err, errlen, "path ends with '/'");
		return -EINVAL;
	}
	for (start = 1; start <= len; start = i + 1) {
		for (i = start; i < len && path[i] != '/'; i++) {
			unsigned char c = (unsigned char)path[i];

			if (c < 0x20 || c == 0x7f) {
				set_err(err, errlen, "path contains a control character (0x%02x)", c);
				return -EINVAL;
			}
		}
		if (i == start) {
			set_err(err, errlen, "path contains an empty component (\"//\")");
			return -EINVAL;
		}
		if (path[start] == '.' && (i - start == 1 || (i - start == 2 && path[start + 1] == '.'))) {
			set_err(err, errlen, "path contains a \"%.*s\" component", (int)(i - start), path + start);
			return -EINVAL;
		}
		if (i - start > NAME_MAX) {
			set_err(err, errlen, "path component longer than %d bytes", NAME_MAX);
			return -EINVAL;
		}
	}
	return 0;
}

/* dir ("/" or "/a/b") contains or equals p (both normalised, absolute). */
static bool path_within(const char *dir, const char *p)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return true;
	return strncmp(dir, p, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* Split a syntax-checked path into its directory (into dir, "/" for a
 * top-level name) and a pointer to its last component. */
static void split_path(const char *path, char dir[PATH_MAX], const char **name)
{
	const char *slash = strrchr(path, '/');
	size_t n = (size_t)(slash - path);

	if (n == 0)
		n = 1;
	memcpy(dir, path, n);
	dir[n] = '\0';
	*name = slash + 1;
}

/* Open a resolved directory, walking from "/" without following any
 * symlink. Returns an O_RDONLY directory fd (usable with fsync) or -errno:
 * -ELOOP/-ENOTDIR when a component is a symlink or not a directory. */
static int open_dir_nofollow(const char *dir)
{
	char comp[NAME_MAX + 1];
	const char *p = dir, *slash;
	int fd, nfd;
	size_t n;

	if (dir[0] != '/')
		return -EINVAL;
	fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		slash = strchr(p, '/');
		n = slash ? (size_t)(slash - p) : strlen(p);
		if (n > NAME_MAX || (p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.')))) {
			close(fd);
			return -EINVAL;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			nfd = -errno;
			close(fd);
			return nfd;
		}
		close(fd);
		fd = nfd;
		p += n;
	}
	nfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (nfd < 0)
		nfd = -errno;
	close(fd);
	return nfd;
}

/* Open the directory of a resolved path (after checking its syntax). */
static int open_parent(const char *resolved, const char **name)
{
	char dir[PATH_MAX];
	int r;

	r = cfgfs_path_syntax(resolved, strnlen(resolved, PATH_MAX), NULL, 0);
	if (r)
		return r;
	split_path(resolved, dir, name);
	return open_dir_nofollow(dir);
}

/* ---- checking a request path ---- */

int cfgfs_check_path(char *const *allowed, size_t nallowed, const char *path,
		     char *resolved, size_t rlen, bool *exists, char *err, size_t errlen)
{
	char dir[PATH_MAX], rdir[PATH_MAX], ra[PATH_MAX];
	const char *name;
	bool inside = false, near = false;
	struct stat st;
	bool dummy;
	size_t i, n;
	int r, dfd;

	if (err && errlen)
		err[0] = '\0';
	if (!exists)
		exists = &dummy;
	*exists = false;
	r = cfgfs_path_syntax(path, path ? strnlen(path, PATH_MAX) : 0, err, errlen);
	if (r)
		return r;
	split_path(path, dir, &name);

	/* resolve the parent; the final component is never resolved */
	if (!realpath(dir, rdir)) {
		r = -errno;
		/* say "not allowed" rather than "does not exist" for a path that
		 * is not even written inside an allowed dir: no probing of the
		 * rest of the file system through error codes */
		for (i = 0; i < nallowed && !near; i++)
			near = path_within(allowed[i], dir) ||
			       (realpath(allowed[i], ra) && path_within(ra, dir));
		if (!near) {
			set_err(err, errlen, "%s is outside the allowed directories", path);
			return -EACCES;
		}
		if (r == -ENOENT || r == -ENOTDIR) {
			set_err(err, errlen, "directory %s does not exist", dir);
			return r;
		}
		set_err(err, errlen, "cannot resolve %s: %s", dir, strerror(-r));
		return r == -ELOOP ? -EACCES : r;
	}
	for (i = 0; i < nallowed && !inside; i++)
		inside = realpath(allowed[i], ra) && path_within(ra, rdir);
	if (!inside) {
		if (strcmp(dir, rdir))
			set_err(err, errlen, "%s is outside the allowed directories (its directory is %s)",
				path, rdir);
		else
			set_err(err, errlen, "%s is outside the allowed directories", path);
		return -EACCES;
	}

	n = strlen(rdir);
	if (n + 1 + strlen(name) + 1 > rlen || n + 1 + strlen(name) + 1 > PATH_MAX) {
		set_err(err, errlen, "resolved path too long");
		return -EINVAL;
	}
	if (n == 1)
		snprintf(resolved, rlen, "/%s", name);
	else
		snprintf(resolved, rlen, "%s/%s", rdir, name);

	/* the walk also catches a parent that is a file (realpath accepts
	 * any existing path) and a directory swapped for a symlink since */
	dfd = open_dir_nofollow(rdir);
	if (dfd == -ENOTDIR && lstat(rdir, &st) == 0 && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
		set_err(err, errlen, "%s is not a directory", rdir);
		return -ENOTDIR;
	}
	if (dfd < 0) {
		set_err(err, errlen, "directory %s changed while checking: %s", rdir, strerror(-dfd));
		return -EACCES;
	}
	r = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
	close(dfd);
	if (r == -ENOENT)
		return 0;
	if (r) {
		set_err(err, errlen, "%s: %s", resolved, strerror(-r));
		return r;
	}
	if (S_ISLNK(st.st_mode)) {
		set_err(err, errlen, "%s is a symbolic link", resolved);
		return -EPERM;
	}
	if (S_ISDIR(st.st_mode)) {
		set_err(err, errlen, "%s is a directory", resolved);
		return -EISDIR;
	}
	if (!S_ISREG(st.st_mode)) {
		set_err(err, errlen, "%s is not a regular file", resolved);
		return -EPERM;
	}
	*exists = true;
	return 0;
}

/* ---- reading ---- */

/* Open name in dfd as a regular file for reading; -EPERM for symlinks and
 * special files, -EISDIR for directories. lstat first, so that a device
 * node is refused without being opened (opening some has side effects),
 * then the fd is fstat'ed and must be the same regular file. Fills st. */
static int open_regular(int dfd, const char *name, struct stat *st)
{
	struct stat lst;
	int fd, r;

	if (fstatat(dfd, name, &lst, AT_SYMLINK_NOFOLLOW))
		return -errno;
	if (!S_ISREG(lst.st_mode))
		return S_ISDIR(lst.st_mode) ? -EISDIR : -EPERM;
	fd = openat(dfd, name, OPEN_FILE_FLAGS);
	if (fd < 0)
		return errno == ELOOP ? -EPERM : -errno;
	if (fstat(fd, st)) {
		r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st->st_mode) || st->st_dev != lst.st_dev || st->st_ino != lst.st_ino) {
		close(fd);
		return S_ISDIR(st->st_mode) ? -EISDIR : -EPERM;
	}
	return fd;
}

int cfgfs_read(const char *resolved, size_t max, uint8_t **data, size_t *len)
{
	const char *name;
	struct stat st;
	int dfd, fd, r;

	*data = NULL;
	*len = 0;
	dfd = open_parent(resolved, &name);
	if (dfd < 0)
		return dfd;
	fd = open_regular(dfd, name, &st);
	close(dfd);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max)
		r = -EFBIG;
	else
		r = read_bounded(fd, max, (size_t)st.st_size, data, len);
	close(fd);
	return r;
}

/* ---- listing ---- */

struct list_ctx {
	struct cfgfs_entry *v;
	size_t n, cap;
	size_t scanned;
	size_t max_file;
	bool truncated;
	uint8_t *chunk;
};

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Hash an open regular file of at most max bytes; -EFBIG if it has more. */
static int hash_fd(int fd, size_t max, uint8_t *chunk, char hex[SHA256_HEX_LEN + 1])
{
	uint8_t d[SHA256_DIGEST_LEN];
	struct sha256 c;
	size_t total = 0;
	ssize_t r;

	sha256_init(&c);
	for (;;) {
		r = read(fd, chunk, HASH_CHUNK);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		total += (size_t)r;
		if (total > max)
			return -EFBIG;
		sha256_update(&c, chunk, (size_t)r);
	}
	sha256_final(&c, d);
	sha256_to_hex(d, hex);
	return 0;
}

static int list_add(struct list_ctx *c, int dfd, const char *name, const char *path,
		    const struct stat *lst)
{
	struct cfgfs_entry *e;
	struct stat st = *lst;
	int fd, r;

	if (c->n >= CFGFS_LIST_MAX_ENTRIES) {
		c->truncated = true;
		return 0;
	}
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 64;

		e = realloc(c->v, ncap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		c->v = e;
		c->cap = ncap;
	}
	e = &c->v[c->n];
	memset(e, 0, sizeof(*e));
	if ((uint64_t)st.st_size > c->max_file) {
		e->too_large = true;
	} else {
		fd = open_regular(dfd, name, &st);
		if (fd < 0)
			return 0;	/* vanished or replaced meanwhile: skip */
		if (st.st_dev != lst->st_dev || st.st_ino != lst->st_ino) {
			close(fd);
			return 0;
		}
		r = hash_fd(fd, c->max_file, c->chunk, e->sha256);
		close(fd);
		if (r == -EFBIG) {
			e->too_large = true;
			e->sha256[0] = '\0';
		} else if (r) {
			return 0;
		}
	}
	e->path = strdup(path);
	if (!e->path)
		return -ENOMEM;
	e->size = (uint64_t)st.st_size;
	e->mode = st.st_mode & 07777;
	e->uid = st.st_uid;
	e->gid = st.st_gid;
	e->mtime_ns = ts_ns(&st.st_mtim);
	c->n++;
	return 0;
}

/* Walk the directory dfd (taken over and closed) whose path is path[0..plen);
 * files found here are at the given depth. */
static int list_walk(struct list_ctx *c, int dfd, char *path, size_t plen, int depth)
{
	struct dirent *de;
	struct stat st;
	size_t nlen;
	DIR *d;
	int r = 0, cfd;

	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return errno == ENOMEM ? -ENOMEM : 0;
	}
	while (!r && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (++c->scanned > CFGFS_LIST_MAX_SCANNED) {
			c->truncated = true;
			break;
		}
		nlen = strlen(de->d_name);
		if (plen + 1 + nlen >= PATH_MAX)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (plen == 1) {	/* the allowed dir is "/" */
			memcpy(path + 1, de->d_name, nlen + 1);
			nlen += 1;
		} else {
			path[plen] = '/';
			memcpy(path + plen + 1, de->d_name, nlen + 1);
			nlen += plen + 1;
		}
		if (S_ISDIR(st.st_mode)) {
			if (depth >= CFGFS_LIST_MAX_DEPTH)
				continue;
			cfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd >= 0)
				r = list_walk(c, cfd, path, nlen, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			r = list_add(c, dirfd(d), de->d_name, path, &st);
		}
		/* symlinks, devices, FIFOs, sockets: not listed, not opened */
	}
	path[plen] = '\0';
	closedir(d);
	return r;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cfgfs_entry *)a)->path, ((const struct cfgfs_entry *)b)->path);
}

int cfgfs_list(char *const *allowed, size_t nallowed, const struct cfgfs_limits *lim,
	       struct cfgfs_entry **out, size_t *count, bool *truncated)
{
	struct list_ctx c = { 0 };
	char path[PATH_MAX];
	size_t i, j;
	int r = 0, dfd;

	*out = NULL;
	*count = 0;
	if (truncated)
		*truncated = false;
	c.max_file = lim ? lim->max_file_bytes : CFGFS_DEFAULT_MAX_FILE_BYTES;
	c.chunk = malloc(HASH_CHUNK);
	if (!c.chunk)
		return -ENOMEM;
	for (i = 0; i < nallowed && !r; i++) {
		if (!realpath(allowed[i], path))
			continue;
		dfd = open_dir_nofollow(path);
		if (dfd < 0)
			continue;
		r = list_walk(&c, dfd, path, strlen(path), 1);
	}
	free(c.chunk);
	if (r) {
		cfgfs_list_free(c.v, c.n);
		return r;
	}
	if (c.n > 1) {
		qsort(c.v, c.n, sizeof(*c.v), entry_cmp);
		/* overlapping allowed dirs list some files twice */
		for (i = 1, j = 1; i < c.n; i++) {
			if (!strcmp(c.v[i].path, c.v[j - 1].path))
				free(c.v[i].path);
			else
				c.v[j++] = c.v[i];
		}
		c.n = j;
	}
	if (!c.n) {
		free(c.v);
		c.v = NULL;
	}
	*out = c.v;
	*count = c.n;
	if (truncated)
		*truncated = c.truncated;
	return 0;
}

void cfgfs_list_free(struct cfgfs_entry *e, size_t count)
{
	size_t i;

	if (!e)
		return;
	for (i = 0; i < count; i++)
		free(e[i].path);
	free(e);
}

/* ---- transactions ---- */

struct txn_file {
	char *path;		/* resolved */
	bool existed;
	enum cfgfs_op op;
	uint8_t *data;		/* backup content (existed) */
	size_t len;
	mode_t mode;		/* & 07777 */
	uid_t uid;
	gid_t gid;
	struct timespec times[2];	/* atime, mtime */
	char sha_before[SHA256_HEX_LEN + 1];
	char sha_after[SHA256_HEX_LEN + 1];
};

struct cfgfs_txn {
	struct txn_file *f;
	size_t n, cap;
	size_t backup_bytes, backup_max;
	char err[PATH_MAX + 128];
};

__attribute__((format(printf, 2, 3)))
static void txn_err(struct cfgfs_txn *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
}

struct cfgfs_txn *cfgfs_txn_new(size_t max_backup_bytes)
{
	struct cfgfs_txn *t = calloc(1, sizeof(*t));

	if (t)
		t->backup_max = max_backup_bytes ? max_backup_bytes : CFGFS_BACKUP_DEFAULT_MAX;
	return t;
}

void cfgfs_txn_free(struct cfgfs_txn *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->n; i++) {
		free(t->f[i].path);
		free(t->f[i].data);
	}
	free(t->f);
	free(t);
}

static struct txn_file *txn_find(struct cfgfs_txn *t, const char *path)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (!strcmp(t->f[i].path, path))
			return &t->f[i];
	return NULL;
}

int cfgfs_txn_backup(struct cfgfs_txn *t, const char *resolved)
{
	struct txn_file f = { 0 }, *nf;
	const char *name;
	struct stat st;
	int dfd, fd, r;

	if (txn_find(t, resolved))
		return 0;
	dfd = open_parent(resolved, &name);
	if (dfd < 0) {
		txn_err(t, "backup %s: %s", resolved, strerror(-dfd));
		return dfd;
	}
	fd = open_regular(dfd, name, &st);
	close(dfd);
	if (fd == -ENOENT) {
		f.existed = false;
	} else if (fd < 0) {
		txn_err(t, "backup %s: %s", resolved,
			fd == -EPERM ? "not a regular file" : strerror(-fd));
		return fd;
	} else {
		if ((uint64_t)st.st_size > t->backup_max - t->backup_bytes)
			r = -EFBIG;
		else
			r = read_bounded(fd, t->backup_max - t->backup_bytes, (size_t)st.st_size,
					 &f.data, &f.len);
		close(fd);
		if (r) {
			txn_err(t, "backup %s: %s", resolved,
				r == -EFBIG ? "larger than the backup limit" : strerror(-r));
			return r;
		}
		f.existed = true;
		f.mode = st.st_mode & 07777;
		f.uid = st.st_uid;
		f.gid = st.st_gid;
		f.times[0] = st.st_atim;
		f.times[1] = st.st_mtim;
		sha256_hex(f.data, f.len, f.sha_before);
	}
	f.path = strdup(resolved);
	if (!f.path)
		goto nomem;
	if (t->n == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 16;

		nf = realloc(t->f, ncap * sizeof(*nf));
		if (!nf)
			goto nomem;
		t->f = nf;
		t->cap = ncap;
	}
	t->f[t->n++] = f;
	t->backup_bytes += f.len;
	return 0;
nomem:
	free(f.path);
	free(f.data);
	txn_err(t, "backup %s: out of memory", resolved);
	return -ENOMEM;
}

/* ".NAME.cfgfs-" + 12 random hex digits; the leading dot keeps it out of
 * globs like "conf.d/ *.conf" (and the random tail out of "*.conf"). */
static void temp_name(const char *name, char out[NAME_MAX + 1])
{
	static unsigned int counter;	/* only when getrandom fails */
	uint8_t rnd[6];
	size_t n = strlen(name);
	int i;

	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		struct timespec ts;
		uint64_t x;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		x = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20) ^ ((uint64_t)__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) << 40);
		for (i = 0; i < 6; i++)
			rnd[i] = (uint8_t)(x >> (8 * i));
	}
	if (n > TEMP_NAME_KEEP)
		n = TEMP_NAME_KEEP;
	snprintf(out, NAME_MAX + 1, ".%.*s" TEMP_TAG "%02x%02x%02x%02x%02x%02x", (int)n, name,
		 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
}

/* Write data to a new temp file in dfd and rename it over name. times may
 * be NULL (now). *renamed tells whether the rename happened (then only the
 * directory fsync can have failed). On error the step is in *step. */
static int replace_file(int dfd, const char *name, const uint8_t *data, size_t len,
			mode_t mode, uid_t uid, gid_t gid, const struct timespec *times,
			bool *renamed, const char **step)
{
	char tmp[NAME_MAX + 1];
	struct stat st;
	int fd = -1, r, tries;

	*renamed = false;
	for (tries = 0; tries < 8; tries++) {
		temp_name(name, tmp);
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC,
			    0600);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		*step = "create temp file";
		return -errno;
	}
	r = write_all(fd, data, len);
	if (r) {
		*step = "write";
		goto fail;
	}
	if (fstat(fd, &st)) {
		r = -errno;
		*step = "fstat";
		goto fail;
	}
	/* owner first: chown clears the set-id bits that fchmod then sets */
	if ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid)) {
		r = -errno;
		*step = "chown";
		goto fail;
	}
	if (fchmod(fd, mode & 07777)) {
		r = -errno;
		*step = "chmod";
		goto fail;
	}
	if (times && futimens(fd, times)) {
		r = -errno;
		*step = "set times";
		goto fail;
	}
	/* data on disk before the name points at it */
	if (fsync(fd)) {
		r = -errno;
		*step = "fsync";
		goto fail;
	}
	r = close(fd);
	fd = -1;
	if (r) {
		r = -errno;
		*step = "close";
		goto fail;
	}
	if (renameat(dfd, tmp, dfd, name)) {
		r = -errno;
		*step = "rename";
		goto fail;
	}
	*renamed = true;
	/* the rename durable before anyone is told it happened */
	if (fsync(dfd)) {
		*step = "fsync directory";
		return -errno;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(dfd, tmp, 0);
	return r;
}

int cfgfs_txn_write(struct cfgfs_txn *t, const char *resolved, const uint8_t *data, size_t len)
{
	struct txn_file *f = txn_find(t, resolved);
	const char *name, *step = "";
	struct stat st, dst;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	bool renamed;
	int dfd, r;

	if (!f) {
		txn_err(t, "write %s: not backed up", resolved);
		return -EINVAL;
	}
	dfd = open_parent(resolved, &name);
	if (dfd < 0) {
		txn_err(t, "write %s: open directory: %s", resolved, strerror(-dfd));
		return dfd;
	}
	if (!fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		if (!S_ISREG(st.st_mode)) {
			close(dfd);
			txn_err(t, "write %s: not a regular file", resolved);
			return S_ISDIR(st.st_mode) ? -EISDIR : -EPERM;
		}
		mode = st.st_mode & 07777;
		uid = st.st_uid;
		gid = st.st_gid;
	} else if (errno == ENOENT) {
		if (fstat(dfd, &dst)) {
			r = -errno;
			close(dfd);
			txn_err(t, "write %s: stat directory: %s", resolved, strerror(-r));
			return r;
		}
		mode = 0644;
		uid = geteuid();
		gid = dst.st_gid ? dst.st_gid : getegid();
	} else {
		r = -errno;
		close(dfd);
		txn_err(t, "write %s: %s", resolved, strerror(-r));
		return r;
	}
	r = replace_file(dfd, name, data, len, mode, uid, gid, NULL, &renamed, &step);
	close(dfd);
	if (renamed) {
		f->op = CFGFS_OP_WRITE;
		sha256_hex(data, len, f->sha_after);
	}
	if (r)
		txn_err(t, "write %s: %s: %s", resolved, step, strerror(-r));
	return r;
}

int cfgfs_txn_delete(struct cfgfs_txn *t, const char *resolved)
{
	struct txn_file *f = txn_find(t, resolved);
	const char *name;
	struct stat st;
	int dfd, r;

	if (!f) {
		txn_err(t, "delete %s: not backed up", resolved);
		return -EINVAL;
	}
	dfd = open_parent(resolved, &name);
	if (dfd < 0) {
		txn_err(t, "delete %s: open directory: %s", resolved, strerror(-dfd));
		return dfd;
	}
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EPERM;
		close(dfd);
		txn_err(t, "delete %s: not a regular file", resolved);
		return r;
	}
	if (unlinkat(dfd, name, 0)) {
		r = -errno;
		goto out;
	}
	f->op = CFGFS_OP_DELETE;
	f->sha_after[0] = '\0';
	r = fsync(dfd) ? -errno : 0;
out:
	close(dfd);
	if (r)
		txn_err(t, "delete %s: %s", resolved, strerror(-r));
	return r;
}

/* The file name in dfd is exactly the backup (content, mode, owner). */
static bool same_as_backup(int dfd, const char *name, const struct txn_file *f)
{
	uint8_t *data;
	struct stat st;
	size_t len;
	bool same;
	int fd;

	fd = open_regular(dfd, name, &st);
	if (fd < 0)
		return false;
	same = (uint64_t)st.st_size == f->len && (st.st_mode & 07777) == f->mode &&
	       st.st_uid == f->uid && st.st_gid == f->gid &&
	       !read_bounded(fd, f->len, f->len, &data, &len);
	close(fd);
	if (!same)
		return false;
	same = len == f->len && !memcmp(data, f->data, len);
	free(data);
	return same;
}

static int restore_one(struct cfgfs_txn *t, const struct txn_file *f)
{
	const char *name, *step = "";
	bool renamed;
	int dfd, r;

	dfd = open_parent(f->path, &name);
	if (dfd < 0) {
		txn_err(t, "restore %s: open directory: %s", f->path, strerror(-dfd));
		return dfd;
	}
	if (!f->existed) {
		r = unlinkat(dfd, name, 0) ? -errno : 0;
		if (!r && fsync(dfd))
			r = -errno;
		if (r == -ENOENT)
			r = 0;
		if (r)
			txn_err(t, "restore %s: remove new file: %s", f->path, strerror(-r));
		close(dfd);
		return r;
	}
	if (same_as_backup(dfd, name, f)) {
		close(dfd);
		return 0;
	}
	r = replace_file(dfd, name, f->data, f->len, f->mode, f->uid, f->gid, f->times,
			 &renamed, &step);
	if ((r == -ENOSPC || r == -EDQUOT) && !renamed) {
		/* the content to be replaced holds the space the backup needs */
		if (!unlinkat(dfd, name, 0) || errno == ENOENT)
			r = replace_file(dfd, name, f->data, f->len, f->mode, f->uid, f->gid,
					 f->times, &renamed, &step);
	}
	close(dfd);
	if (r)
		txn_err(t, "restore %s: %s: %s", f->path, step, strerror(-r));
	return r;
}

int cfgfs_txn_restore(struct cfgfs_txn *t)
{
	char first_err[sizeof(t->err)] = "";
	int first = 0, r;
	size_t i;

	for (i = t->n; i-- > 0;) {
		r = restore_one(t, &t->f[i]);
		if (r && !first) {
			first = r;
			memcpy(first_err, t->err, sizeof(first_err));
		}
	}
	if (first)
		memcpy(t->err, first_err, sizeof(first_err));
	return first;
}

size_t cfgfs_txn_count(const struct cfgfs_txn *t)
{
	return t->n;
}

const char *cfgfs_txn_path(const struct cfgfs_txn *t, size_t i)
{
	return i < t->n ? t->f[i].path : NULL;
}

const char *cfgfs_txn_sha_before(const struct cfgfs_txn *t, size_t i)
{
	return i < t->n ? t->f[i].sha_before : NULL;
}

const char *cfgfs_txn_sha_after(const struct cfgfs_txn *t, size_t i)
{
	return i < t->n ? t->f[i].sha_after : NULL;
}

bool cfgfs_txn_existed(const struct cfgfs_txn *t, size_t i)
{
	return i < t->n && t->f[i].existed;
}

enum cfgfs_op cfgfs_txn_op(const struct cfgfs_txn *t, size_t i)
{
	return i < t->n ? t->f[i].op : CFGFS_OP_NONE;
}

const char *cfgfs_txn_error(const struct cfgfs_txn *t)
{
	return t->err;
}

/* ---- base64 ---- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int cfgfs_base64_decode(const char *in, size_t inlen, uint8_t **out, size_t *outlen)
{
	size_t i, o = 0, pad = 0, olen;
	uint8_t *buf;
	int v[4], j;
	uint32_t w;

	*out = NULL;
	*outlen = 0;
	if (inlen % 4)
		return -EINVAL;
	if (inlen && in[inlen - 1] == '=') {
		pad = 1;
		if (in[inlen - 2] == '=')
			pad = 2;
	}
	olen = inlen / 4 * 3 - pad;
	buf = malloc(olen + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < inlen; i += 4) {
		int nval = i + 4 == inlen ? 4 - (int)pad : 4;

		for (j = 0; j < 4; j++) {
			v[j] = j < nval ? b64_value((unsigned char)in[i + j]) : 0;
			if (v[j] < 0)
				goto bad;	/* also a '=' before the end */
		}
		w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		/* non-canonical: bits past the last byte must be zero */
		if ((nval == 3 && (v[2] & 3)) || (nval == 2 && (v[1] & 15)))
			goto bad;
		buf[o++] = (uint8_t)(w >> 16);
		if (nval > 2)
			buf[o++] = (uint8_t)(w >> 8);
		if (nval > 3)
			buf[o++] = (uint8_t)w;
	}
	buf[o] = '\0';
	*out = buf;
	*outlen = o;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}

char *cfgfs_base64_encode(const uint8_t *in, size_t len, size_t *outlen)
{
	size_t i, o = 0, n;
	uint32_t w;
	char *s;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return NULL;
	n = (len + 2) / 3 * 4;
	s = malloc(n + 1);
	if (!s)
		return NULL;
	for (i = 0; i + 3 <= len; i += 3) {
		w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		s[o++] = b64_alphabet[w >> 18];
		s[o++] = b64_alphabet[(w >> 12) & 63];
		s[o++] = b64_alphabet[(w >> 6) & 63];
		s[o++] = b64_alphabet[w & 63];
	}
	if (len - i == 1) {
		w = (uint32_t)in[i] << 16;
		s[o++] = b64_alphabet[w >> 18];
		s[o++] = b64_alphabet[(w >> 12) & 63];
		s[o++] = '=';
		s[o++] = '=';
	} else if (len - i == 2) {
		w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		s[o++] = b64_alphabet[w >> 18];
		s[o++] = b64_alphabet[(w >> 12) & 63];
		s[o++] = b64_alphabet[(w >> 6) & 63];
		s[o++] = '=';
	}
	s[o] = '\0';
	if (outlen)
		*outlen = o;
	return s;
}
