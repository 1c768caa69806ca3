/* libFuzzer target for gRPC server reflection (userspace/reflection.c).
 *
 * Every input, in an exact-size heap copy so ASan catches any read past
 * size, is used three ways:
 *  1. as a ServerReflectionRequest of both versions, answered from the
 *     embedded descriptor set: the result must be 0 or -EINVAL, and an
 *     answer must unpack with protobuf-c;
 *  2. walked with the wire reader directly, every length-delimited field
 *     tried as a nested message;
 *  3. as a FileDescriptorSet given to reflection_init_set(); when it loads,
 *     the strings found in it (and pairs of them joined with '.') are asked
 *     for as files, symbols and extended types, so the import closure and
 *     the symbol table built from fuzzed descriptors are exercised too.
 *
 *   make BUILD=build-refl fuzz
 *   build-refl/fuzz/fuzz_reflection -max_total_time=60 [corpus dir]
 * Good seeds: $(BUILD)/gen/descriptors.pb and serialized requests. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "reflection.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STRINGS	8
#define MAX_DEPTH	16

static const char *const served[] = {
	"oneshield.agent.v1.Agent",
	"grpc.reflection.v1alpha.ServerReflection",
	"grpc.reflection.v1.ServerReflection",
	NULL,
};

struct strings {
	char *s[MAX_STRINGS];
	size_t n;
};

/* Walks every field; collects short printable strings. */
static void walk(const uint8_t *p, size_t len, int depth, struct strings *st)
{
	struct refl_wire w;
	struct refl_field f;

	if (depth > MAX_DEPTH)
		return;
	refl_wire_init(&w, p, len);
	while (refl_wire_next(&w, &f) > 0) {
		if (f.type != 2)
			continue;
		if (f.len && f.len < 64 && st->n < MAX_STRINGS && !memchr(f.data, 0, f.len)) {
			char *s = strndup((const char *)f.data, f.len);

			if (s)
				st->s[st->n++] = s;
		}
		walk(f.data, f.len, depth + 1, st);
	}
}

/* One answer must be a valid response of that version. */
static void check(int version, const uint8_t *req, size_t len)
{
	uint8_t *out = NULL;
	size_t outlen = 0;
	int rc = reflection_answer(version, req, len, &out, &outlen);

	if (rc == -EINVAL || rc == -ENOMEM)
		return;
	if (rc != 0 || !out || !outlen)
		abort();
	if (version == REFLECTION_V1ALPHA) {
		Grpc__Reflection__V1alpha__ServerReflectionResponse *r =
			grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, outlen, out);

		if (!r || r->message_response_case ==
			  GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET)
			abort();
		grpc__reflection__v1alpha__server_reflection_response__free_unpacked(r, NULL);
	} else {
		Grpc__Reflection__V1__ServerReflectionResponse *r =
			grpc__reflection__v1__server_reflection_response__unpack(NULL, outlen, out);

		if (!r || r->message_response_case ==
			  GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET)
			abort();
		grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
	}
	free(out);
}

/* A v1 request of that kind for name, answered by both versions (the
 * bytes are the same for v1alpha). */
static void ask(Grpc__Reflection__V1__ServerReflectionRequest__MessageRequestCase kind,
		const char *name)
{
	Grpc__Reflection__V1__ServerReflectionRequest q =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
	Grpc__Reflection__V1__ExtensionRequest ext = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
	uint8_t *req;
	size_t len;

	q.message_request_case = kind;
	switch (kind) {
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
		q.file_by_filename = (char *)name;
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
		q.file_containing_symbol = (char *)name;
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
		ext.containing_type = (char *)name;
		ext.extension_number = 1;
		q.file_containing_extension = &ext;
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
		q.all_extension_numbers_of_type = (char *)name;
		break;
	default:
		q.list_services = (char *)name;
		break;
	}
	len = grpc__reflection__v1__server_reflection_request__get_packed_size(&q);
	req = malloc(len ? len : 1);
	if (!req)
		return;
	grpc__reflection__v1__server_reflection_request__pack(&q, req);
	check(REFLECTION_V1, req, len);
	check(REFLECTION_V1ALPHA, req, len);
	free(req);
}

static void ask_all(const char *name)
{
	ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME, name);
	ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL, name);
	ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION, name);
	ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE, name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strings st = { .n = 0 };
	uint8_t *t = malloc(size ? size : 1);

	if (!t)
		return 0;
	memcpy(t, data, size);

	/* 1: a request */
	if (reflection_init(served))
		abort();
	check(REFLECTION_V1ALPHA, t, size);
	check(REFLECTION_V1, t, size);

	/* 2: the wire reader */
	walk(t, size, 0, &st);

	/* 3: a descriptor set */
	if (reflection_init_set(t, size, NULL) == 0) {
		ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES, "*");
		for (size_t i = 0; i < st.n; i++) {
			ask_all(st.s[i]);
			for (size_t j = 0; j < st.n && j < 3; j++) {
				size_t a = strlen(st.s[i]), b = strlen(st.s[j]);
				char *name = malloc(a + b + 2);

				if (!name)
					continue;
				memcpy(name, st.s[i], a);
				name[a] = '.';
				memcpy(name + a + 1, st.s[j], b + 1);
				ask_all(name);
				free(name);
			}
		}
	}
	reflection_fini();

	for (size_t i = 0; i < st.n; i++)
		free(st.s[i]);
	free(t);
	return 0;
}
