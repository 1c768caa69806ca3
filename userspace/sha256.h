/* SHA-256 (FIPS 180-4), written here so that the agent links no crypto
 * library. Used for the config listing and the audit log (sha256 of a
 * file before and after an apply); not for anything secret, so it makes
 * no attempt at constant time or at wiping its state.
 *
 * Streaming: sha256_init, any number of sha256_update calls of any sizes
 * (including 0), then sha256_final. A context holds no pointers and needs
 * no cleanup; after sha256_final it must be re-initialised before reuse. */
#ifndef OS_SHA256_H
#define OS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN	32
#define SHA256_HEX_LEN		64	/* hex digits; buffers need one more for the NUL */

struct sha256 {
	uint32_t h[8];
	uint64_t nbytes;	/* total message length so far, in bytes */
	uint8_t buf[64];	/* a partial block */
	size_t nbuf;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, uint8_t out[SHA256_DIGEST_LEN]);

/* Lowercase hex of a digest, NUL-terminated. */
void sha256_to_hex(const uint8_t digest[SHA256_DIGEST_LEN], char out[SHA256_HEX_LEN + 1]);
/* One-shot: lowercase hex digest of data. */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);

#endif
