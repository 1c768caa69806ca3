/* Authentication of the agent's APIs: bearer tokens and the slow-down of
 * peers that keep guessing.
 *
 * The token file (api.token_file) holds one token per line (several lines
 * let an operator rotate: add the new token, SIGHUP, move the clients,
 * remove the old one, SIGHUP). A token is 16..1024 characters of
 * [A-Za-z0-9._~+/=-] (RFC 6750's token68 alphabet); the file ends with or
 * without a newline; anything else (an empty file, a blank line, a space, a
 * CR, a token too short) is refused with file:line. The file must be a
 * regular file owned by the agent's user with no permission bit for group
 * or other: a token others can read is not a secret, one others can write
 * lets them in. Only SHA-256 digests of the tokens are kept in memory; a
 * presented token is hashed and compared with every digest in constant time
 * (no early exit, no length leak), and its id (the first 8 hex digits of its
 * digest) names it in logs and in the audit of config applies; the token
 * itself is never logged.
 *
 * The limiter: a peer (an IP address; a port is not an identity) with
 * AUTH_FREE_FAILURES failed attempts within AUTH_WINDOW_MS is refused
 * outright (REST 429, gRPC RESOURCE_EXHAUSTED) for a backoff of 1 s that
 * doubles with each further failure after it (up to 5 min); attempts during
 * the backoff are refused without looking at the token and do not extend
 * it; a success resets the peer, and so does a quiet AUTH_WINDOW_MS after
 * its last failure (or the end of its backoff). The table is fixed-size: when full, the
 * peer seen least recently is forgotten. Everything runs on the core loop's
 * thread; nothing blocks or sleeps.
 *
 * Ownership: auth_tokens are immutable once loaded (reload builds a new set
 * and swaps it); struct auth owns its token set and limiter. */
#ifndef OS_AUTH_H
#define OS_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define AUTH_TOKEN_MIN 16
#define AUTH_TOKEN_MAX 1024
#define AUTH_ID_LEN 8              /* hex digits of SHA-256(token) */
#define AUTH_FREE_FAILURES 5
#define AUTH_WINDOW_MS 60000
#define AUTH_BACKOFF_MIN_MS 1000
#define AUTH_BACKOFF_MAX_MS 300000
#define AUTH_PEERS 256

struct auth_tokens {
	size_t n;
	struct auth_token {
		uint8_t digest[SHA256_DIGEST_LEN];
		char id[AUTH_ID_LEN + 1];
	} *t;
};

/* Parse a token file's text; name is used in messages ("name:line: ...").
 * 0, -EINVAL or -ENOMEM with err filled. */
int auth_tokens_parse(const char *text, size_t len, const char *name, struct auth_tokens **out, char *err,
		      size_t errlen);
/* Read path (checked: regular file, owned by us, no group/other bits).
 * When absent and create is set: a new token of 256 random bits in hex,
 * written with O_CREAT|O_EXCL and mode 0600, its directory created 0700 if
 * missing; *created tells. 0 or -errno with err filled ("path: message"). */
int auth_tokens_load(const char *path, bool create, struct auth_tokens **out, bool *created, char *err,
		     size_t errlen);
void auth_tokens_free(struct auth_tokens *t);  /* accepts NULL */

/* Constant-time equality of n bytes. */
bool auth_ct_equal(const void *a, const void *b, size_t n);

enum auth_result {
	AUTH_OK,
	AUTH_MISSING,      /* no Authorization */
	AUTH_BAD_SCHEME,   /* not "Bearer <token>" */
	AUTH_WRONG,        /* no such token */
	AUTH_THROTTLED,    /* the peer is in its backoff */
};
const char *auth_result_str(enum auth_result r);

/* The presented header value ("Bearer <token>", scheme case-insensitive as
 * RFC 7235 says, one space) against the set: AUTH_OK with the token's id
 * copied into id, or why not. No limiter involved. */
enum auth_result auth_tokens_check(const struct auth_tokens *t, const char *header, char id[AUTH_ID_LEN + 1]);

struct auth_limiter;
struct auth_limiter *auth_limiter_new(size_t cap);
void auth_limiter_free(struct auth_limiter *l);  /* accepts NULL */
/* ms left in peer's backoff, 0 when it may try. */
uint64_t auth_limiter_blocked(struct auth_limiter *l, const char *peer, uint64_t now_ms);
/* A failed attempt; returns the backoff started by it (0: none yet). */
uint64_t auth_limiter_fail(struct auth_limiter *l, const char *peer, uint64_t now_ms);
void auth_limiter_success(struct auth_limiter *l, const char *peer);
size_t auth_limiter_size(const struct auth_limiter *l);

/* Unix-socket listeners (api.rest_socket, api.grpc_socket): the file's
 * permissions are the credential. auth_unix_prepare refuses a path whose
 * existing file is not a socket and removes a stale socket (from a
 * previous run); auth_unix_listen then binds and listens, the socket
 * created with mode (umask 0177 while binding, so it is never wider, then
 * chmod to mode). Both 0 / fd or -errno with err filled ("path: message"). */
int auth_unix_prepare(const char *path, char *err, size_t errlen);
int auth_unix_listen(const char *path, unsigned mode, char *err, size_t errlen);
/* The uid of a unix socket's peer (SO_PEERCRED). 0 or -errno. */
int auth_peer_uid(int fd, unsigned *uid);
/* In place, the key per-peer limits (the failure backoff, streams per
 * peer) count an address under: IPv4 as itself, IPv6 as its /64 written
 * "2001:db8:1:2::/64" (a host is usually given a whole /64, and could
 * otherwise take a new address per attempt); v4-mapped, loopback and
 * anything that is not an address stay as they are. */
void auth_peer_key(char *addr, size_t len);

/* What the REST and gRPC servers use. */
struct auth {
	bool enabled;            /* api.auth */
	bool metrics_auth;       /* api.metrics_auth: /metrics needs a token too */
	struct auth_tokens *tokens;
	struct auth_limiter *limiter;
	uint64_t failures;       /* refused attempts, for /metrics */
	uint64_t throttled;
};

/* Decide one request: peer is its address (the limiter's key), header the
 * Authorization value (NULL when absent). On AUTH_OK, identity gets
 * "token:<id>"; on AUTH_THROTTLED, *retry_ms the time left. Logs the
 * refusal once (peer, api, method, path, reason), never the token. */
enum auth_result auth_request(struct auth *a, const char *api, const char *peer, const char *method,
			      const char *path, const char *header, char *identity, size_t idlen,
			      uint64_t *retry_ms);

#endif
