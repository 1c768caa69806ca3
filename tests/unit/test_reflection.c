/* Unit tests for reflection.c: requests built with the protobuf-c structs
 * of both versions, answered, unpacked and checked against the embedded
 * descriptor set of proto/; hand-made descriptor sets for imports,
 * extensions and malformed input; and the wire reader itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "reflection.h"

#define AGENT_PROTO "oneshield/agent/v1/agent.proto"

/* request kinds (the oneof field numbers) and response kinds */
#define Q_FILE		3
#define Q_SYMBOL	4
#define Q_EXTENSION	5
#define Q_EXT_NUMBERS	6
#define Q_LIST		7
#define A_FILES		4
#define A_EXT_NUMBERS	5
#define A_SERVICES	6
#define A_ERROR		7

static const char *const served[] = {
	"oneshield.agent.v1.Agent",
	"grpc.reflection.v1alpha.ServerReflection",
	"grpc.reflection.v1.ServerReflection",
	NULL,
};

/* ---- a tiny wire writer for hand-made messages ---- */

struct w {
	uint8_t b[4096];
	size_t n;
};

static void w_varint(struct w *w, uint64_t v)
{
	do {
		assert_true(w->n < sizeof(w->b));
		w->b[w->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
}

static void w_bytes(struct w *w, uint32_t num, const void *p, size_t len)
{
	w_varint(w, (uint64_t)num << 3 | 2);
	w_varint(w, len);
	assert_true(w->n + len <= sizeof(w->b));
	memcpy(w->b + w->n, p, len);
	w->n += len;
}

static void w_str(struct w *w, uint32_t num, const char *s)
{
	w_bytes(w, num, s, strlen(s));
}

static void w_sub(struct w *w, uint32_t num, const struct w *sub)
{
	w_bytes(w, num, sub->b, sub->n);
}

static void w_uint(struct w *w, uint32_t num, uint64_t v)
{
	w_varint(w, (uint64_t)num << 3);
	w_varint(w, v);
}

/* ---- answers of either version, normalized ---- */

struct answer {
	char *valid_host;
	bool has_orig;
	char *orig_host;
	int orig_kind;
	char *orig_arg;
	int orig_number;
	int kind;
	size_t nfiles;
	ProtobufCBinaryData files[16];
	size_t nservices;
	char *services[16];
	char *base_type;
	size_t nnumbers;
	int32_t numbers[16];
	int err_code;
	char *err_msg;
};

static void answer_free(struct answer *a)
{
	free(a->valid_host);
	free(a->orig_host);
	free(a->orig_arg);
	for (size_t i = 0; i < a->nfiles; i++)
		free(a->files[i].data);
	for (size_t i = 0; i < a->nservices; i++)
		free(a->services[i]);
	free(a->base_type);
	free(a->err_msg);
	memset(a, 0, sizeof(*a));
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Fills a request of version V, answers it, unpacks the response and
 * copies it into *a. The structs of both versions have the same members. */
#define DEFINE_ASK(fn, V, v, VV)							\
static int fn(const char *host, int kind, const char *arg, int32_t number,		\
	      struct answer *a)								\
{											\
	Grpc__Reflection__##V##__ServerReflectionRequest q =				\
		GRPC__REFLECTION__##VV##__SERVER_REFLECTION_REQUEST__INIT;		\
	Grpc__Reflection__##V##__ExtensionRequest ext =					\
		GRPC__REFLECTION__##VV##__EXTENSION_REQUEST__INIT;			\
	Grpc__Reflection__##V##__ServerReflectionResponse *r;				\
	uint8_t *req, *out = NULL;							\
	size_t len, outlen = 0;								\
	int rc;										\
											\
	memset(a, 0, sizeof(*a));							\
	if (host)									\
		q.host = (char *)host;							\
	q.message_request_case = kind;							\
	switch (kind) {									\
	case Q_FILE:									\
		q.file_by_filename = (char *)arg;					\
		break;									\
	case Q_SYMBOL:									\
		q.file_containing_symbol = (char *)arg;					\
		break;									\
	case Q_EXTENSION:								\
		ext.containing_type = (char *)arg;					\
		ext.extension_number = number;						\
		q.file_containing_extension = &ext;					\
		break;									\
	case Q_EXT_NUMBERS:								\
		q.all_extension_numbers_of_type = (char *)arg;				\
		break;									\
	case Q_LIST:									\
		q.list_services = (char *)arg;						\
		break;									\
	}										\
	len = grpc__reflection__##v##__server_reflection_request__get_packed_size(&q);	\
	req = malloc(len + 1);								\
	assert_non_null(req);								\
	grpc__reflection__##v##__server_reflection_request__pack(&q, req);		\
	rc = reflection_answer(REFLECTION_##VV, req, len, &out, &outlen);		\
	free(req);									\
	if (rc)										\
		return rc;								\
	assert_non_null(out);								\
	assert_true(outlen > 0);							\
	r = grpc__reflection__##v##__server_reflection_response__unpack(NULL, outlen, out); \
	free(out);									\
	assert_non_null(r);								\
	a->valid_host = dup_or_null(r->valid_host);					\
	if (r->original_request) {							\
		Grpc__Reflection__##V##__ServerReflectionRequest *o = r->original_request; \
											\
		a->has_orig = true;							\
		a->orig_host = dup_or_null(o->host);					\
		a->orig_kind = (int)o->message_request_case;				\
		switch (a->orig_kind) {							\
		case Q_FILE:								\
		case Q_SYMBOL:								\
		case Q_EXT_NUMBERS:							\
		case Q_LIST:								\
			/* the union members are all char * */			\
			a->orig_arg = dup_or_null(o->file_by_filename);			\
			break;								\
		case Q_EXTENSION:							\
			a->orig_arg = dup_or_null(o->file_containing_extension->containing_type); \
			a->orig_number = o->file_containing_extension->extension_number; \
			break;								\
		}									\
	}										\
	a->kind = (int)r->message_response_case;					\
	switch (a->kind) {								\
	case A_FILES:									\
		a->nfiles = r->file_descriptor_response->n_file_descriptor_proto;	\
		assert_true(a->nfiles <= 16);						\
		for (size_t i = 0; i < a->nfiles; i++) {				\
			ProtobufCBinaryData *d = &r->file_descriptor_response->file_descriptor_proto[i]; \
											\
			a->files[i].len = d->len;					\
			a->files[i].data = malloc(d->len + 1);				\
			assert_non_null(a->files[i].data);				\
			memcpy(a->files[i].data, d->data, d->len);			\
		}									\
		break;									\
	case A_EXT_NUMBERS:								\
		a->base_type = dup_or_null(r->all_extension_numbers_response->base_type_name); \
		a->nnumbers = r->all_extension_numbers_response->n_extension_number;	\
		assert_true(a->nnumbers <= 16);						\
		for (size_t i = 0; i < a->nnumbers; i++)				\
			a->numbers[i] = r->all_extension_numbers_response->extension_number[i]; \
		break;									\
	case A_SERVICES:								\
		a->nservices = r->list_services_response->n_service;			\
		assert_true(a->nservices <= 16);					\
		for (size_t i = 0; i < a->nservices; i++)				\
			a->services[i] = dup_or_null(r->list_services_response->service[i]->name); \
		break;									\
	case A_ERROR:									\
		a->err_code = r->error_response->error_code;				\
		a->err_msg = dup_or_null(r->error_response->error_message);		\
		break;									\
	}										\
	grpc__reflection__##v##__server_reflection_response__free_unpacked(r, NULL);	\
	return 0;									\
}

DEFINE_ASK(ask_v1alpha, V1alpha, v1alpha, V1ALPHA)
DEFINE_ASK(ask_v1, V1, v1, V1)

static int ask(int version, const char *host, int kind, const char *arg, int32_t number,
	       struct answer *a)
{
	if (version == REFLECTION_V1ALPHA)
		return ask_v1alpha(host, kind, arg, number, a);
	return ask_v1(host, kind, arg, number, a);
}

static const int versions[] = { REFLECTION_V1ALPHA, REFLECTION_V1 };

/* ---- reading descriptors back with the module's own wire reader ---- */

/* A string field of a message; NULL when absent (the last one wins). */
static char *msg_str(const uint8_t *p, size_t len, uint32_t num)
{
	struct refl_wire w;
	struct refl_field f;
	char *s = NULL;
	int r;

	refl_wire_init(&w, p, len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num != num)
			continue;
		assert_int_equal(f.type, 2);
		free(s);
		s = strndup((const char *)f.data, f.len);
		assert_non_null(s);
	}
	assert_int_equal(r, 0);
	return s;
}

/* Every string of repeated field num, joined with ',' ("" when none). */
static char *msg_strs(const uint8_t *p, size_t len, uint32_t num)
{
	struct refl_wire w;
	struct refl_field f;
	char buf[1024] = "";
	size_t n = 0;
	int r;

	refl_wire_init(&w, p, len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num != num)
			continue;
		assert_int_equal(f.type, 2);
		assert_true(n + f.len + 2 < sizeof(buf));
		if (n)
			buf[n++] = ',';
		memcpy(buf + n, f.data, f.len);
		n += f.len;
		buf[n] = '\0';
	}
	assert_int_equal(r, 0);
	return strdup(buf);
}

/* Names of the files of a file answer, joined with ' '. */
static void assert_files(const struct answer *a, const char *names)
{
	char buf[1024] = "";
	size_t n = 0;

	assert_int_equal(a->kind, A_FILES);
	for (size_t i = 0; i < a->nfiles; i++) {
		char *name = msg_str(a->files[i].data, a->files[i].len, 1);

		assert_non_null(name);
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "", name);
		free(name);
	}
	assert_string_equal(buf, names);
}

static void assert_not_found(const struct answer *a, const char *what)
{
	assert_int_equal(a->kind, A_ERROR);
	assert_int_equal(a->err_code, REFLECTION_NOT_FOUND);
	assert_non_null(a->err_msg);
	assert_non_null(strstr(a->err_msg, what));
}

/* ---- fixtures ---- */

static int setup(void **state)
{
	(void)state;
	return reflection_init(served);
}

static int teardown(void **state)
{
	(void)state;
	reflection_fini();
	return 0;
}

/* ---- the embedded set ---- */

static void test_method(void **state)
{
	(void)state;
	assert_int_equal(reflection_method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
			 REFLECTION_V1ALPHA);
	assert_int_equal(reflection_method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
			 REFLECTION_V1);
	assert_int_equal(reflection_method("/oneshield.agent.v1.Agent/GetStatus"), 0);
	assert_int_equal(reflection_method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfoX"), 0);
	assert_int_equal(reflection_method("grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), 0);
	assert_int_equal(reflection_method(""), 0);
	assert_int_equal(reflection_method(NULL), 0);
}

static void test_list_services(void **state)
{
	struct answer a;

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		assert_int_equal(ask(versions[v], "localhost:9441", Q_LIST, "*", 0, &a), 0);
		assert_int_equal(a.kind, A_SERVICES);
		assert_int_equal(a.nservices, 3);
		for (size_t i = 0; i < 3; i++)
			assert_string_equal(a.services[i], served[i]);
		/* echoed as real servers do */
		assert_string_equal(a.valid_host, "localhost:9441");
		assert_true(a.has_orig);
		assert_string_equal(a.orig_host, "localhost:9441");
		assert_int_equal(a.orig_kind, Q_LIST);
		assert_string_equal(a.orig_arg, "*");
		answer_free(&a);

		/* no host, empty list_services: still a list */
		assert_int_equal(ask(versions[v], NULL, Q_LIST, "", 0, &a), 0);
		assert_int_equal(a.kind, A_SERVICES);
		assert_int_equal(a.nservices, 3);
		assert_string_equal(a.valid_host, "");
		assert_true(a.has_orig);
		assert_int_equal(a.orig_kind, Q_LIST);
		answer_free(&a);
	}
}

static void test_list_services_subset(void **state)
{
	static const char *const only[] = { "oneshield.agent.v1.Agent", NULL };
	struct answer a;

	(void)state;
	assert_int_equal(reflection_init(only), 0);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_LIST, "", 0, &a), 0);
	assert_int_equal(a.nservices, 1);
	assert_string_equal(a.services[0], "oneshield.agent.v1.Agent");
	answer_free(&a);

	assert_int_equal(reflection_init(NULL), 0);
	assert_int_equal(ask(REFLECTION_V1ALPHA, NULL, Q_LIST, "", 0, &a), 0);
	assert_int_equal(a.kind, A_SERVICES);
	assert_int_equal(a.nservices, 0);
	answer_free(&a);

	/* a service the set does not define, or something that is no service */
	static const char *const bogus[] = { "oneshield.agent.v1.Agent", "no.Such", NULL };
	static const char *const message[] = { "oneshield.agent.v1.Event", NULL };

	assert_int_equal(reflection_init(bogus), -ENOENT);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_LIST, "", 0, &a), -ENODEV);
	assert_int_equal(reflection_init(message), -ENOENT);
	assert_int_equal(reflection_init(served), 0);
}

static void test_file_by_filename(void **state)
{
	struct answer a;

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		assert_int_equal(ask(versions[v], NULL, Q_FILE, AGENT_PROTO, 0, &a), 0);
		assert_files(&a, AGENT_PROTO);
		/* the descriptor itself: package, services, the comments of --include_source_info */
		char *pkg = msg_str(a.files[0].data, a.files[0].len, 2);
		assert_string_equal(pkg, "oneshield.agent.v1");
		free(pkg);
		char *deps = msg_strs(a.files[0].data, a.files[0].len, 3);
		assert_string_equal(deps, "");
		free(deps);
		assert_non_null(memmem(a.files[0].data, a.files[0].len, "GetStatus", 9));
		assert_non_null(memmem(a.files[0].data, a.files[0].len, "The same facts as GET /v1/status", 32));
		assert_int_equal(a.orig_kind, Q_FILE);
		assert_string_equal(a.orig_arg, AGENT_PROTO);
		answer_free(&a);

		assert_int_equal(ask(versions[v], NULL, Q_FILE, "grpc/reflection/v1/reflection.proto", 0, &a), 0);
		assert_files(&a, "grpc/reflection/v1/reflection.proto");
		answer_free(&a);

		assert_int_equal(ask(versions[v], NULL, Q_FILE, "oneshield/agent/v1/nope.proto", 0, &a), 0);
		assert_not_found(&a, "oneshield/agent/v1/nope.proto");
		answer_free(&a);

		assert_int_equal(ask(versions[v], NULL, Q_FILE, "", 0, &a), 0);
		assert_not_found(&a, "file");
		answer_free(&a);
	}
}

static void test_symbols(void **state)
{
	static const struct {
		const char *symbol;
		const char *file;
	} cases[] = {
		{ "oneshield.agent.v1.Agent", AGENT_PROTO },			/* service */
		{ "oneshield.agent.v1.Agent.Subscribe", AGENT_PROTO },		/* method */
		{ "oneshield.agent.v1.Agent.GetStatus", AGENT_PROTO },
		{ "oneshield.agent.v1.Event", AGENT_PROTO },			/* message */
		{ "oneshield.agent.v1.Event.FieldsEntry", AGENT_PROTO },	/* nested (map entry) */
		{ "oneshield.agent.v1.EventType", AGENT_PROTO },		/* enum */
		{ "oneshield.agent.v1.AGENT_START_MESSAGE", AGENT_PROTO },	/* enum value */
		{ "oneshield.agent.v1.EventType.AGENT_START_MESSAGE", AGENT_PROTO },
		{ "oneshield.agent.v1.Event.seq", AGENT_PROTO },		/* field */
		{ "oneshield.agent.v1.Event.exit", AGENT_PROTO },		/* oneof */
		{ "oneshield.agent.v1.Bucket", AGENT_PROTO },
		{ "grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto" },
		{ "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
		  "grpc/reflection/v1alpha/reflection.proto" },
		{ "grpc.reflection.v1.ServerReflectionResponse", "grpc/reflection/v1/reflection.proto" },
	};
	struct answer a;

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			assert_int_equal(ask(versions[v], "h", Q_SYMBOL, cases[i].symbol, 0, &a), 0);
			assert_files(&a, cases[i].file);
			assert_string_equal(a.valid_host, "h");
			assert_int_equal(a.orig_kind, Q_SYMBOL);
			assert_string_equal(a.orig_arg, cases[i].symbol);
			answer_free(&a);
		}
	}
}

static void test_unknown_symbol(void **state)
{
	static const char *const unknown[] = {
		"oneshield.agent.v1.Nope",
		"oneshield.agent.v1",			/* a package is no symbol */
		"oneshield.agent.v1.Agent/Subscribe",
		".oneshield.agent.v1.Agent",
		"oneshield.agent.v1.Agent.",
		"Agent",
		"",
	};
	struct answer a;

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
			assert_int_equal(ask(versions[v], NULL, Q_SYMBOL, unknown[i], 0, &a), 0);
			assert_not_found(&a, "symbol not found");
			assert_non_null(strstr(a.err_msg, unknown[i]));
			answer_free(&a);
		}
	}
}

static void test_extensions(void **state)
{
	struct answer a;

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		assert_int_equal(ask(versions[v], NULL, Q_EXT_NUMBERS, "oneshield.agent.v1.Event", 0, &a), 0);
		assert_int_equal(a.kind, A_EXT_NUMBERS);
		assert_string_equal(a.base_type, "oneshield.agent.v1.Event");
		assert_int_equal(a.nnumbers, 0);
		answer_free(&a);

		/* not a message: an enum, a service, nothing */
		assert_int_equal(ask(versions[v], NULL, Q_EXT_NUMBERS, "oneshield.agent.v1.EventType", 0, &a), 0);
		assert_not_found(&a, "oneshield.agent.v1.EventType");
		answer_free(&a);
		assert_int_equal(ask(versions[v], NULL, Q_EXT_NUMBERS, "oneshield.agent.v1.Agent", 0, &a), 0);
		assert_not_found(&a, "not found");
		answer_free(&a);
		assert_int_equal(ask(versions[v], NULL, Q_EXT_NUMBERS, "no.Such", 0, &a), 0);
		assert_not_found(&a, "no.Such");
		answer_free(&a);

		/* proto3: no extension exists */
		assert_int_equal(ask(versions[v], NULL, Q_EXTENSION, "oneshield.agent.v1.Event", 100, &a), 0);
		assert_not_found(&a, "extension not found");
		assert_string_equal(a.orig_arg, "oneshield.agent.v1.Event");
		assert_int_equal(a.orig_number, 100);
		answer_free(&a);
		assert_int_equal(ask(versions[v], NULL, Q_EXTENSION, "no.Such", 1, &a), 0);
		assert_not_found(&a, "no.Such");
		answer_free(&a);
	}
}

static void test_empty_request(void **state)
{
	uint8_t *out;
	size_t outlen;
	struct answer a;

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		/* no oneof set */
		assert_int_equal(ask(versions[v], "x", 0, NULL, 0, &a), 0);
		assert_int_equal(a.kind, A_ERROR);
		assert_int_equal(a.err_code, REFLECTION_INVALID_ARGUMENT);
		assert_non_null(a.err_msg);
		assert_true(strlen(a.err_msg) > 0);
		assert_string_equal(a.valid_host, "x");
		assert_true(a.has_orig);
		answer_free(&a);

		/* zero bytes, NULL or not */
		assert_int_equal(reflection_answer(versions[v], NULL, 0, &out, &outlen), 0);
		assert_true(outlen > 0);
		free(out);
		assert_int_equal(reflection_answer(versions[v], (const uint8_t *)"", 0, &out, &outlen), 0);
		free(out);
	}
}

static void test_malformed_request(void **state)
{
	static const struct {
		const char *b;
		size_t len;
	} bad[] = {
		{ "\x0a\x05" "ab", 4 },				/* host longer than the buffer */
		{ "\x1a\x02" "a", 3 },				/* file_by_filename, truncated */
		{ "\xff", 1 },					/* truncated varint key */
		{ "\x0b", 1 },					/* group start */
		{ "\x0c", 1 },					/* group end */
		{ "\x0f", 1 },					/* wire type 7 */
		{ "\x22\x03" "\xff\xfe\xfd", 5 },		/* symbol, not UTF-8 */
		{ "\x0a\x02" "\xc0\xaf", 4 },			/* host, overlong encoding */
		{ "\x22\x03" "\xed\xa0\x80", 5 },		/* a surrogate */
		{ "\x2a\x03\x08\x01\x02", 5 },			/* extension request, garbage inside */
		{ "\x20\x01", 2 },				/* symbol as a varint */
		{ "\x00\x00", 2 },				/* field 0 */
		/* field 0 as a non-minimal varint: protobuf-c would keep it as
		 * an unknown field and echo it (found by fuzz_reflection) */
		{ "\x80\x00\x80\x00", 4 },
		{ "\x3a\x00\x80\x00\x00", 5 },
		{ "\x2a\x02\x80\x00", 4 },			/* ... inside ExtensionRequest */
		{ "\x2a\x01\x0b", 3 },				/* a group inside it */
		{ "\xf8\xff\xff\xff\x1f\x00", 6 },		/* field 2^30 - 1 */
	};
	uint8_t *out = NULL;
	size_t outlen = 0;

	(void)state;
	for (size_t v = 0; v < 2; v++)
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			assert_int_equal(reflection_answer(versions[v], (const uint8_t *)bad[i].b,
							   bad[i].len, &out, &outlen), -EINVAL);
	assert_null(out);

	/* bad arguments */
	assert_int_equal(reflection_answer(0, (const uint8_t *)"", 0, &out, &outlen), -EINVAL);
	assert_int_equal(reflection_answer(3, (const uint8_t *)"", 0, &out, &outlen), -EINVAL);
	assert_int_equal(reflection_answer(REFLECTION_V1, NULL, 3, &out, &outlen), -EINVAL);
	assert_int_equal(reflection_answer(REFLECTION_V1, (const uint8_t *)"", 0, NULL, &outlen), -EINVAL);

	/* unknown fields are fine: valid wire format */
	assert_int_equal(reflection_answer(REFLECTION_V1, (const uint8_t *)"\x48\x01\x3a\x01*", 5,
					   &out, &outlen), 0);
	free(out);
}

static void test_not_initialized(void **state)
{
	uint8_t *out;
	size_t outlen;

	(void)state;
	reflection_fini();
	reflection_fini();
	assert_int_equal(reflection_answer(REFLECTION_V1, (const uint8_t *)"\x3a\x00", 2, &out, &outlen),
			 -ENODEV);
	assert_int_equal(reflection_init(served), 0);
	assert_int_equal(reflection_answer(REFLECTION_V1, (const uint8_t *)"\x3a\x00", 2, &out, &outlen), 0);
	free(out);
	/* again, over the old state */
	assert_int_equal(reflection_init(served), 0);
}

/* ---- hand-made descriptor sets ---- */

static void add_file(struct w *set, const char *name, const char *pkg, const char *const *deps,
		     const struct w *body)
{
	struct w f = { .n = 0 };

	w_str(&f, 1, name);
	if (pkg)
		w_str(&f, 2, pkg);
	for (; deps && *deps; deps++)
		w_str(&f, 3, *deps);
	if (body) {
		assert_true(f.n + body->n <= sizeof(f.b));
		memcpy(f.b + f.n, body->b, body->n);
		f.n += body->n;
	}
	w_sub(set, 1, &f);
}

static struct w named(const char *name)
{
	struct w m = { .n = 0 };

	w_str(&m, 1, name);
	return m;
}

/* An extension field: name, extendee, number. */
static struct w extension(const char *name, const char *extendee, uint64_t number)
{
	struct w e = named(name);

	w_str(&e, 2, extendee);
	w_uint(&e, 3, number);
	return e;
}

static void test_set_imports(void **state)
{
	static const char *const a_deps[] = { "b.proto", "c.proto", NULL };
	static const char *const b_deps[] = { "c.proto", "d.proto", NULL };
	static const char *const c_deps[] = { "d.proto", NULL };
	static const char *const svc[] = { "p.S", NULL };
	static struct w set;
	struct w body = { .n = 0 }, m, s, sub;
	struct answer a;

	(void)state;
	set.n = 0;
	/* d.proto: message Base { message In {} } in no package */
	m = named("Base");
	sub = named("In");
	w_sub(&m, 3, &sub);
	w_sub(&body, 4, &m);
	add_file(&set, "d.proto", NULL, NULL, &body);
	add_file(&set, "c.proto", "p", c_deps, NULL);
	/* b.proto: service S { rpc M } with the package last */
	body.n = 0;
	s = named("S");
	sub = named("M");
	w_sub(&s, 2, &sub);
	w_sub(&body, 6, &s);
	w_str(&body, 2, "p");
	add_file(&set, "b.proto", NULL, b_deps, &body);
	/* a.proto: extend Base { 100, 7 }, one top-level, one in a message */
	body.n = 0;
	m = extension("ext100", ".Base", 100);
	w_sub(&body, 7, &m);
	s = named("Holder");
	m = extension("ext7", ".Base", 7);
	w_sub(&s, 6, &m);
	w_sub(&body, 4, &s);
	add_file(&set, "a.proto", "p.q", a_deps, &body);

	assert_int_equal(reflection_init_set(set.b, set.n, svc), 0);

	assert_int_equal(ask(REFLECTION_V1, NULL, Q_FILE, "a.proto", 0, &a), 0);
	assert_files(&a, "a.proto b.proto c.proto d.proto");
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1ALPHA, NULL, Q_FILE, "b.proto", 0, &a), 0);
	assert_files(&a, "b.proto c.proto d.proto");
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1ALPHA, NULL, Q_FILE, "d.proto", 0, &a), 0);
	assert_files(&a, "d.proto");
	answer_free(&a);

	assert_int_equal(ask(REFLECTION_V1, NULL, Q_SYMBOL, "p.S.M", 0, &a), 0);
	assert_files(&a, "b.proto c.proto d.proto");
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_SYMBOL, "Base.In", 0, &a), 0);
	assert_files(&a, "d.proto");
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_SYMBOL, "p.q.Holder.ext7", 0, &a), 0);
	assert_files(&a, "a.proto b.proto c.proto d.proto");
	answer_free(&a);

	assert_int_equal(ask(REFLECTION_V1, NULL, Q_LIST, "", 0, &a), 0);
	assert_int_equal(a.nservices, 1);
	assert_string_equal(a.services[0], "p.S");
	answer_free(&a);

	for (size_t v = 0; v < 2; v++) {
		assert_int_equal(ask(versions[v], NULL, Q_EXT_NUMBERS, "Base", 0, &a), 0);
		assert_int_equal(a.kind, A_EXT_NUMBERS);
		assert_string_equal(a.base_type, "Base");
		assert_int_equal(a.nnumbers, 2);
		assert_int_equal(a.numbers[0], 7);
		assert_int_equal(a.numbers[1], 100);
		answer_free(&a);
		assert_int_equal(ask(versions[v], NULL, Q_EXT_NUMBERS, "Base.In", 0, &a), 0);
		assert_int_equal(a.nnumbers, 0);
		answer_free(&a);

		assert_int_equal(ask(versions[v], NULL, Q_EXTENSION, "Base", 7, &a), 0);
		assert_files(&a, "a.proto b.proto c.proto d.proto");
		answer_free(&a);
		assert_int_equal(ask(versions[v], NULL, Q_EXTENSION, "Base", 8, &a), 0);
		assert_not_found(&a, "extension not found: Base, number 8");
		answer_free(&a);
	}
	reflection_fini();
}

static void test_set_cycle(void **state)
{
	static const char *const x_deps[] = { "y.proto", "x.proto", NULL };
	static const char *const y_deps[] = { "x.proto", NULL };
	static struct w set;
	struct answer a;

	(void)state;
	set.n = 0;
	add_file(&set, "x.proto", NULL, x_deps, NULL);
	add_file(&set, "y.proto", NULL, y_deps, NULL);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), 0);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_FILE, "y.proto", 0, &a), 0);
	assert_files(&a, "y.proto x.proto");
	answer_free(&a);
	reflection_fini();
}

/* Not from protoc: one name for a message, a service and an enum value. */
static void test_set_same_name(void **state)
{
	static const char *const svc[] = { "p.X", NULL };
	static struct w set;
	struct w body = { .n = 0 }, m, e;
	struct answer a;

	(void)state;
	set.n = 0;
	m = named("X");
	w_sub(&body, 4, &m);
	w_sub(&body, 6, &m);
	e = named("E");
	m = named("X");
	w_sub(&e, 2, &m);
	w_sub(&body, 5, &e);
	add_file(&set, "a.proto", "p", NULL, &body);
	assert_int_equal(reflection_init_set(set.b, set.n, svc), 0);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_EXT_NUMBERS, "p.X", 0, &a), 0);
	assert_int_equal(a.kind, A_EXT_NUMBERS);
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_LIST, "", 0, &a), 0);
	assert_int_equal(a.nservices, 1);
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_SYMBOL, "p.E.X", 0, &a), 0);
	assert_files(&a, "a.proto");
	answer_free(&a);
	reflection_fini();
}

static void test_set_bad(void **state)
{
	static const char *const missing[] = { "nowhere.proto", NULL };
	static struct w set;
	struct w body, m, sub;

	(void)state;
	/* an import the set does not hold */
	set.n = 0;
	add_file(&set, "a.proto", NULL, missing, NULL);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* the same file twice */
	set.n = 0;
	add_file(&set, "a.proto", NULL, NULL, NULL);
	add_file(&set, "a.proto", NULL, NULL, NULL);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* a file without a name */
	set.n = 0;
	m.n = 0;
	w_str(&m, 2, "pkg");
	w_sub(&set, 1, &m);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* a message without a name */
	set.n = 0;
	body.n = 0;
	m.n = 0;
	w_uint(&m, 7, 1);
	w_sub(&body, 4, &m);
	add_file(&set, "a.proto", NULL, NULL, &body);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* a name with a NUL inside */
	set.n = 0;
	body.n = 0;
	m.n = 0;
	w_bytes(&m, 1, "A\0B", 3);
	w_sub(&body, 5, &m);
	add_file(&set, "a.proto", NULL, NULL, &body);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* message_type as a varint */
	set.n = 0;
	body.n = 0;
	w_uint(&body, 4, 3);
	add_file(&set, "a.proto", NULL, NULL, &body);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* an extension without an extendee, and with number 0 */
	set.n = 0;
	body.n = 0;
	m = named("e");
	w_uint(&m, 3, 5);
	w_sub(&body, 7, &m);
	add_file(&set, "a.proto", NULL, NULL, &body);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);
	set.n = 0;
	body.n = 0;
	m = extension("e", ".A", 0);
	w_sub(&body, 7, &m);
	add_file(&set, "a.proto", NULL, NULL, &body);
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), -EINVAL);

	/* nested deeper than the limit; at the limit it loads */
	for (int depth = 64; depth <= 65; depth++) {
		m = named("M");
		for (int i = 0; i < depth; i++) {
			sub = named("M");
			w_sub(&sub, 3, &m);
			m = sub;
		}
		set.n = 0;
		body.n = 0;
		w_sub(&body, 4, &m);
		add_file(&set, "a.proto", NULL, NULL, &body);
		assert_int_equal(reflection_init_set(set.b, set.n, NULL), depth == 64 ? 0 : -EINVAL);
	}

	/* truncated, at every length: never a crash, and a failure leaves nothing */
	set.n = 0;
	body.n = 0;
	m = named("Msg");
	w_sub(&body, 4, &m);
	add_file(&set, "a.proto", "p", NULL, &body);
	for (size_t n = 1; n < set.n; n++) {
		uint8_t *copy = malloc(n);

		assert_non_null(copy);
		memcpy(copy, set.b, n);
		assert_int_equal(reflection_init_set(copy, n, NULL), -EINVAL);
		free(copy);
	}
	assert_int_equal(reflection_init_set(set.b, set.n, NULL), 0);

	/* empty: loads, and answers NOT_FOUND */
	assert_int_equal(reflection_init_set(NULL, 0, NULL), 0);
	struct answer a;

	assert_int_equal(ask(REFLECTION_V1, NULL, Q_SYMBOL, "A", 0, &a), 0);
	assert_not_found(&a, "A");
	answer_free(&a);
	assert_int_equal(ask(REFLECTION_V1, NULL, Q_FILE, "a.proto", 0, &a), 0);
	assert_not_found(&a, "a.proto");
	answer_free(&a);
	reflection_fini();
}

/* ---- the wire reader ---- */

static void test_wire(void **state)
{
	struct refl_wire w;
	struct refl_field f;
	/* 1: varint 150; 2: "hi"; 3: fixed64; 4: fixed32; 5: max varint */
	static const uint8_t ok[] = {
		0x08, 0x96, 0x01,
		0x12, 0x02, 'h', 'i',
		0x19, 1, 2, 3, 4, 5, 6, 7, 8,
		0x25, 0xef, 0xbe, 0xad, 0xde,
		0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
		0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00,	/* field 2^29-1 */
	};

	(void)state;
	refl_wire_init(&w, ok, sizeof(ok));
	assert_int_equal(refl_wire_next(&w, &f), 1);
	assert_int_equal(f.num, 1);
	assert_int_equal(f.type, 0);
	assert_int_equal(f.v, 150);
	assert_int_equal(refl_wire_next(&w, &f), 1);
	assert_int_equal(f.num, 2);
	assert_int_equal(f.type, 2);
	assert_int_equal(f.len, 2);
	assert_memory_equal(f.data, "hi", 2);
	assert_int_equal(refl_wire_next(&w, &f), 1);
	assert_int_equal(f.num, 3);
	assert_int_equal(f.v, 0x0807060504030201ull);
	assert_int_equal(refl_wire_next(&w, &f), 1);
	assert_int_equal(f.num, 4);
	assert_int_equal(f.v, 0xdeadbeefu);
	assert_int_equal(refl_wire_next(&w, &f), 1);
	assert_int_equal(f.num, 5);
	assert_true(f.v == UINT64_MAX);
	assert_int_equal(refl_wire_next(&w, &f), 1);
	assert_int_equal(f.num, 536870911);
	assert_int_equal(refl_wire_next(&w, &f), 0);
	assert_int_equal(refl_wire_next(&w, &f), 0);

	refl_wire_init(&w, NULL, 0);
	assert_int_equal(refl_wire_next(&w, &f), 0);

	static const struct {
		const char *b;
		size_t len;
	} bad[] = {
		{ "\x08", 1 },					/* varint missing */
		{ "\x08\x80", 2 },				/* varint truncated */
		{ "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11 },	/* > 64 bits */
		{ "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x81\x00", 12 },	/* 11 bytes */
		{ "\x12\x03" "ab", 4 },				/* length past the end */
		{ "\x12\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10 },	/* huge length */
		{ "\x19\x01\x02\x03\x04\x05\x06\x07", 8 },	/* fixed64 short */
		{ "\x25\x01\x02\x03", 4 },			/* fixed32 short */
		{ "\x0b", 1 },					/* groups */
		{ "\x0c", 1 },
		{ "\x0e", 1 },					/* wire type 6 */
		{ "\x07", 1 },					/* field 0 */
		{ "\x80\x80\x80\x80\x10\x00", 6 },		/* field 2^29 */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		refl_wire_init(&w, (const uint8_t *)bad[i].b, bad[i].len);
		assert_int_equal(refl_wire_next(&w, &f), -EINVAL);
	}
}

/* The whole embedded set walks cleanly, and every file answer parses. */
static void test_every_file(void **state)
{
	static const char *const files[] = {
		AGENT_PROTO,
		"grpc/reflection/v1alpha/reflection.proto",
		"grpc/reflection/v1/reflection.proto",
	};
	struct answer a;

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		assert_int_equal(ask(REFLECTION_V1, NULL, Q_FILE, files[i], 0, &a), 0);
		assert_int_equal(a.kind, A_FILES);
		for (size_t j = 0; j < a.nfiles; j++) {
			struct refl_wire w;
			struct refl_field f;
			int r;

			refl_wire_init(&w, a.files[j].data, a.files[j].len);
			while ((r = refl_wire_next(&w, &f)) > 0)
				;
			assert_int_equal(r, 0);
		}
		answer_free(&a);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_method),
		cmocka_unit_test(test_wire),
		cmocka_unit_test_setup_teardown(test_list_services, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_services_subset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_by_filename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symbols, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_symbol, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extensions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_initialized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_file, setup, teardown),
		cmocka_unit_test_teardown(test_set_imports, teardown),
		cmocka_unit_test_teardown(test_set_cycle, teardown),
		cmocka_unit_test_teardown(test_set_same_name, teardown),
		cmocka_unit_test_teardown(test_set_bad, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
