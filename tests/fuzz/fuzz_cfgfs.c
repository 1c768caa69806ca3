/* libFuzzer target for the parts of cfgfs that take untrusted text: the
 * strict base64 decoder (content_base64 of an apply) and the path checks.
 *
 * Properties checked on every input, besides ASan/UBSan cleanliness:
 * - a decode that succeeds re-encodes to exactly the input (strict
 *   decoding accepts one encoding per byte string), and decoding the
 *   encoding of the raw input gives the input back;
 * - a path accepted by cfgfs_path_syntax is absolute and normalised
 *   (no "//", "/./", "/../", trailing '/', control character);
 * - cfgfs_check_path with the allowed dir /tmp (the input as a path, and
 *   "/tmp/" + input) either refuses with a message or gives a resolved
 *   path below the real /tmp that passes the syntax check itself;
 * - SHA-256 of the input in two pieces (split at the first byte's value)
 *   equals the one-shot digest.
 * Nothing here creates or opens files: check_path only resolves and lstats.
 *
 *   make BUILD=build-cfs fuzz && build-cfs/fuzz/fuzz_cfgfs -max_total_time=60 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgfs.h"
#include "sha256.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); __builtin_trap(); } } while (0)

static void fuzz_base64(const uint8_t *data, size_t size)
{
	uint8_t *out, *back;
	size_t n, en, bn;
	char *enc;

	if (cfgfs_base64_decode((const char *)data, size, &out, &n) == 0) {
		CHECK(out != NULL);
		CHECK(n <= size / 4 * 3);
		enc = cfgfs_base64_encode(out, n, &en);
		CHECK(enc != NULL);
		CHECK(en == size && memcmp(enc, data, size) == 0);
		free(enc);
		free(out);
	} else {
		CHECK(out == NULL && n == 0);
	}

	enc = cfgfs_base64_encode(data, size, &en);
	CHECK(enc != NULL);
	CHECK(cfgfs_base64_decode(enc, en, &back, &bn) == 0);
	CHECK(bn == size && (size == 0 || memcmp(back, data, size) == 0));
	free(back);
	free(enc);
}

static void fuzz_syntax(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	char err[256];
	size_t i;

	err[0] = 'x';
	if (cfgfs_path_syntax(p, size, err, sizeof(err)) != 0) {
		CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
		return;
	}
	CHECK(size >= 2 && size < PATH_MAX && p[0] == '/' && p[size - 1] != '/');
	for (i = 0; i < size; i++) {
		CHECK(data[i] >= 0x20 && data[i] != 0x7f);
		if (p[i] != '/')
			continue;
		CHECK(i + 1 < size && p[i + 1] != '/');
		CHECK(!(p[i + 1] == '.' && (i + 2 == size || p[i + 2] == '/')));
		CHECK(!(p[i + 1] == '.' && i + 2 < size && p[i + 2] == '.' &&
			(i + 3 == size || p[i + 3] == '/')));
	}
}

static void check_one(const char *path, const char *tmp_real)
{
	char *allowed[] = { (char *)"/tmp" };
	char resolved[PATH_MAX], err[256];
	size_t tl = strlen(tmp_real);
	bool exists = true;
	int r;

	err[0] = '\0';
	r = cfgfs_check_path(allowed, 1, path, resolved, sizeof(resolved), &exists, err, sizeof(err));
	if (r) {
		CHECK(r < 0 && err[0] != '\0');
		return;
	}
	CHECK(strncmp(resolved, tmp_real, tl) == 0 && resolved[tl] == '/');
	CHECK(cfgfs_path_syntax(resolved, strlen(resolved), NULL, 0) == 0);
}

static void fuzz_check_path(const uint8_t *data, size_t size)
{
	static char tmp_real[PATH_MAX];
	char *path;

	if (!tmp_real[0] && !realpath("/tmp", tmp_real))
		return;
	if (size > PATH_MAX + 16)
		return;
	path = malloc(size + 6);
	if (!path)
		return;
	memcpy(path, data, size);
	path[size] = '\0';
	check_one(path, tmp_real);	/* stops at an embedded NUL, like any C string */
	memcpy(path, "/tmp/", 5);
	memcpy(path + 5, data, size);
	path[size + 5] = '\0';
	check_one(path, tmp_real);
	free(path);
}

static void fuzz_sha256(const uint8_t *data, size_t size)
{
	char one[SHA256_HEX_LEN + 1], two[SHA256_HEX_LEN + 1];
	uint8_t d[SHA256_DIGEST_LEN];
	struct sha256 c;
	size_t cut = size ? data[0] % (size + 1) : 0;

	sha256_hex(data, size, one);
	sha256_init(&c);
	sha256_update(&c, data, cut);
	sha256_update(&c, data + cut, size - cut);
	sha256_final(&c, d);
	sha256_to_hex(d, two);
	CHECK(strcmp(one, two) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	/* an exact-size heap copy, so ASan sees any read past size */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	fuzz_base64(copy, size);
	fuzz_syntax(copy, size);
	fuzz_check_path(copy, size);
	fuzz_sha256(copy, size);
	free(copy);
	return 0;
}
