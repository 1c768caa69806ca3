/* Bearer tokens and the per-peer slow-down; see auth.h for the rules. */
#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

#define TOKEN_FILE_MAX (256 * 1024)

bool auth_ct_equal(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;
	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

static bool token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
	       c == '~' || c == '+' || c == '/' || c == '=' || c == '-';
}

static void digest_of(const char *tok, size_t len, uint8_t out[SHA256_DIGEST_LEN])
{
	struct sha256 s;
	sha256_init(&s);
	sha256_update(&s, tok, len);
	sha256_final(&s, out);
}

void auth_tokens_free(struct auth_tokens *t)
{
	if (!t)
		return;
	free(t->t);
	free(t);
}

int auth_tokens_parse(const char *text, size_t len, const char *name, struct auth_tokens **out, char *err,
		      size_t errlen)
{
	*out = NULL;
	if (len == 0) {
		snprintf(err, errlen, "%s: empty token file (one token per line expected)", name);
		return -EINVAL;
	}
	/* One trailing newline ends the last line; it does not start another. */
	size_t end = text[len - 1] == '\n' ? len - 1 : len;
	size_t nlines = 1;
	for (size_t i = 0; i < end; i++)
		nlines += text[i] == '\n';
	struct auth_tokens *t = calloc(1, sizeof(*t));
	if (!t || !(t->t = calloc(nlines, sizeof(*t->t)))) {
		free(t);
		snprintf(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	size_t pos = 0;
	for (size_t line = 1; line <= nlines; line++) {
		const char *p = text + pos;
		const char *nl = memchr(p, '\n', end - pos);
		size_t n = nl ? (size_t)(nl - p) : end - pos;
		for (size_t i = 0; i < n; i++) {
			if (!token_char(p[i])) {
				snprintf(err, errlen,
					 "%s:%zu: invalid character 0x%02x in a token (tokens are [A-Za-z0-9._~+/=-], "
					 "one per line)", name, line, (unsigned)(unsigned char)p[i]);
				auth_tokens_free(t);
				return -EINVAL;
			}
		}
		if (n < AUTH_TOKEN_MIN || n > AUTH_TOKEN_MAX) {
			snprintf(err, errlen, "%s:%zu: %s (a token is %d..%d characters)", name, line,
				 n == 0 ? "empty line" : n < AUTH_TOKEN_MIN ? "token too short" : "token too long",
				 AUTH_TOKEN_MIN, AUTH_TOKEN_MAX);
			auth_tokens_free(t);
			return -EINVAL;
		}
		struct auth_token *k = &t->t[t->n++];
		char hex[SHA256_HEX_LEN + 1];
		digest_of(p, n, k->digest);
		sha256_to_hex(k->digest, hex);
		memcpy(k->id, hex, AUTH_ID_LEN);
		k->id[AUTH_ID_LEN] = '\0';
		pos += n + 1;
	}
	*out = t;
	return 0;
}

/* A new token file: 256 random bits as 64 hex digits. */
static int generate(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *d = dirname(dir);
	if (mkdir(d, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create its directory: %s", path, strerror(errno));
		return -errno;
	}
	uint8_t rnd[32];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		snprintf(err, errlen, "%s: cannot get random bytes: %s", path, strerror(errno));
		return -EIO;
	}
	char hex[2 * sizeof(rnd) + 2];
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	hex[2 * sizeof(rnd)] = '\n';
	hex[2 * sizeof(rnd) + 1] = '\0';
	memset(rnd, 0, sizeof(rnd));
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		memset(hex, 0, sizeof(hex));
		if (e == EEXIST)
			return -EEXIST; /* someone was faster: read theirs */
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(e));
		return -e;
	}
	size_t len = strlen(hex);
	ssize_t w = write(fd, hex, len);
	int e = errno;
	memset(hex, 0, sizeof(hex));
	if (w != (ssize_t)len || fsync(fd) < 0) {
		if (w == (ssize_t)len)
			e = errno;
		close(fd);
		unlink(path);
		snprintf(err, errlen, "%s: cannot write: %s", path, strerror(e ? e : EIO));
		return -EIO;
	}
	close(fd);
	return 0;
}

int auth_tokens_load(const char *path, bool create, struct auth_tokens **out, bool *created, char *err,
		     size_t errlen)
{
	*out = NULL;
	if (created)
		*created = false;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0 && errno == ENOENT && create) {
		int r = generate(path, err, errlen);
		if (r && r != -EEXIST)
			return r;
		if (r == 0 && created)
			*created = true;
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	}
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, e == ELOOP ? "is a symbolic link (refused)" : strerror(e));
		return -e;
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s: not a regular file", path);
	} else if (st.st_mode & 077) {
		rc = -EPERM;
		snprintf(err, errlen, "%s: readable or writable by group or other (mode %04o); the token must be "
			 "private: chmod 600 %s", path, (unsigned)(st.st_mode & 07777), path);
	} else if (st.st_uid != geteuid()) {
		rc = -EPERM;
		snprintf(err, errlen, "%s: owned by uid %u, not by the agent's user (uid %u)", path,
			 (unsigned)st.st_uid, (unsigned)geteuid());
	} else if (st.st_size > TOKEN_FILE_MAX) {
		rc = -EFBIG;
		snprintf(err, errlen, "%s: larger than %d bytes", path, TOKEN_FILE_MAX);
	}
	if (rc) {
		close(fd);
		return rc;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > (size_t)st.st_size) {
			rc = -EAGAIN;
			snprintf(err, errlen, "%s: changed while being read", path);
			break;
		}
	}
	close(fd);
	if (!rc)
		rc = auth_tokens_parse(buf, len, path, out, err, errlen);
	memset(buf, 0, len);
	free(buf);
	return rc;
}

enum auth_result auth_tokens_check(const struct auth_tokens *t, const char *header, char id[AUTH_ID_LEN + 1])
{
	id[0] = '\0';
	if (!header || !*header)
		return AUTH_MISSING;
	if (strncasecmp(header, "Bearer ", 7) != 0)
		return AUTH_BAD_SCHEME;
	const char *tok = header + 7;
	size_t n = strnlen(tok, AUTH_TOKEN_MAX + 1);
	if (n == 0 || n > AUTH_TOKEN_MAX)
		return AUTH_WRONG;
	uint8_t d[SHA256_DIGEST_LEN];
	digest_of(tok, n, d);
	/* Every digest is compared, whatever matched: the time says nothing
	 * about which token (or how much of one) was right. */
	size_t hit = SIZE_MAX;
	for (size_t i = 0; t && i < t->n; i++)
		if (auth_ct_equal(d, t->t[i].digest, sizeof(d)))
			hit = i;
	if (hit == SIZE_MAX)
		return AUTH_WRONG;
	memcpy(id, t->t[hit].id, AUTH_ID_LEN + 1);
	return AUTH_OK;
}

const char *auth_result_str(enum auth_result r)
{
	switch (r) {
	case AUTH_OK: return "ok";
	case AUTH_MISSING: return "no Authorization header";
	case AUTH_BAD_SCHEME: return "Authorization is not \"Bearer <token>\"";
	case AUTH_WRONG: return "wrong token";
	case AUTH_THROTTLED: return "too many failed attempts; backing off";
	}
	return "?";
}

/* ---- the limiter ---- */

struct peer {
	char key[64];            /* "" = free slot */
	unsigned fails;          /* within the window */
	uint64_t last_ms;        /* last failure */
	uint64_t until_ms;       /* end of the backoff */
	uint64_t backoff_ms;     /* the current one; doubles */
};

struct auth_limiter {
	size_t cap;
	struct peer *p;
};

struct auth_limiter *auth_limiter_new(size_t cap)
{
	struct auth_limiter *l = calloc(1, sizeof(*l));
	if (!l || !(l->p = calloc(cap ? cap : 1, sizeof(*l->p)))) {
		free(l);
		return NULL;
	}
	l->cap = cap ? cap : 1;
	return l;
}

void auth_limiter_free(struct auth_limiter *l)
{
	if (!l)
		return;
	free(l->p);
	free(l);
}

static struct peer *find(struct auth_limiter *l, const char *key)
{
	for (size_t i = 0; i < l->cap; i++)
		if (l->p[i].key[0] && strncmp(l->p[i].key, key, sizeof(l->p[i].key) - 1) == 0)
			return &l->p[i];
	return NULL;
}

uint64_t auth_limiter_blocked(struct auth_limiter *l, const char *peer, uint64_t now_ms)
{
	struct peer *p = l ? find(l, peer) : NULL;
	return p && p->until_ms > now_ms ? p->until_ms - now_ms : 0;
}

uint64_t auth_limiter_fail(struct auth_limiter *l, const char *peer, uint64_t now_ms)
{
	if (!l)
		return 0;
	struct peer *p = find(l, peer);
	if (!p) {
		/* a free slot, else the one whose last failure is oldest */
		p = &l->p[0];
		for (size_t i = 0; i < l->cap; i++) {
			if (!l->p[i].key[0]) {
				p = &l->p[i];
				break;
			}
			if (l->p[i].last_ms < p->last_ms)
				p = &l->p[i];
		}
		memset(p, 0, sizeof(*p));
		snprintf(p->key, sizeof(p->key), "%s", peer);
	}
	/* quiet for a window (counted from the end of any backoff): start over */
	if (p->until_ms <= now_ms && now_ms - (p->until_ms > p->last_ms ? p->until_ms : p->last_ms) > AUTH_WINDOW_MS) {
		p->fails = 0;
		p->backoff_ms = 0;
	}
	p->last_ms = now_ms;
	if (p->until_ms > now_ms)
		return 0; /* already backing off: does not extend it */
	if (++p->fails < AUTH_FREE_FAILURES)
		return 0;
	p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : AUTH_BACKOFF_MIN_MS;
	if (p->backoff_ms > AUTH_BACKOFF_MAX_MS)
		p->backoff_ms = AUTH_BACKOFF_MAX_MS;
	p->until_ms = now_ms + p->backoff_ms;
	return p->backoff_ms;
}

void auth_limiter_success(struct auth_limiter *l, const char *peer)
{
	struct peer *p = l ? find(l, peer) : NULL;
	if (p)
		memset(p, 0, sizeof(*p));
}

size_t auth_limiter_size(const struct auth_limiter *l)
{
	size_t n = 0;
	for (size_t i = 0; l && i < l->cap; i++)
		n += l->p[i].key[0] != 0;
	return n;
}

/* ---- one request ---- */

/* A client-chosen string for a log line: control bytes (a decoded %0A in
 * a URL) would forge lines, so they become '?'; at most 128 bytes. */
static const char *printable(const char *in, char *out, size_t outlen)
{
	size_t n = 0;
	for (; in && in[n] && n + 1 < outlen && n < 128; n++)
		out[n] = (unsigned char)in[n] < 0x20 || in[n] == 0x7f ? '?' : in[n];
	out[n] = '\0';
	return out;
}

enum auth_result auth_request(struct auth *a, const char *api, const char *peer, const char *method,
			      const char *path, const char *header, char *identity, size_t idlen,
			      uint64_t *retry_ms)
{
	uint64_t now = loop_now_ms();
	char id[AUTH_ID_LEN + 1], pb[132], mb[20];
	*retry_ms = 0;
	path = printable(path, pb, sizeof(pb));
	method = printable(method, mb, sizeof(mb));
	uint64_t left = auth_limiter_blocked(a->limiter, peer, now);
	if (left) {
		a->throttled++;
		*retry_ms = left;
		log_warn("auth: %s %s %s from %s refused: %s (%llu ms left)", api, method, path, peer,
			 auth_result_str(AUTH_THROTTLED), (unsigned long long)left);
		return AUTH_THROTTLED;
	}
	enum auth_result r = auth_tokens_check(a->tokens, header, id);
	if (r == AUTH_OK) {
		auth_limiter_success(a->limiter, peer);
		snprintf(identity, idlen, "token:%s", id);
		return r;
	}
	a->failures++;
	uint64_t b = auth_limiter_fail(a->limiter, peer, now);
	if (b)
		log_warn("auth: %s %s %s from %s refused: %s; %s is refused for %llu ms", api, method, path, peer,
			 auth_result_str(r), peer, (unsigned long long)b);
	else
		log_warn("auth: %s %s %s from %s refused: %s", api, method, path, peer, auth_result_str(r));
	return r;
}

/* ---- unix sockets ---- */

int auth_unix_prepare(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct stat st;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: longer than %zu bytes (a unix socket path limit)", path,
			 sizeof(sun.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s: exists and is not a socket (refusing to remove it)", path);
			return -EEXIST;
		}
		/* a stale socket of a previous run */
		if (unlink(path) < 0) {
			snprintf(err, errlen, "%s: cannot remove the old socket: %s", path, strerror(errno));
			return -errno;
		}
	} else if (errno != ENOENT) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

int auth_unix_listen(const char *path, unsigned mode, char *err, size_t errlen)
{
	int rc = auth_unix_prepare(path, err, errlen);
	if (rc)
		return rc;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
		return -errno;
	}
	mode_t old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	int e = errno;
	umask(old);
	if (rc < 0 || chmod(path, mode) < 0 || listen(fd, 128) < 0) {
		e = rc < 0 ? e : errno;
		snprintf(err, errlen, "%s: cannot listen: %s", path, strerror(e));
		if (rc == 0)
			unlink(path);
		close(fd);
		return -e;
	}
	return fd;
}

void auth_peer_key(char *addr, size_t len)
{
	struct in6_addr a;
	char b[INET6_ADDRSTRLEN];

	if (!strchr(addr, ':') || inet_pton(AF_INET6, addr, &a) != 1)
		return;
	if (IN6_IS_ADDR_V4MAPPED(&a) || IN6_IS_ADDR_LOOPBACK(&a))
		return;
	memset(a.s6_addr + 8, 0, 8);
	if (!inet_ntop(AF_INET6, &a, b, sizeof(b)))
		return;
	snprintf(addr, len, "%s/64", b);
}

int auth_peer_uid(int fd, unsigned *uid)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	*uid = (unsigned)cr.uid;
	return 0;
}
