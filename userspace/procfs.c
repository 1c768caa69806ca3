/* Readers and parsers for /proc.
 *
 * Design: every file is read whole with one open/read loop/close into a
 * buffer of bounded size (a small stack buffer for the per-process files
 * whose size the kernel bounds, a heap buffer that doubles up to a per-file
 * cap for the host files that grow with the machine), then parsed from
 * (text, len). Reading whole keeps seq_file output consistent (the kernel
 * fills it in one go) and keeps the parsers pure, so they are unit tested
 * on recorded fixtures and fuzzed. The parsers walk the text with spans
 * (pointer + length) and their own digit loops: no strto*() or sscanf(),
 * which would need a NUL and would happily run past a truncated field.
 *
 * Per-process files are opened relative to one O_PATH fd of /proc/PID, so
 * every read refers to the same process even if the pid is reused midway
 * (the directory fd goes stale instead of pointing at the new process).
 *
 * Nothing is cached across calls; the only static state is which host
 * sources have already been logged as unavailable, so a missing
 * /proc/pressure is reported once and not at every sampling interval. */
#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

/* Caps on whole-file reads. /proc/stat carries one line per cpu and an intr
 * line with one number per interrupt, which is large on big machines. */
#define STAT_CAP	(1u << 20)
#define MOUNTINFO_CAP	(256u << 10)
#define MEMINFO_CAP	(64u << 10)
#define DEVLIST_CAP	(1u << 20)	/* diskstats, net/dev: ~150 B per device, and
					 * container hosts have thousands of veths */
#define LOADAVG_CAP	4096u
#define FILESYSTEMS_CAP	(16u << 10)
#define STATUS_CAP	(64u << 10)	/* Cpus_allowed grows with nr_cpus */
#define CHILDREN_CAP	(1u << 20)
#define READ_INITIAL	4096u

/* Longest label value taken from a device or cpu name. Kernel names are
 * far shorter (DISK_NAME_LEN 32, IFNAMSIZ 16). */
#define NAME_MAX_LEN	64

/* ---- whole-file reading ---- */

/* Read from fd until n bytes or EOF. Returns the byte count or -errno. */
static ssize_t read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* The buffer is full: is there more? A file that exactly fills the buffer
 * is fine; one more byte means it does not fit. */
static int check_eof(int fd)
{
	char c;
	ssize_t r = read_full(fd, &c, 1);

	if (r < 0)
		return (int)r;
	return r ? -EFBIG : 0;
}

static int open_file(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	return fd < 0 ? -errno : fd;
}

/* Whole file into a caller buffer; -EFBIG if it does not fit. */
static int read_fixed(int dirfd, const char *path, char *buf, size_t size, size_t *len)
{
	int fd = open_file(dirfd, path);
	ssize_t r;
	int err = 0;

	if (fd < 0)
		return fd;
	r = read_full(fd, buf, size);
	if (r < 0)
		err = (int)r;
	else if ((size_t)r == size)
		err = check_eof(fd);
	close(fd);
	if (err)
		return err;
	*len = (size_t)r;
	return 0;
}

/* Whole file into a heap buffer that starts small and doubles up to cap.
 * On success the caller frees *out (never NULL, even for an empty file). */
static int read_alloc(int dirfd, const char *path, size_t cap, char **out, size_t *len)
{
	size_t size = cap < READ_INITIAL ? cap : READ_INITIAL;
	size_t used = 0;
	char *buf = NULL;
	int err = 0;
	int fd = open_file(dirfd, path);

	if (fd < 0)
		return fd;
	for (;;) {
		char *p = realloc(buf, size ? size : 1);
		if (!p) {
			err = -ENOMEM;
			break;
		}
		buf = p;
		ssize_t r = read_full(fd, buf + used, size - used);
		if (r < 0) {
			err = (int)r;
			break;
		}
		used += (size_t)r;
		if (used < size)
			break;
		if (size >= cap) {
			err = check_eof(fd);
			break;
		}
		size = size > cap / 2 ? cap : size * 2;
	}
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	*out = buf;
	*len = used;
	return 0;
}

/* ---- text spans ---- */

struct span {
	const char *p;
	size_t n;
};

static struct span span_of(const char *p, size_t n)
{
	struct span s = { p, n };
	return s;
}

/* Next line (without its '\n') of the text left in *rest. */
static bool next_line(struct span *rest, struct span *line)
{
	const char *nl;

	if (!rest->n)
		return false;
	nl = memchr(rest->p, '\n', rest->n);
	line->p = rest->p;
	line->n = nl ? (size_t)(nl - rest->p) : rest->n;
	rest->p += line->n + (nl ? 1 : 0);
	rest->n -= line->n + (nl ? 1 : 0);
	return true;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Next run of non-blank bytes in *s, which is advanced past it. */
static bool next_token(struct span *s, struct span *tok)
{
	while (s->n && is_blank(*s->p)) {
		s->p++;
		s->n--;
	}
	if (!s->n)
		return false;
	tok->p = s->p;
	while (s->n && !is_blank(*s->p)) {
		s->p++;
		s->n--;
	}
	tok->n = (size_t)(s->p - tok->p);
	return true;
}

static bool span_eq(struct span s, const char *lit)
{
	size_t n = strlen(lit);

	return s.n == n && memcmp(s.p, lit, n) == 0;
}

static bool span_starts(struct span s, const char *lit)
{
	size_t n = strlen(lit);

	return s.n >= n && memcmp(s.p, lit, n) == 0;
}

static struct span span_trim(struct span s)
{
	while (s.n && is_blank(s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n && is_blank(s.p[s.n - 1]))
		s.n--;
	return s;
}

/* Split "key: value" at the first ':'; value is trimmed. */
static bool split_key(struct span line, struct span *key, struct span *val)
{
	const char *c = memchr(line.p, ':', line.n);

	if (!c)
		return false;
	key->p = line.p;
	key->n = (size_t)(c - line.p);
	*val = span_trim(span_of(c + 1, line.n - key->n - 1));
	return key->n > 0;
}

/* Unsigned decimal, digits only, no overflow. */
static int span_u64(struct span s, uint64_t *v)
{
	uint64_t x = 0;

	if (!s.n)
		return -EINVAL;
	for (size_t i = 0; i < s.n; i++) {
		unsigned d = (unsigned char)s.p[i] - '0';
		if (d > 9 || x > (UINT64_MAX - d) / 10)
			return -EINVAL;
		x = x * 10 + d;
	}
	*v = x;
	return 0;
}

/* Signed decimal (some stat fields are printed signed). */
static int span_i64(struct span s, int64_t *v)
{
	bool neg = s.n && s.p[0] == '-';
	uint64_t x;

	if (neg) {
		s.p++;
		s.n--;
	}
	if (span_u64(s, &x) || x > (uint64_t)INT64_MAX)
		return -EINVAL;
	*v = neg ? -(int64_t)x : (int64_t)x;
	return 0;
}

/* "12.34" as in loadavg: digits, optionally '.' and digits. Parsed by hand
 * because strtod needs a NUL and follows the locale's decimal point. */
static int span_decimal(struct span s, double *v)
{
	const char *dot = memchr(s.p, '.', s.n);
	struct span ip = span_of(s.p, dot ? (size_t)(dot - s.p) : s.n);
	uint64_t i, f = 0, scale = 1;

	if (span_u64(ip, &i))
		return -EINVAL;
	if (dot) {
		struct span fp = span_of(dot + 1, s.n - ip.n - 1);
		if (!fp.n)
			return -EINVAL;
		for (size_t k = 0; k < fp.n; k++) {
			unsigned d = (unsigned char)fp.p[k] - '0';
			if (d > 9)
				return -EINVAL;
			if (scale < 1000000000ull) {	/* later digits add nothing */
				f = f * 10 + d;
				scale *= 10;
			}
		}
	}
	*v = (double)i + (double)f / (double)scale;
	return 0;
}

/* Replace bytes that are not part of valid UTF-8 with '?': label values end
 * up in Prometheus text and JSON, which must be UTF-8, and mountpoints and
 * interface names are arbitrary bytes. */
static void sanitize_utf8(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		size_t n, i;
		unsigned cp;

		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0) {
			n = 2;
			cp = *p & 0x1f;
		} else if ((*p & 0xf0) == 0xe0) {
			n = 3;
			cp = *p & 0x0f;
		} else if ((*p & 0xf8) == 0xf0) {
			n = 4;
			cp = *p & 0x07;
		} else {
			*p++ = '?';
			continue;
		}
		for (i = 1; i < n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				break;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		/* truncated, overlong, surrogate or beyond U+10FFFF */
		if (i < n || (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
		    (n == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}

/* Copy a name token into a label buffer. NUL cannot be carried in a C
 * string, so a token holding one is garbage, as is an absurd length. */
static int span_label(struct span s, char *buf, size_t size)
{
	if (!s.n || s.n >= size || memchr(s.p, '\0', s.n))
		return -EINVAL;
	memcpy(buf, s.p, s.n);
	buf[s.n] = '\0';
	sanitize_utf8(buf);
	return 0;
}

static double ticks_per_second(void)
{
	long t = sysconf(_SC_CLK_TCK);

	return t > 0 ? (double)t : 100.0;
}

/* Parser result once every line was seen: a malformed line, or nothing
 * recognisable at all, makes the file -EINVAL. */
static int parse_result(bool bad, bool any)
{
	return bad || !any ? -EINVAL : 0;
}

/* Failing to add a sample is -ENOMEM unless the API is misused (-EIO here);
 * keep the two apart so only memory exhaustion aborts the whole
 * collection, and both apart from -EINVAL, which means bad text. */
static int add_err(int err)
{
	return err == -ENOMEM ? -ENOMEM : -EIO;
}

/* ---- per process ---- */

int procfs_parse_stat(const char *text, size_t len, struct proc_info *out)
{
	struct span head, rest, tok;
	const char *lp, *rp = NULL;
	struct proc_info pi;
	int64_t pid, ppid = 0, threads = 0;
	uint64_t utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
	long page = sysconf(_SC_PAGESIZE);
	double tck = ticks_per_second();

	if (!text || !len)
		return -EINVAL;
	/* comm is free text: take the first '(' and the last ')' so spaces and
	 * parentheses inside it do not shift the fields that follow. */
	lp = memchr(text, '(', len);
	if (!lp)
		return -EINVAL;
	for (const char *p = text + len; p > lp + 1; p--) {
		if (p[-1] == ')') {
			rp = p - 1;
			break;
		}
	}
	if (!rp)
		return -EINVAL;

	memset(&pi, 0, sizeof(pi));
	head = span_trim(span_of(text, (size_t)(lp - text)));
	if (span_i64(head, &pid) || pid <= 0 || pid > INT_MAX)
		return -EINVAL;
	pi.pid = (pid_t)pid;
	{
		size_t n = (size_t)(rp - lp - 1);
		if (n >= sizeof(pi.comm))
			n = sizeof(pi.comm) - 1;
		memcpy(pi.comm, lp + 1, n);
		pi.comm[n] = '\0';
	}

	/* Fields after comm, numbered as in proc(5): state is 3. */
	rest = span_of(rp + 1, len - (size_t)(rp + 1 - text));
	/* a stat file is one line; anything after it is not ours */
	{
		const char *nl = memchr(rest.p, '\n', rest.n);
		if (nl)
			rest.n = (size_t)(nl - rest.p);
	}
	for (int field = 3; field <= 24; field++) {
		int err = 0;

		if (!next_token(&rest, &tok))
			return -EINVAL;	/* truncated */
		switch (field) {
		case 3:
			if (tok.n != 1)
				return -EINVAL;
			pi.state = tok.p[0];
			break;
		case 4:
			err = span_i64(tok, &ppid);
			if (!err && (ppid < 0 || ppid > INT_MAX))
				err = -EINVAL;
			pi.ppid = (pid_t)ppid;
			break;
		case 14:
			err = span_u64(tok, &utime);
			break;
		case 15:
			err = span_u64(tok, &stime);
			break;
		case 20:
			err = span_i64(tok, &threads);
			if (!err && threads < 0)
				err = -EINVAL;
			break;
		case 22:
			err = span_u64(tok, &start);
			break;
		case 23:
			err = span_u64(tok, &vsize);
			break;
		case 24:
			err = span_u64(tok, &rss);
			break;
		default:
			break;
		}
		if (err)
			return err;
	}
	if (page <= 0)
		page = 4096;
	if (rss > UINT64_MAX / (uint64_t)page)
		return -EINVAL;
	pi.cpu_user_seconds = (double)utime / tck;
	pi.cpu_system_seconds = (double)stime / tck;
	pi.threads = (uint64_t)threads;
	pi.start_ticks = start;
	pi.vsize_bytes = vsize;
	pi.rss_bytes = rss * (uint64_t)page;
	pi.open_fds = -1;
	pi.read_bytes = pi.write_bytes = pi.rchar = pi.wchar = -1;
	pi.children = -1;
	*out = pi;
	return 0;
}

int procfs_parse_status(const char *text, size_t len, struct proc_info *out)
{
	struct span rest = span_of(text, len), line, key, val;
	uint64_t v;

	while (next_line(&rest, &line)) {
		if (!split_key(line, &key, &val) || !span_eq(key, "Threads"))
			continue;
		if (span_u64(val, &v))
			return -EINVAL;
		out->threads = v;
		return 0;
	}
	return -EINVAL;
}

int procfs_parse_io(const char *text, size_t len, struct proc_info *out)
{
	static const char *const keys[] = { "rchar", "wchar", "read_bytes", "write_bytes" };
	struct span rest = span_of(text, len), line, key, val;
	uint64_t v[4];
	unsigned seen = 0;

	while (next_line(&rest, &line)) {
		if (!line.n)
			continue;
		if (!split_key(line, &key, &val))
			return -EINVAL;
		for (size_t i = 0; i < 4; i++) {
			if (!span_eq(key, keys[i]))
				continue;
			if (span_u64(val, &v[i]) || v[i] > (uint64_t)INT64_MAX)
				return -EINVAL;
			seen |= 1u << i;
		}
	}
	if (seen != 0xf)
		return -EINVAL;
	out->rchar = (int64_t)v[0];
	out->wchar = (int64_t)v[1];
	out->read_bytes = (int64_t)v[2];
	out->write_bytes = (int64_t)v[3];
	return 0;
}

int procfs_parse_children(const char *text, size_t len, uint64_t *count)
{
	struct span rest = span_of(text, len), line, tok;
	uint64_t n = 0, pid;

	/* "PID PID ... " on one line; an empty file means no children */
	while (next_line(&rest, &line)) {
		while (next_token(&line, &tok)) {
			if (span_u64(tok, &pid) || pid == 0 || pid > INT_MAX)
				return -EINVAL;
			n++;
		}
	}
	*count = n;
	return 0;
}

int procfs_boot_time(const char *proc_root, double *btime)
{
	char path[PATH_MAX];
	char *text;
	size_t len;
	struct span rest, line, tok;
	uint64_t v;
	int err;

	if (snprintf(path, sizeof(path), "%s/stat", proc_root) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	err = read_alloc(AT_FDCWD, path, STAT_CAP, &text, &len);
	if (err)
		return err;
	err = -EINVAL;
	rest = span_of(text, len);
	while (next_line(&rest, &line)) {
		if (!next_token(&line, &tok) || !span_eq(tok, "btime"))
			continue;
		if (next_token(&line, &tok) && !span_u64(tok, &v)) {
			*btime = (double)v;
			err = 0;
		}
		break;
	}
	free(text);
	return err;
}

/* Boot time never changes while we run, and /proc/stat can be hundreds of
 * KiB on big hosts: read it once per proc root (the agent only ever uses
 * one; the core loop is the only caller, so no locking). */
static int cached_boot_time(const char *proc_root, double *btime)
{
	static char root[256];
	static double cached;
	if (root[0] && strcmp(root, proc_root) == 0) {
		*btime = cached;
		return 0;
	}
	int err = procfs_boot_time(proc_root, &cached);
	if (err)
		return err;
	snprintf(root, sizeof(root), "%s", proc_root);
	*btime = cached;
	return 0;
}

/* Entries of a directory except "." and ".."; -errno if unreadable. */
static int64_t count_dir(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int64_t n = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		int err = -errno;
		close(fd);
		return err;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	}
	if (errno)
		n = -errno;
	closedir(d);
	return n;
}

/* Sum of the children files of every thread: each lists the children that
 * thread forked, so the union over threads is the process' children. */
static int64_t count_children(int piddir)
{
	int taskfd = openat(piddir, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int64_t total = 0;

	if (taskfd < 0)
		return -1;
	d = fdopendir(taskfd);
	if (!d) {
		close(taskfd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		char rel[NAME_MAX + 16];
		char *text;
		size_t len;
		uint64_t n;
		struct stat st;
		int err;

		if (de->d_name[0] == '.')
			continue;
		snprintf(rel, sizeof(rel), "%s/children", de->d_name);
		err = read_alloc(dirfd(d), rel, CHILDREN_CAP, &text, &len);
		if (err == -ENOENT || err == -ESRCH) {
			/* A thread that exited since readdir is skipped; a thread
			 * that is there without the file means a kernel without
			 * CONFIG_PROC_CHILDREN: unavailable. */
			if (fstatat(dirfd(d), de->d_name, &st, 0) == 0) {
				total = -1;
				break;
			}
			continue;
		}
		if (err) {
			total = -1;
			break;
		}
		err = procfs_parse_children(text, len, &n);
		free(text);
		if (err) {
			total = -1;
			break;
		}
		total += (int64_t)n;
	}
	closedir(d);
	return total;
}

int procfs_read_proc(const char *proc_root, pid_t pid, struct proc_info *out)
{
	char path[PATH_MAX];
	char small[4096];	/* stat and io: a few hundred bytes; comm is <= 64 */
	char *text;
	size_t len;
	struct proc_info pi;
	double btime;
	int64_t n;
	int piddir, err;

	if (pid <= 0)
		return -EINVAL;
	if (snprintf(path, sizeof(path), "%s/%d", proc_root, (int)pid) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	piddir = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (piddir < 0)
		return -errno;

	err = read_fixed(piddir, "stat", small, sizeof(small), &len);
	if (!err)
		err = procfs_parse_stat(small, len, &pi);
	if (!err && pi.pid != pid)
		err = -EINVAL;
	if (err)
		goto out;

	/* status gives the same count as stat field 20; stat's value stays as
	 * the fallback when status cannot be read or parsed. */
	if (!read_alloc(piddir, "status", STATUS_CAP, &text, &len)) {
		procfs_parse_status(text, len, &pi);
		free(text);
	}

	/* io needs ptrace access; without it (or without task io accounting)
	 * the fields stay -1 */
	if (!read_fixed(piddir, "io", small, sizeof(small), &len))
		procfs_parse_io(small, len, &pi);

	n = count_dir(piddir, "fd");
	pi.open_fds = n < 0 ? -1 : n;
	pi.children = count_children(piddir);

	/* A start time is still useful relative to other processes; 0 marks
	 * an unknown boot time rather than failing the whole read. */
	if (cached_boot_time(proc_root, &btime) == 0)
		pi.start_time = btime + (double)pi.start_ticks / ticks_per_second();
	else
		pi.start_time = 0;
	*out = pi;
out:
	close(piddir);
	return err;
}

int procfs_read_exe(const char *proc_root, pid_t pid, char *out, size_t outlen)
{
	static const char deleted[] = " (deleted)";
	const size_t dlen = sizeof(deleted) - 1;
	char path[PATH_MAX];
	ssize_t n;

	if (!outlen || pid <= 0)
		return -EINVAL;
	if (snprintf(path, sizeof(path), "%s/%d/exe", proc_root, (int)pid) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	n = readlink(path, out, outlen);
	if (n < 0)
		return -errno;
	if ((size_t)n >= outlen)
		return -ENAMETOOLONG;
	out[n] = '\0';
	if ((size_t)n > dlen && memcmp(out + n - dlen, deleted, dlen) == 0)
		out[n - dlen] = '\0';
	return 0;
}

/* ---- host ---- */

static const char *const cpu_modes[] = {
	"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
};

/* Single-number lines of /proc/stat. */
static const struct {
	const char *key;
	const char *metric;
	enum metric_type type;
	const char *help;
} stat_lines[] = {
	{ "ctxt", "node_context_switches_total", MT_COUNTER, "Total number of context switches." },
	{ "processes", "node_forks_total", MT_COUNTER, "Total number of forks." },
	{ "intr", "node_intr_total", MT_COUNTER, "Total number of interrupts serviced." },
	{ "procs_running", "node_procs_running", MT_GAUGE, "Number of processes in runnable state." },
	{ "procs_blocked", "node_procs_blocked", MT_GAUGE,
	  "Number of processes blocked waiting for I/O to complete." },
	{ "btime", "node_boot_time_seconds", MT_GAUGE, "Node boot time, in unixtime." },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int parse_cpu_line(struct span name, struct span line, double tck, struct metrics *m)
{
	char cpu[NAME_MAX_LEN];
	struct span tok, id = span_of(name.p + 3, name.n - 3);
	uint64_t v[NELEM(cpu_modes)], dummy;
	size_t n = 0;
	int err;

	if (span_u64(id, &dummy) || span_label(id, cpu, sizeof(cpu)))
		return -EINVAL;
	while (next_token(&line, &tok)) {
		uint64_t x;
		if (span_u64(tok, &x))
			return -EINVAL;
		if (n < NELEM(v))
			v[n] = x;
		n++;
	}
	if (n < 4)	/* user nice system idle exist on every kernel */
		return -EINVAL;
	if (n > NELEM(v))
		n = NELEM(v);
	for (size_t i = 0; i < n; i++) {
		err = metrics_add(m, "node_cpu_seconds_total", (double)v[i] / tck,
				  "cpu", cpu, "mode", cpu_modes[i], NULL);
		if (err)
			return add_err(err);
	}
	return 0;
}

int procfs_parse_host_stat(const char *text, size_t len, struct metrics *m)
{
	struct span rest = span_of(text, len), line, key, tok;
	double tck = ticks_per_second();
	bool bad = false, any_cpu = false;
	int err;

	err = metrics_declare(m, "node_cpu_seconds_total", MT_COUNTER,
			      "Seconds the CPUs spent in each mode.");
	for (size_t i = 0; !err && i < NELEM(stat_lines); i++)
		err = metrics_declare(m, stat_lines[i].metric, stat_lines[i].type, stat_lines[i].help);
	if (err)
		return add_err(err);

	while (next_line(&rest, &line)) {
		if (!next_token(&line, &key))
			continue;
		if (span_starts(key, "cpu")) {
			if (key.n == 3)
				continue;	/* the all-cpu sum */
			err = parse_cpu_line(key, line, tck, m);
			if (err == -ENOMEM || err == -EIO)
				return err;
			if (err)
				bad = true;
			else
				any_cpu = true;
			continue;
		}
		for (size_t i = 0; i < NELEM(stat_lines); i++) {
			uint64_t v;

			if (!span_eq(key, stat_lines[i].key))
				continue;
			/* intr: the total is the first number; the per-irq rest
			 * can be thousands of columns and is not exported */
			if (!next_token(&line, &tok) || span_u64(tok, &v)) {
				bad = true;
				break;
			}
			err = metrics_add(m, stat_lines[i].metric, (double)v, NULL);
			if (err)
				return add_err(err);
			break;
		}
	}
	/* other keys (page, swap, softirq, ...) are ignored, but a file with
	 * no per-cpu line at all is not /proc/stat */
	return parse_result(bad, any_cpu);
}

int procfs_parse_loadavg(const char *text, size_t len, struct metrics *m)
{
	static const char *const names[] = { "node_load1", "node_load5", "node_load15" };
	static const char *const helps[] = { "1m load average.", "5m load average.", "15m load average." };
	struct span rest = span_of(text, len), line, tok;
	double v[3];
	int err;

	for (size_t i = 0; i < 3; i++) {
		err = metrics_declare(m, names[i], MT_GAUGE, helps[i]);
		if (err)
			return add_err(err);
	}
	if (!next_line(&rest, &line))
		return -EINVAL;
	for (size_t i = 0; i < 3; i++) {
		if (!next_token(&line, &tok) || span_decimal(tok, &v[i]))
			return -EINVAL;
	}
	for (size_t i = 0; i < 3; i++) {
		err = metrics_add(m, names[i], v[i], NULL);
		if (err)
			return add_err(err);
	}
	return 0;
}

int procfs_parse_meminfo(const char *text, size_t len, struct metrics *m)
{
	/* meminfo key -> metric name part. snake_case, unlike node_exporter's
	 * node_memory_MemTotal_bytes, because promtool's lint (which our
	 * /metrics must pass) rejects camelCase names. */
	static const char *const keys[] = {
		"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached",
		"SwapTotal", "SwapFree", "Shmem", "SReclaimable",
	};
	static const char *const names[] = {
		"total", "free", "available", "buffers", "cached",
		"swap_total", "swap_free", "shmem", "sreclaimable",
	};
	struct span rest = span_of(text, len), line, key, val, tok;
	char name[96];
	bool bad = false, total = false;
	int err;

	for (size_t i = 0; i < NELEM(keys); i++) {
		char help[96];
		snprintf(name, sizeof(name), "node_memory_%s_bytes", names[i]);
		snprintf(help, sizeof(help), "%s from /proc/meminfo, in bytes.", keys[i]);
		err = metrics_declare(m, name, MT_GAUGE, help);
		if (err)
			return add_err(err);
	}
	while (next_line(&rest, &line)) {
		uint64_t v;
		double bytes;
		size_t i;

		if (!span_trim(line).n)
			continue;
		if (!split_key(line, &key, &val) || !next_token(&val, &tok) || span_u64(tok, &v)) {
			bad = true;
			continue;
		}
		/* "HugePages_Total:  0" has no unit; sizes are "N kB" */
		bytes = (double)v;
		if (next_token(&val, &tok)) {
			if (!span_eq(tok, "kB") || next_token(&val, &tok)) {
				bad = true;
				continue;
			}
			bytes *= 1024.0;
		}
		for (i = 0; i < NELEM(keys) && !span_eq(key, keys[i]); i++)
			;
		if (i == NELEM(keys))
			continue;
		if (i == 0)
			total = true;
		snprintf(name, sizeof(name), "node_memory_%s_bytes", names[i]);
		err = metrics_add(m, name, bytes, NULL);
		if (err)
			return add_err(err);
	}
	return parse_result(bad, total);
}

static const struct {
	const char *metric;
	const char *help;
	unsigned field;		/* index among the counters after the name */
	double scale;
} disk_fields[] = {
	{ "node_disk_reads_completed_total", "The total number of reads completed successfully.", 0, 1.0 },
	{ "node_disk_read_bytes_total", "The total number of bytes read successfully.", 2, 512.0 },
	{ "node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", 3, 0.001 },
	{ "node_disk_writes_completed_total", "The total number of writes completed successfully.", 4, 1.0 },
	{ "node_disk_written_bytes_total", "The total number of bytes written successfully.", 6, 512.0 },
	{ "node_disk_write_time_seconds_total", "The total number of seconds spent by all writes.", 7, 0.001 },
	{ "node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", 9, 0.001 },
};

/* diskstats has 11 counters after the name since 2.6.25, more on newer
 * kernels (discard, flush); the first 11 are all we use. */
#define DISK_MIN_COUNTERS 11

static int parse_disk_line(struct span line, struct metrics *m)
{
	char dev[NAME_MAX_LEN];
	struct span tok, name;
	uint64_t v[DISK_MIN_COUNTERS], x;
	size_t n = 0;
	bool zero = true;
	int err;

	/* major minor name */
	if (!next_token(&line, &tok) || span_u64(tok, &x) ||
	    !next_token(&line, &tok) || span_u64(tok, &x) ||
	    !next_token(&line, &name) || span_label(name, dev, sizeof(dev)))
		return -EINVAL;
	while (next_token(&line, &tok)) {
		if (span_u64(tok, &x))
			return -EINVAL;
		if (n < DISK_MIN_COUNTERS)
			v[n] = x;
		zero = zero && x == 0;
		n++;
	}
	if (n < DISK_MIN_COUNTERS)
		return -EINVAL;
	/* unused loop and ram devices: dozens of all-zero series */
	if (zero && (span_starts(name, "loop") || span_starts(name, "ram")))
		return 0;
	for (size_t i = 0; i < NELEM(disk_fields); i++) {
		double val = (double)v[disk_fields[i].field] * disk_fields[i].scale;

		err = metrics_add(m, disk_fields[i].metric, val, "device", dev, NULL);
		if (err)
			return add_err(err);
	}
	return 0;
}

int procfs_parse_diskstats(const char *text, size_t len, struct metrics *m)
{
	struct span rest = span_of(text, len), line;
	bool bad = false;
	int err;

	for (size_t i = 0; i < NELEM(disk_fields); i++) {
		err = metrics_declare(m, disk_fields[i].metric, MT_COUNTER, disk_fields[i].help);
		if (err)
			return add_err(err);
	}
	while (next_line(&rest, &line)) {
		if (!span_trim(line).n)
			continue;
		err = parse_disk_line(line, m);
		if (err == -ENOMEM || err == -EIO)
			return err;
		if (err)
			bad = true;
	}
	/* an empty file is a machine without block devices, not an error */
	return parse_result(bad, true);
}

static const struct {
	const char *metric;
	const char *help;
	unsigned field;		/* index among the 16 counters */
} net_fields[] = {
	{ "node_network_receive_bytes_total", "Network device statistic receive_bytes.", 0 },
	{ "node_network_receive_packets_total", "Network device statistic receive_packets.", 1 },
	{ "node_network_receive_errs_total", "Network device statistic receive_errs.", 2 },
	{ "node_network_receive_drop_total", "Network device statistic receive_drop.", 3 },
	{ "node_network_transmit_bytes_total", "Network device statistic transmit_bytes.", 8 },
	{ "node_network_transmit_packets_total", "Network device statistic transmit_packets.", 9 },
	{ "node_network_transmit_errs_total", "Network device statistic transmit_errs.", 10 },
	{ "node_network_transmit_drop_total", "Network device statistic transmit_drop.", 11 },
};

#define NET_COUNTERS 16

static int parse_net_line(struct span line, struct metrics *m)
{
	char dev[NAME_MAX_LEN];
	struct span key, val, tok;
	uint64_t v[NET_COUNTERS], x;
	size_t n = 0;
	int err;

	/* "  eth0: 123 ..."; interface names cannot contain ':' or blanks,
	 * and old kernels glue the first number to the colon */
	if (!split_key(line, &key, &val))
		return -EINVAL;
	key = span_trim(key);
	if (span_label(key, dev, sizeof(dev)))
		return -EINVAL;
	while (next_token(&val, &tok)) {
		if (span_u64(tok, &x))
			return -EINVAL;
		if (n < NET_COUNTERS)
			v[n] = x;
		n++;
	}
	if (n < NET_COUNTERS)
		return -EINVAL;
	for (size_t i = 0; i < NELEM(net_fields); i++) {
		err = metrics_add(m, net_fields[i].metric, (double)v[net_fields[i].field],
				  "device", dev, NULL);
		if (err)
			return add_err(err);
	}
	return 0;
}

int procfs_parse_netdev(const char *text, size_t len, struct metrics *m)
{
	struct span rest = span_of(text, len), line;
	bool bad = false, any = false;
	int err;

	for (size_t i = 0; i < NELEM(net_fields); i++) {
		err = metrics_declare(m, net_fields[i].metric, MT_COUNTER, net_fields[i].help);
		if (err)
			return add_err(err);
	}
	while (next_line(&rest, &line)) {
		if (!span_trim(line).n)
			continue;
		/* the two header lines, unchanged since 2.x */
		if (span_starts(line, "Inter-|") || span_starts(span_trim(line), "face |")) {
			any = true;
			continue;
		}
		err = parse_net_line(line, m);
		if (err == -ENOMEM || err == -EIO)
			return err;
		if (err)
			bad = true;
		else
			any = true;
	}
	return parse_result(bad, any);
}

int procfs_parse_pressure(const char *text, size_t len, const char *resource, struct metrics *m)
{
	char waiting[96], stalled[96];
	struct span rest = span_of(text, len), line, kind, tok;
	bool bad = false, some = false;
	/* the cpu "full" line (5.13+) is undefined at the system level */
	bool want_full = strcmp(resource, "cpu") != 0;
	int err;

	if (strcmp(resource, "cpu") && strcmp(resource, "memory") && strcmp(resource, "io"))
		return -EINVAL;
	snprintf(waiting, sizeof(waiting), "node_pressure_%s_waiting_seconds_total", resource);
	snprintf(stalled, sizeof(stalled), "node_pressure_%s_stalled_seconds_total", resource);
	err = metrics_declare(m, waiting, MT_COUNTER,
			      "Total time in seconds that processes have waited for this resource.");
	if (!err && want_full)
		err = metrics_declare(m, stalled, MT_COUNTER,
				      "Total time in seconds no process could make progress due to this resource.");
	if (err)
		return add_err(err);

	while (next_line(&rest, &line)) {
		uint64_t us = 0;
		bool have_total = false;

		err = 0;
		if (!next_token(&line, &kind))
			continue;
		if (!span_eq(kind, "some") && !span_eq(kind, "full")) {
			bad = true;
			continue;
		}
		while (next_token(&line, &tok)) {
			if (span_starts(tok, "total=")) {
				have_total = !span_u64(span_of(tok.p + 6, tok.n - 6), &us);
				break;
			}
		}
		if (!have_total) {
			bad = true;
			continue;
		}
		if (span_eq(kind, "some")) {
			some = true;
			err = metrics_add(m, waiting, (double)us / 1e6, NULL);
		} else if (want_full) {
			err = metrics_add(m, stalled, (double)us / 1e6, NULL);
		}
		if (err)
			return add_err(err);
	}
	return parse_result(bad, some);
}

/* ---- filesystems ---- */

/* How /proc/filesystems lists a type: -1 absent, 0 "nodev", 1 block-backed. */
static int fs_lookup(const char *fs, size_t fs_len, struct span type)
{
	struct span rest = span_of(fs, fs_len), line, a, b;

	while (next_line(&rest, &line)) {
		if (!next_token(&line, &a))
			continue;
		if (next_token(&line, &b)) {	/* "nodev <type>" */
			if (b.n == type.n && !memcmp(b.p, type.p, type.n))
				return 0;
		} else if (a.n == type.n && !memcmp(a.p, type.p, type.n)) {
			return 1;
		}
	}
	return -1;
}

/* Keep a mount whose type is not "nodev". FUSE and friends show up as
 * "type.subtype" in mountinfo while the part before the dot is what is
 * registered; a type not listed at all cannot be classified and is left
 * out. */
static bool fs_is_real(const char *fs, size_t fs_len, const char *fstype)
{
	const char *dot = strchr(fstype, '.');
	int r = fs_lookup(fs, fs_len, span_of(fstype, strlen(fstype)));

	if (r < 0 && dot)
		r = fs_lookup(fs, fs_len, span_of(fstype, (size_t)(dot - fstype)));
	return r > 0;
}

/* /proc/filesystems: "nodev\t<type>" or "\t<type>" on each line. */
static int fs_validate(const char *fs, size_t fs_len)
{
	struct span rest = span_of(fs, fs_len), line, a, b;
	bool any = false;

	while (next_line(&rest, &line)) {
		if (!next_token(&line, &a))
			continue;
		if (next_token(&line, &b) && (!span_eq(a, "nodev") || next_token(&line, &a)))
			return -EINVAL;
		any = true;
	}
	return any ? 0 : -EINVAL;
}

struct mount_ent {
	char *mountpoint;
	char *fstype;
	char *device;
	size_t seq;
};

/* mountinfo fields are separated by exactly one space (blanks inside them
 * are escaped) and a field may be empty, so this does not skip runs. */
struct field_iter {
	struct span rest;
	bool done;
};

static bool next_field(struct field_iter *it, struct span *f)
{
	const char *sp;

	if (it->done)
		return false;
	sp = memchr(it->rest.p, ' ', it->rest.n);
	f->p = it->rest.p;
	f->n = sp ? (size_t)(sp - it->rest.p) : it->rest.n;
	if (sp) {
		it->rest.p = sp + 1;
		it->rest.n -= f->n + 1;
	} else {
		it->done = true;
	}
	return true;
}

static bool is_octal(char c, char max)
{
	return c >= '0' && c <= max;
}

/* Decode the kernel's \ooo escapes (space, tab, newline, backslash) into
 * *out, NUL-terminated, and advance *out. A backslash not followed by three
 * octal digits is kept as is; an escaped NUL is garbage. */
static int unescape(struct span f, char **out)
{
	char *o = *out;

	for (size_t i = 0; i < f.n; i++) {
		unsigned char c = (unsigned char)f.p[i];

		if (c == '\\' && f.n - i > 3 && is_octal(f.p[i + 1], '3') &&
		    is_octal(f.p[i + 2], '7') && is_octal(f.p[i + 3], '7')) {
			c = (unsigned char)(((f.p[i + 1] - '0') << 6) | ((f.p[i + 2] - '0') << 3) |
					    (f.p[i + 3] - '0'));
			i += 3;
		}
		if (c == '\0')
			return -EINVAL;
		*o++ = (char)c;
	}
	*o++ = '\0';
	*out = o;
	return 0;
}

static int mount_cmp(const void *pa, const void *pb)
{
	const struct mount_ent *a = pa, *b = pb;
	int c = strcmp(a->mountpoint, b->mountpoint);

	if (c)
		return c;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Parse one mountinfo line into e, its strings decoded into *strs:
 * id parent major:minor root mountpoint options [optional...] - type source superopts */
static int parse_mount_line(struct span line, char **strs, struct mount_ent *e)
{
	struct field_iter it = { line, false };
	struct span f, mp = { NULL, 0 }, type, dev;
	uint64_t x;

	for (int i = 0; i < 6; i++) {
		if (!next_field(&it, &f))
			return -EINVAL;
		if (i < 2 && span_u64(f, &x))
			return -EINVAL;
		if (i == 2 && !memchr(f.p, ':', f.n))
			return -EINVAL;
		if (i == 4)
			mp = f;
	}
	do {
		if (!next_field(&it, &f))
			return -EINVAL;
	} while (!span_eq(f, "-"));
	if (!next_field(&it, &type) || !next_field(&it, &dev))
		return -EINVAL;
	if (!mp.n || mp.p[0] != '/' || !type.n)
		return -EINVAL;
	e->mountpoint = *strs;
	if (unescape(mp, strs))
		return -EINVAL;
	e->fstype = *strs;
	if (unescape(type, strs))
		return -EINVAL;
	e->device = *strs;
	return unescape(dev, strs);
}

static const struct {
	const char *metric;
	const char *help;
} fs_metrics[] = {
	{ "node_filesystem_size_bytes", "Filesystem size in bytes." },
	{ "node_filesystem_free_bytes", "Filesystem free space in bytes." },
	{ "node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes." },
	{ "node_filesystem_files", "Filesystem total file nodes." },
	{ "node_filesystem_files_free", "Filesystem total free file nodes." },
};

static int add_mount(struct metrics *m, struct mount_ent *e, const char *root)
{
	char path[PATH_MAX];
	struct statvfs st;
	double v[NELEM(fs_metrics)];
	int err;

	/* through root, the mount namespace the table came from; fixture
	 * paths do not exist */
	if (snprintf(path, sizeof(path), "%s%s", root, e->mountpoint) >= (int)sizeof(path))
		return 0;
	if (statvfs(path, &st)) {
		log_debug("procfs: statvfs %s: %s", path, strerror(errno));
		return 0;
	}
	v[0] = (double)st.f_blocks * (double)st.f_frsize;
	v[1] = (double)st.f_bfree * (double)st.f_frsize;
	v[2] = (double)st.f_bavail * (double)st.f_frsize;
	v[3] = (double)st.f_files;
	v[4] = (double)st.f_ffree;
	/* labels after statvfs: the path must stay the real bytes */
	sanitize_utf8(e->mountpoint);
	sanitize_utf8(e->device);
	sanitize_utf8(e->fstype);
	for (size_t i = 0; i < NELEM(fs_metrics); i++) {
		err = metrics_add(m, fs_metrics[i].metric, v[i], "device", e->device,
				  "fstype", e->fstype, "mountpoint", e->mountpoint, NULL);
		if (err)
			return add_err(err);
	}
	return 0;
}

int procfs_parse_mountinfo(const char *text, size_t len, const char *filesystems, size_t fs_len,
			   struct metrics *m)
{
	return procfs_parse_mountinfo_at(text, len, filesystems, fs_len, "", m);
}

int procfs_parse_mountinfo_at(const char *text, size_t len, const char *filesystems, size_t fs_len,
			      const char *root, struct metrics *m)
{
	struct span rest = span_of(text, len), line;
	struct mount_ent *ents = NULL;
	char *strs = NULL, *sp;
	size_t nlines = 1, n = 0;
	bool bad = false;
	int err;

	for (size_t i = 0; i < NELEM(fs_metrics); i++) {
		err = metrics_declare(m, fs_metrics[i].metric, MT_GAUGE, fs_metrics[i].help);
		if (err)
			return add_err(err);
	}
	if (fs_validate(filesystems, fs_len) || !len)
		return -EINVAL;
	for (const char *p = text; (p = memchr(p, '\n', len - (size_t)(p - text))) != NULL; p++)
		nlines++;
	/* decoding only shrinks a field, and the three fields kept per line
	 * are disjoint and each but the very last followed by a separator in
	 * the text, so len + 1 bytes hold them with their NULs */
	ents = calloc(nlines, sizeof(*ents));
	strs = malloc(len + 1);
	if (!ents || !strs) {
		err = -ENOMEM;
		goto out;
	}
	sp = strs;
	while (next_line(&rest, &line)) {
		char *save = sp;

		if (!span_trim(line).n)
			continue;
		if (n >= nlines || parse_mount_line(line, &sp, &ents[n])) {
			sp = save;
			bad = true;
			continue;
		}
		ents[n].seq = n;
		n++;
	}

	/* A mountpoint mounted over more than once shows what the last mount
	 * put there (statvfs sees the top one), so the last entry wins; only
	 * then is its type checked. Sorting also gives a stable output order. */
	qsort(ents, n, sizeof(*ents), mount_cmp);
	err = 0;
	for (size_t i = 0; i < n && !err; i++) {
		if (i + 1 < n && !strcmp(ents[i].mountpoint, ents[i + 1].mountpoint))
			continue;
		if (fs_is_real(filesystems, fs_len, ents[i].fstype))
			err = add_mount(m, &ents[i], root);
	}
	if (!err)
		err = parse_result(bad, n > 0);
out:
	free(ents);
	free(strs);
	return err;
}

/* ---- host collection ---- */

enum source {
	SRC_STAT, SRC_LOADAVG, SRC_MEMINFO, SRC_DISKSTATS, SRC_NETDEV,
	SRC_PSI_CPU, SRC_PSI_MEMORY, SRC_PSI_IO, SRC_MOUNTS,
};

/* Sources already logged as failing, cleared when they work again. Only
 * the collector thread touches it. */
static unsigned int failed_sources;

static void source_status(enum source s, const char *what, int err)
{
	if (!err) {
		failed_sources &= ~(1u << s);
		return;
	}
	if (failed_sources & (1u << s))
		return;
	failed_sources |= 1u << s;
	log_debug("procfs: %s skipped: %s", what, strerror(-err));
}

typedef int (*parse_fn)(const char *, size_t, struct metrics *);

static int collect_file(struct metrics *m, const char *proc_root, const char *rel, size_t cap,
			parse_fn parse, enum source s)
{
	char path[PATH_MAX];
	char *text;
	size_t len;
	int err;

	if (snprintf(path, sizeof(path), "%s/%s", proc_root, rel) >= (int)sizeof(path))
		err = -ENAMETOOLONG;
	else
		err = read_alloc(AT_FDCWD, path, cap, &text, &len);
	if (!err) {
		err = parse(text, len, m);
		free(text);
	}
	if (err == -ENOMEM)
		return err;
	source_status(s, path, err);
	return 0;
}

static int collect_pressure(struct metrics *m, const char *proc_root)
{
	static const char *const res[] = { "cpu", "memory", "io" };
	char path[PATH_MAX];
	char text[1024];	/* two lines of ~70 bytes */
	size_t len;
	int err;

	for (size_t i = 0; i < NELEM(res); i++) {
		if (snprintf(path, sizeof(path), "%s/pressure/%s", proc_root, res[i]) >= (int)sizeof(path))
			err = -ENAMETOOLONG;
		else
			err = read_fixed(AT_FDCWD, path, text, sizeof(text), &len);
		/* no PSI in this kernel (or booted with psi=0): silent */
		if (!err)
			err = procfs_parse_pressure(text, len, res[i], m);
		if (err == -ENOMEM)
			return err;
		source_status((enum source)(SRC_PSI_CPU + i), path, err);
	}
	return 0;
}

static int collect_mounts(struct metrics *m, const char *proc_root)
{
	char path[PATH_MAX], root[PATH_MAX];
	char *mi = NULL, *fs = NULL;
	size_t mi_len, fs_len;
	int err;

	if (snprintf(path, sizeof(path), "%s/filesystems", proc_root) >= (int)sizeof(path))
		err = -ENAMETOOLONG;
	else
		err = read_alloc(AT_FDCWD, path, FILESYSTEMS_CAP, &fs, &fs_len);
	/* The host's mounts are those of pid 1's mount namespace, seen
	 * through its root: under the unit's sandbox (ProtectSystem,
	 * ProtectHome, PrivateTmp) the agent's own namespace has other
	 * mounts over /home, /tmp, ... Its own is the fallback (no
	 * CAP_SYS_PTRACE, a hidepid /proc, or a fixture without a pid 1). */
	if (!err) {
		bool host = snprintf(root, sizeof(root), "%s/1/root", proc_root) < (int)sizeof(root) &&
			    snprintf(path, sizeof(path), "%s/1/mountinfo", proc_root) < (int)sizeof(path) &&
			    access(root, X_OK) == 0 && !read_alloc(AT_FDCWD, path, MOUNTINFO_CAP, &mi, &mi_len);
		if (!host) {
			root[0] = '\0';
			if (snprintf(path, sizeof(path), "%s/self/mountinfo", proc_root) >= (int)sizeof(path))
				err = -ENAMETOOLONG;
			else
				err = read_alloc(AT_FDCWD, path, MOUNTINFO_CAP, &mi, &mi_len);
		}
		if (!err)
			err = procfs_parse_mountinfo_at(mi, mi_len, fs, fs_len, root, m);
	}
	free(mi);
	free(fs);
	if (err == -ENOMEM)
		return err;
	source_status(SRC_MOUNTS, path, err);
	return 0;
}

int procfs_collect_host(struct metrics *m, const char *proc_root)
{
	static const struct {
		const char *rel;
		size_t cap;
		parse_fn parse;
		enum source src;
	} files[] = {
		{ "stat", STAT_CAP, procfs_parse_host_stat, SRC_STAT },
		{ "loadavg", LOADAVG_CAP, procfs_parse_loadavg, SRC_LOADAVG },
		{ "meminfo", MEMINFO_CAP, procfs_parse_meminfo, SRC_MEMINFO },
		{ "diskstats", DEVLIST_CAP, procfs_parse_diskstats, SRC_DISKSTATS },
		{ "net/dev", DEVLIST_CAP, procfs_parse_netdev, SRC_NETDEV },
	};
	int err = 0;

	for (size_t i = 0; i < NELEM(files) && !err; i++)
		err = collect_file(m, proc_root, files[i].rel, files[i].cap, files[i].parse, files[i].src);
	if (!err)
		err = collect_mounts(m, proc_root);
	if (!err)
		err = collect_pressure(m, proc_root);
	return err;
}
