/* gRPC server reflection (grpc.reflection.v1alpha and grpc.reflection.v1)
 * as message in, message out: the gRPC server hands each message of a
 * ServerReflectionInfo stream to reflection_answer() and sends back what it
 * returns, one response per request, in order. Nothing here touches gRPC.
 *
 * The answers come from the FileDescriptorSet of proto/ that the build
 * embeds (os_descriptor_set), parsed once by reflection_init(). After that
 * the state is read-only: reflection_answer() may run on any thread, but
 * not concurrently with reflection_init() or reflection_fini(). */
#ifndef OS_REFLECTION_H
#define OS_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

/* reflection_method() results. */
#define REFLECTION_V1ALPHA	1
#define REFLECTION_V1		2

/* gRPC status codes put in error_response.error_code. */
#define REFLECTION_INVALID_ARGUMENT	3
#define REFLECTION_NOT_FOUND		5

/* served: NULL-terminated list of fully-qualified service names the server
 * really serves (copied); list_services answers with these, in this order.
 * NULL is an empty list. Parses the embedded descriptor set. 0, -EINVAL when
 * the set is malformed or inconsistent (a duplicate file, a missing import),
 * -ENOENT when a served name is not a service of the set, -ENOMEM. Calling
 * it again replaces the previous state. */
int reflection_init(const char *const *served);

/* Frees everything; reflection_answer() fails with -ENODEV afterwards. Safe
 * to call when not initialized, and twice. */
void reflection_fini(void);

/* REFLECTION_V1ALPHA for "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
 * REFLECTION_V1 for "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
 * 0 for any other path (and NULL). */
int reflection_method(const char *path);

/* Answers one serialized ServerReflectionRequest of that version with a
 * serialized ServerReflectionResponse in *out (malloc'd, the caller frees,
 * never empty) of *outlen bytes. Returns 0; -EINVAL for malformed request
 * bytes or a bad version (the server then fails the call with
 * INVALID_ARGUMENT); -ENODEV before reflection_init(); -ENOMEM. A request
 * that parses but cannot be answered (unknown file, symbol or type; no
 * request set) is a normal response carrying error_response. */
int reflection_answer(int version, const uint8_t *req, size_t len,
		      uint8_t **out, size_t *outlen);

/* ---- for tests and fuzzing ---- */

/* reflection_init() over any serialized FileDescriptorSet. The file bytes
 * are not copied: set must stay valid until reflection_fini(). */
int reflection_init_set(const uint8_t *set, size_t len, const char *const *served);

/* A strictly bounds-checked protobuf wire reader. Wire types 0 (varint),
 * 1 (fixed64), 2 (length-delimited) and 5 (fixed32); groups, field number
 * 0, over-long varints and lengths past the end are malformed. */
struct refl_wire {
	const uint8_t *p;
	const uint8_t *end;
};

struct refl_field {
	uint32_t num;		/* field number */
	uint8_t type;		/* wire type */
	uint64_t v;		/* value of types 0, 1 and 5 */
	const uint8_t *data;	/* bytes of type 2, inside the buffer read */
	size_t len;
};

void refl_wire_init(struct refl_wire *w, const uint8_t *data, size_t len);
/* 1 with the next field in *f, 0 at the end, -EINVAL when malformed. */
int refl_wire_next(struct refl_wire *w, struct refl_field *f);

#endif
