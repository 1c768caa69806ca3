/* libFuzzer target for the API token file parser and the Authorization
 * header check (userspace/auth.c).
 *
 *   make fuzz && build/fuzz/fuzz_token -max_total_time=60
 *
 * The input is split at its first NUL: before it, a token file; after it,
 * an Authorization header value. Any input must give a token set or a
 * one-line error starting with the name; a set must accept each of its own
 * lines as "Bearer <line>" and report that line's id; the header check must
 * return one of its results. Never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *nul = memchr(data, 0, size);
	size_t flen = nul ? (size_t)(nul - text) : size;
	struct auth_tokens *t = NULL;
	char err[512], id[AUTH_ID_LEN + 1];

	int rc = auth_tokens_parse(text, flen, "fuzz", &t, err, sizeof(err));
	if (rc) {
		if (t || strncmp(err, "fuzz", 4) || strchr(err, '\n'))
			abort();
	} else {
		/* every line of an accepted file is a token the set accepts */
		char hdr[AUTH_TOKEN_MAX + 8];
		size_t pos = 0, i = 0;
		while (pos < flen) {
			const char *nl = memchr(text + pos, '\n', flen - pos);
			size_t n = nl ? (size_t)(nl - text - pos) : flen - pos;
			memcpy(hdr, "Bearer ", 7);
			memcpy(hdr + 7, text + pos, n);
			hdr[7 + n] = '\0';
			if (i >= t->n || auth_tokens_check(t, hdr, id) != AUTH_OK)
				abort();
			pos += n + 1;
			i++;
		}
		if (i != t->n)
			abort();
	}
	if (nul) {
		size_t hlen = size - flen - 1;
		char *h = malloc(hlen + 1);
		if (!h)
			abort();
		memcpy(h, nul + 1, hlen);
		h[hlen] = '\0';
		enum auth_result r = auth_tokens_check(t, h, id);
		if (r != AUTH_OK && r != AUTH_MISSING && r != AUTH_BAD_SCHEME && r != AUTH_WRONG)
			abort();
		if (r == AUTH_OK && strlen(id) != AUTH_ID_LEN)
			abort();
		free(h);
	}
	auth_tokens_free(t);
	return 0;
}
