/* gRPC server reflection over the embedded descriptor set.
 *
 * Design: the build embeds the serialized FileDescriptorSet of every proto
 * under proto/ (os_descriptor_set .. os_descriptor_set_end). There is no C
 * binding for descriptor.proto, so reflection_init() walks its wire format
 * with the small reader below, which checks every length against the end of
 * its buffer and rejects anything malformed. From each FileDescriptorProto it
 * keeps the name, the raw bytes (a pointer into the set: they are sent back
 * verbatim), the imports (resolved to file indices) and one entry per
 * fully-qualified symbol the file defines: messages (nested too), fields,
 * oneofs, enums, enum values (as siblings of their enum, as protobuf scopes
 * them, and also under the enum), services, methods and extensions, plus
 * the extensions by (extended type, number). Files and symbols are sorted
 * for bsearch; after init everything is read-only.
 *
 * reflection_answer() unpacks the request with protobuf-c (v1alpha and v1
 * are the same messages in two packages), and writes the response directly
 * in wire format, which is also the same for both versions: valid_host and
 * original_request echoed, then exactly one of the message_response fields.
 * A file answer is the file asked for first, then its transitive imports,
 * each once (breadth first). */
#include "reflection.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "buf.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

/* Defined by the build ($(BUILD)/gen/descriptors.c). */
extern const unsigned char os_descriptor_set[], os_descriptor_set_end[];

#define MAX_NESTING	64		/* nested message types */
#define MAX_EXT_NUMBER	536870911	/* 2^29 - 1, the largest field number */

/* Wire types. */
#define WT_VARINT	0
#define WT_FIXED64	1
#define WT_LEN		2
#define WT_FIXED32	5

/* ServerReflectionRequest.message_request field numbers, which protobuf-c
 * also uses as the oneof case values. */
#define REQ_FILE_BY_FILENAME		3
#define REQ_FILE_CONTAINING_SYMBOL	4
#define REQ_FILE_CONTAINING_EXTENSION	5
#define REQ_ALL_EXTENSION_NUMBERS	6
#define REQ_LIST_SERVICES		7

_Static_assert(GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME == REQ_FILE_BY_FILENAME &&
	       GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL == REQ_FILE_CONTAINING_SYMBOL &&
	       GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION == REQ_FILE_CONTAINING_EXTENSION &&
	       GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE == REQ_ALL_EXTENSION_NUMBERS &&
	       GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES == REQ_LIST_SERVICES,
	       "v1alpha oneof cases are the field numbers");
_Static_assert(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME == REQ_FILE_BY_FILENAME &&
	       GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL == REQ_FILE_CONTAINING_SYMBOL &&
	       GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION == REQ_FILE_CONTAINING_EXTENSION &&
	       GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE == REQ_ALL_EXTENSION_NUMBERS &&
	       GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES == REQ_LIST_SERVICES,
	       "v1 oneof cases are the field numbers");

/* ServerReflectionResponse field numbers. */
enum {
	RESP_VALID_HOST = 1,
	RESP_ORIGINAL_REQUEST = 2,
	RESP_FILE_DESCRIPTOR = 4,
	RESP_EXTENSION_NUMBERS = 5,
	RESP_LIST_SERVICES = 6,
	RESP_ERROR = 7,
};

enum sym_kind {
	SYM_MESSAGE,
	SYM_FIELD,
	SYM_ONEOF,
	SYM_ENUM,
	SYM_ENUM_VALUE,
	SYM_SERVICE,
	SYM_METHOD,
	SYM_EXTENSION,
};

struct rfile {
	char *name;
	const uint8_t *raw;		/* the FileDescriptorProto, in the set */
	size_t len;
	char **dep_names;		/* while loading */
	uint32_t *deps;			/* file indices, after loading */
	size_t ndeps;
};

struct rsym {
	char *name;			/* fully-qualified, no leading dot */
	uint32_t file;
	enum sym_kind kind;
};

struct rext {
	char *extendee;			/* fully-qualified, no leading dot */
	int32_t number;
	uint32_t file;
};

static struct db {
	bool ready;
	struct rfile *files;
	size_t nfiles, files_cap;
	uint32_t *by_name;		/* file indices sorted by name */
	struct rsym *syms;
	size_t nsyms, syms_cap;
	struct rext *exts;
	size_t nexts, exts_cap;
	char **served;
	size_t nserved;
} db;

/* ---- wire reader ---- */

void refl_wire_init(struct refl_wire *w, const uint8_t *data, size_t len)
{
	w->p = data;
	w->end = data ? data + len : data;
}

static int get_varint(struct refl_wire *w, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned int i = 0; i < 10; i++) {
		if (w->p >= w->end)
			return -EINVAL;
		uint8_t c = *w->p++;
		/* the tenth byte holds bit 63 only */
		if (i == 9 && c > 1)
			return -EINVAL;
		x |= (uint64_t)(c & 0x7f) << (7 * i);
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -EINVAL;
}

int refl_wire_next(struct refl_wire *w, struct refl_field *f)
{
	uint64_t key, v;
	size_t left;

	if (!w->p || w->p >= w->end)
		return 0;
	if (get_varint(w, &key))
		return -EINVAL;
	if ((key >> 3) == 0 || (key >> 3) > MAX_EXT_NUMBER)
		return -EINVAL;
	f->num = (uint32_t)(key >> 3);
	f->type = (uint8_t)(key & 7);
	f->v = 0;
	f->data = NULL;
	f->len = 0;
	left = (size_t)(w->end - w->p);
	switch (f->type) {
	case WT_VARINT:
		return get_varint(w, &f->v) ? -EINVAL : 1;
	case WT_FIXED64:
		if (left < 8)
			return -EINVAL;
		for (int i = 7; i >= 0; i--)
			f->v = f->v << 8 | w->p[i];
		w->p += 8;
		return 1;
	case WT_FIXED32:
		if (left < 4)
			return -EINVAL;
		for (int i = 3; i >= 0; i--)
			f->v = f->v << 8 | w->p[i];
		w->p += 4;
		return 1;
	case WT_LEN:
		if (get_varint(w, &v))
			return -EINVAL;
		left = (size_t)(w->end - w->p);
		if (v > left)
			return -EINVAL;
		f->data = w->p;
		f->len = (size_t)v;
		w->p += f->len;
		return 1;
	default:
		return -EINVAL;
	}
}

/* ---- loading ---- */

static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 16;
	void *p = reallocarray(*arr, ncap, size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

static bool valid_name(const uint8_t *p, size_t len)
{
	return len > 0 && !memchr(p, '\0', len);
}

/* A length-delimited field as a C string: non-empty, no NUL inside. */
static int field_str(const struct refl_field *f, char **out)
{
	if (f->type != WT_LEN || !valid_name(f->data, f->len))
		return -EINVAL;
	*out = strndup((const char *)f->data, f->len);
	return *out ? 0 : -ENOMEM;
}

/* The name (field 1, the last one as protobuf merges) of a descriptor message. */
static int desc_name(const struct refl_field *msg, const uint8_t **name, size_t *nlen)
{
	struct refl_wire w;
	struct refl_field f;
	int r;

	if (msg->type != WT_LEN)
		return -EINVAL;
	*name = NULL;
	*nlen = 0;
	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num != 1)
			continue;
		if (f.type != WT_LEN)
			return -EINVAL;
		*name = f.data;
		*nlen = f.len;
	}
	if (r < 0 || !*name || !valid_name(*name, *nlen))
		return -EINVAL;
	return 0;
}

/* Adds scope.name (name alone when scope is empty); *full, when asked, is
 * the stored string (owned by db, stable). */
static int add_sym(const char *scope, const uint8_t *name, size_t nlen, uint32_t file,
		   enum sym_kind kind, const char **full)
{
	size_t sl = strlen(scope);
	char *s;

	if (grow((void **)&db.syms, &db.syms_cap, db.nsyms, sizeof(*db.syms)))
		return -ENOMEM;
	s = malloc(sl + 1 + nlen + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, scope, sl);
	if (sl)
		s[sl++] = '.';
	memcpy(s + sl, name, nlen);
	s[sl + nlen] = '\0';
	db.syms[db.nsyms++] = (struct rsym){ .name = s, .file = file, .kind = kind };
	if (full)
		*full = s;
	return 0;
}

/* The symbol of a descriptor message whose only interesting field is its name. */
static int walk_named(const struct refl_field *msg, const char *scope, uint32_t file,
		      enum sym_kind kind, const char **full)
{
	const uint8_t *name;
	size_t nlen;

	if (desc_name(msg, &name, &nlen))
		return -EINVAL;
	return add_sym(scope, name, nlen, file, kind, full);
}

/* EnumDescriptorProto: name 1, value 2 (EnumValueDescriptorProto, name 1). */
static int walk_enum(const struct refl_field *msg, const char *scope, uint32_t file)
{
	struct refl_wire w;
	struct refl_field f;
	const char *full;
	const uint8_t *name;
	size_t nlen;
	int r;

	r = walk_named(msg, scope, file, SYM_ENUM, &full);
	if (r)
		return r;
	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num != 2)
			continue;
		if (desc_name(&f, &name, &nlen))
			return -EINVAL;
		r = add_sym(scope, name, nlen, file, SYM_ENUM_VALUE, NULL);
		if (!r)
			r = add_sym(full, name, nlen, file, SYM_ENUM_VALUE, NULL);
		if (r)
			return r;
	}
	return r;
}

/* FieldDescriptorProto of an extension: name 1, extendee 2, number 3. */
static int walk_extension(const struct refl_field *msg, const char *scope, uint32_t file)
{
	struct refl_wire w;
	struct refl_field f;
	const uint8_t *ext = NULL;
	size_t elen = 0;
	uint64_t num = 0;
	char *extendee;
	int r;

	r = walk_named(msg, scope, file, SYM_EXTENSION, NULL);
	if (r)
		return r;
	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num == 2) {
			if (f.type != WT_LEN)
				return -EINVAL;
			ext = f.data;
			elen = f.len;
		} else if (f.num == 3) {
			if (f.type != WT_VARINT)
				return -EINVAL;
			num = f.v;
		}
	}
	if (r < 0)
		return r;
	/* protoc writes the extendee fully-qualified, with a leading dot */
	if (ext && elen && *ext == '.') {
		ext++;
		elen--;
	}
	if (!ext || !valid_name(ext, elen) || num < 1 || num > MAX_EXT_NUMBER)
		return -EINVAL;
	if (grow((void **)&db.exts, &db.exts_cap, db.nexts, sizeof(*db.exts)))
		return -ENOMEM;
	extendee = strndup((const char *)ext, elen);
	if (!extendee)
		return -ENOMEM;
	db.exts[db.nexts++] = (struct rext){ .extendee = extendee, .number = (int32_t)num,
					     .file = file };
	return 0;
}

/* DescriptorProto: name 1, field 2, nested_type 3, enum_type 4, extension 6,
 * oneof_decl 8. */
static int walk_message(const struct refl_field *msg, const char *scope, uint32_t file,
			int depth)
{
	struct refl_wire w;
	struct refl_field f;
	const char *full;
	int r;

	if (depth > MAX_NESTING)
		return -EINVAL;
	r = walk_named(msg, scope, file, SYM_MESSAGE, &full);
	if (r)
		return r;
	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		switch (f.num) {
		case 2:
			r = walk_named(&f, full, file, SYM_FIELD, NULL);
			break;
		case 3:
			r = walk_message(&f, full, file, depth + 1);
			break;
		case 4:
			r = walk_enum(&f, full, file);
			break;
		case 6:
			r = walk_extension(&f, full, file);
			break;
		case 8:
			r = walk_named(&f, full, file, SYM_ONEOF, NULL);
			break;
		default:
			r = 0;
		}
		if (r)
			return r;
	}
	return r;
}

/* ServiceDescriptorProto: name 1, method 2 (MethodDescriptorProto, name 1). */
static int walk_service(const struct refl_field *msg, const char *scope, uint32_t file)
{
	struct refl_wire w;
	struct refl_field f;
	const char *full;
	int r;

	r = walk_named(msg, scope, file, SYM_SERVICE, &full);
	if (r)
		return r;
	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num != 2)
			continue;
		r = walk_named(&f, full, file, SYM_METHOD, NULL);
		if (r)
			return r;
	}
	return r;
}

/* FileDescriptorProto: name 1, package 2, dependency 3, message_type 4,
 * enum_type 5, service 6, extension 7. */
static int walk_file(const struct refl_field *msg)
{
	struct refl_wire w;
	struct refl_field f;
	struct rfile *rf;
	char *pkg = NULL, *s;
	uint32_t idx;
	size_t deps_cap = 0;
	int r;

	if (msg->type != WT_LEN)
		return -EINVAL;
	if (db.nfiles >= UINT32_MAX)
		return -EINVAL;
	if (grow((void **)&db.files, &db.files_cap, db.nfiles, sizeof(*db.files)))
		return -ENOMEM;
	idx = (uint32_t)db.nfiles++;
	rf = &db.files[idx];
	*rf = (struct rfile){ .raw = msg->data, .len = msg->len };

	/* first the name, package and imports: the package scopes the rest */
	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num < 1 || f.num > 3)
			continue;
		r = field_str(&f, &s);
		if (r)
			goto out;
		if (f.num == 1) {
			free(rf->name);
			rf->name = s;
		} else if (f.num == 2) {
			free(pkg);
			pkg = s;
		} else {
			if (grow((void **)&rf->dep_names, &deps_cap, rf->ndeps,
				 sizeof(*rf->dep_names))) {
				free(s);
				r = -ENOMEM;
				goto out;
			}
			rf->dep_names[rf->ndeps++] = s;
		}
	}
	if (r < 0)
		goto out;
	if (!rf->name) {
		r = -EINVAL;
		goto out;
	}

	refl_wire_init(&w, msg->data, msg->len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		const char *scope = pkg ? pkg : "";

		switch (f.num) {
		case 4:
			r = walk_message(&f, scope, idx, 0);
			break;
		case 5:
			r = walk_enum(&f, scope, idx);
			break;
		case 6:
			r = walk_service(&f, scope, idx);
			break;
		case 7:
			r = walk_extension(&f, scope, idx);
			break;
		default:
			r = 0;
		}
		if (r)
			goto out;
	}
out:
	free(pkg);
	return r < 0 ? r : 0;
}

static int cmp_file_idx(const void *a, const void *b)
{
	return strcmp(db.files[*(const uint32_t *)a].name, db.files[*(const uint32_t *)b].name);
}

static int cmp_file_key(const void *key, const void *elem)
{
	return strcmp(key, db.files[*(const uint32_t *)elem].name);
}

static int cmp_sym(const void *a, const void *b)
{
	return strcmp(((const struct rsym *)a)->name, ((const struct rsym *)b)->name);
}

static int cmp_sym_key(const void *key, const void *elem)
{
	return strcmp(key, ((const struct rsym *)elem)->name);
}

static int cmp_ext(const void *a, const void *b)
{
	const struct rext *x = a, *y = b;
	int c = strcmp(x->extendee, y->extendee);

	if (c)
		return c;
	return (x->number > y->number) - (x->number < y->number);
}

static int find_file(const char *name)
{
	const uint32_t *p;

	if (!db.nfiles)
		return -1;
	p = bsearch(name, db.by_name, db.nfiles, sizeof(*db.by_name), cmp_file_key);
	return p ? (int)*p : -1;
}

static const struct rsym *find_sym(const char *name)
{
	if (!db.nsyms)
		return NULL;
	return bsearch(name, db.syms, db.nsyms, sizeof(*db.syms), cmp_sym_key);
}

/* A symbol of that kind: protoc never defines a name twice, but a set made
 * otherwise may, so look at every entry of the name. */
static const struct rsym *find_sym_kind(const char *name, enum sym_kind kind)
{
	const struct rsym *s = find_sym(name), *end;

	if (!s)
		return NULL;
	end = db.syms + db.nsyms;
	while (s > db.syms && !strcmp(s[-1].name, name))
		s--;
	for (; s < end && !strcmp(s->name, name); s++)
		if (s->kind == kind)
			return s;
	return NULL;
}

/* Sorts the tables and resolves imports: the set must hold each file once
 * and every file it imports. */
static int index_db(void)
{
	if (!db.nfiles)
		return 0;
	db.by_name = calloc(db.nfiles, sizeof(*db.by_name));
	if (!db.by_name)
		return -ENOMEM;
	for (size_t i = 0; i < db.nfiles; i++)
		db.by_name[i] = (uint32_t)i;
	qsort(db.by_name, db.nfiles, sizeof(*db.by_name), cmp_file_idx);
	for (size_t i = 1; i < db.nfiles; i++)
		if (!cmp_file_idx(&db.by_name[i - 1], &db.by_name[i]))
			return -EINVAL;

	for (size_t i = 0; i < db.nfiles; i++) {
		struct rfile *rf = &db.files[i];

		if (!rf->ndeps)
			continue;
		rf->deps = calloc(rf->ndeps, sizeof(*rf->deps));
		if (!rf->deps)
			return -ENOMEM;
		for (size_t j = 0; j < rf->ndeps; j++) {
			int d = find_file(rf->dep_names[j]);

			if (d < 0)
				return -EINVAL;
			rf->deps[j] = (uint32_t)d;
		}
	}
	if (db.nsyms)
		qsort(db.syms, db.nsyms, sizeof(*db.syms), cmp_sym);
	if (db.nexts)
		qsort(db.exts, db.nexts, sizeof(*db.exts), cmp_ext);
	return 0;
}

static int copy_served(const char *const *served)
{
	size_t n = 0;

	while (served && served[n])
		n++;
	if (!n)
		return 0;
	db.served = calloc(n, sizeof(*db.served));
	if (!db.served)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!find_sym_kind(served[i], SYM_SERVICE))
			return -ENOENT;
		db.served[i] = strdup(served[i]);
		if (!db.served[i])
			return -ENOMEM;
		db.nserved++;
	}
	return 0;
}

void reflection_fini(void)
{
	for (size_t i = 0; i < db.nfiles; i++) {
		struct rfile *rf = &db.files[i];

		free(rf->name);
		for (size_t j = 0; j < rf->ndeps; j++)
			free(rf->dep_names[j]);
		free(rf->dep_names);
		free(rf->deps);
	}
	free(db.files);
	free(db.by_name);
	for (size_t i = 0; i < db.nsyms; i++)
		free(db.syms[i].name);
	free(db.syms);
	for (size_t i = 0; i < db.nexts; i++)
		free(db.exts[i].extendee);
	free(db.exts);
	for (size_t i = 0; i < db.nserved; i++)
		free(db.served[i]);
	free(db.served);
	memset(&db, 0, sizeof(db));
}

int reflection_init_set(const uint8_t *set, size_t len, const char *const *served)
{
	struct refl_wire w;
	struct refl_field f;
	int r;

	reflection_fini();
	/* FileDescriptorSet: file 1 */
	refl_wire_init(&w, set, len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (f.num != 1)
			continue;
		r = walk_file(&f);
		if (r)
			break;
	}
	if (!r)
		r = index_db();
	if (!r)
		r = copy_served(served);
	if (r) {
		reflection_fini();
		return r;
	}
	db.ready = true;
	return 0;
}

int reflection_init(const char *const *served)
{
	size_t len = (size_t)((uintptr_t)os_descriptor_set_end - (uintptr_t)os_descriptor_set);

	return reflection_init_set(os_descriptor_set, len, served);
}

int reflection_method(const char *path)
{
	if (!path)
		return 0;
	if (!strcmp(path, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"))
		return REFLECTION_V1ALPHA;
	if (!strcmp(path, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"))
		return REFLECTION_V1;
	return 0;
}

/* ---- answering ---- */

/* One request of either version. */
struct request {
	const char *host;
	int kind;
	const char *arg;		/* the string of the request; the type of
					 * file_containing_extension */
	int32_t number;			/* file_containing_extension */
};

/* The two versions' generated structs have the same members. */
#define REQUEST_FROM(m, r) do {							\
	(r)->host = (m)->host;							\
	(r)->kind = (int)(m)->message_request_case;				\
	switch ((r)->kind) {							\
	case REQ_FILE_BY_FILENAME:						\
		(r)->arg = (m)->file_by_filename;				\
		break;								\
	case REQ_FILE_CONTAINING_SYMBOL:					\
		(r)->arg = (m)->file_containing_symbol;				\
		break;								\
	case REQ_FILE_CONTAINING_EXTENSION:					\
		if ((m)->file_containing_extension) {				\
			(r)->arg = (m)->file_containing_extension->containing_type; \
			(r)->number = (m)->file_containing_extension->extension_number; \
		}								\
		break;								\
	case REQ_ALL_EXTENSION_NUMBERS:						\
		(r)->arg = (m)->all_extension_numbers_of_type;			\
		break;								\
	case REQ_LIST_SERVICES:							\
		(r)->arg = (m)->list_services;					\
		break;								\
	}									\
} while (0)

/* The wire format of a request, checked with the strict reader before
 * protobuf-c sees it: protobuf-c keeps what it does not know (a field 0 in
 * a non-minimal varint, for one) as unknown fields and would pack them back
 * into original_request, where the client's parser would choke. The
 * ExtensionRequest inside (field 5) is checked the same way. */
static int check_request(const uint8_t *p, size_t len, int depth)
{
	struct refl_wire w;
	struct refl_field f;
	int r;

	refl_wire_init(&w, p, len);
	while ((r = refl_wire_next(&w, &f)) > 0) {
		if (depth == 0 && f.num == REQ_FILE_CONTAINING_EXTENSION && f.type == WT_LEN &&
		    check_request(f.data, f.len, depth + 1))
			return -EINVAL;
	}
	return r;
}

/* proto3 strings are UTF-8; a client's protobuf would reject our echo of
 * anything else, so such a request is malformed. */
static bool valid_utf8(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	if (!s)
		return true;
	while (*s) {
		unsigned int c = *s++, n, cp;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		for (unsigned int i = 0; i < n; i++, s++) {
			if ((*s & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (*s & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

static void put_varint(struct buf *b, uint64_t v)
{
	uint8_t t[10];
	size_t n = 0;

	do {
		t[n] = v & 0x7f;
		v >>= 7;
		if (v)
			t[n] |= 0x80;
		n++;
	} while (v);
	buf_append(b, t, n);
}

static void put_tag(struct buf *b, uint32_t num, unsigned int type)
{
	put_varint(b, (uint64_t)num << 3 | type);
}

static void put_bytes(struct buf *b, uint32_t num, const void *p, size_t len)
{
	put_tag(b, num, WT_LEN);
	put_varint(b, len);
	buf_append(b, p, len);
}

/* A proto3 string: left out when empty. */
static void put_str(struct buf *b, uint32_t num, const char *s)
{
	if (s && *s)
		put_bytes(b, num, s, strlen(s));
}

/* Appends sub as embedded message num (even when empty: a oneof member is
 * set by its presence) and frees it. */
static void put_sub(struct buf *b, uint32_t num, struct buf *sub)
{
	if (sub->oom)
		b->oom = true;
	else
		put_bytes(b, num, sub->data, sub->len);
	buf_free(sub);
}

/* ErrorResponse with the text in msg (consumed). */
static void put_error(struct buf *b, int code, struct buf *msg)
{
	struct buf sub;

	buf_init(&sub);
	put_tag(&sub, 1, WT_VARINT);
	put_varint(&sub, (uint64_t)(int64_t)code);
	if (msg->oom)
		sub.oom = true;
	else
		put_bytes(&sub, 2, msg->data, msg->len);
	buf_free(msg);
	put_sub(b, RESP_ERROR, &sub);
}

static void put_not_found(struct buf *b, const char *what, const char *name)
{
	struct buf msg;

	buf_init(&msg);
	buf_printf(&msg, "%s not found: %s", what, name);
	put_error(b, REFLECTION_NOT_FOUND, &msg);
}

/* FileDescriptorResponse: file first, then its transitive imports. */
static void put_files(struct buf *b, uint32_t file)
{
	struct buf sub;
	uint32_t *queue = calloc(db.nfiles, sizeof(*queue));
	bool *seen = calloc(db.nfiles, sizeof(*seen));
	size_t n = 1;

	if (!queue || !seen) {
		b->oom = true;
		goto out;
	}
	queue[0] = file;
	seen[file] = true;
	for (size_t i = 0; i < n; i++) {
		const struct rfile *rf = &db.files[queue[i]];

		for (size_t j = 0; j < rf->ndeps; j++) {
			if (!seen[rf->deps[j]]) {
				seen[rf->deps[j]] = true;
				queue[n++] = rf->deps[j];
			}
		}
	}
	buf_init(&sub);
	for (size_t i = 0; i < n; i++)
		put_bytes(&sub, 1, db.files[queue[i]].raw, db.files[queue[i]].len);
	put_sub(b, RESP_FILE_DESCRIPTOR, &sub);
out:
	free(queue);
	free(seen);
}

static void put_services(struct buf *b)
{
	struct buf sub, svc;

	buf_init(&sub);
	for (size_t i = 0; i < db.nserved; i++) {
		buf_init(&svc);
		put_str(&svc, 1, db.served[i]);
		put_sub(&sub, 1, &svc);
	}
	put_sub(b, RESP_LIST_SERVICES, &sub);
}

static void put_extension_numbers(struct buf *b, const char *type)
{
	struct buf sub, nums;

	buf_init(&sub);
	buf_init(&nums);
	put_str(&sub, 1, type);
	for (size_t i = 0; i < db.nexts; i++)
		if (!strcmp(db.exts[i].extendee, type))
			put_varint(&nums, (uint64_t)(int64_t)db.exts[i].number);
	/* packed repeated int32, as proto3 writes it */
	if (nums.len || nums.oom)
		put_sub(&sub, 2, &nums);
	else
		buf_free(&nums);
	put_sub(b, RESP_EXTENSION_NUMBERS, &sub);
}

static void answer(struct buf *b, const struct request *r)
{
	const struct rsym *s;
	struct buf msg;
	int f;

	switch (r->kind) {
	case REQ_FILE_BY_FILENAME:
		f = find_file(r->arg);
		if (f < 0)
			put_not_found(b, "file", r->arg);
		else
			put_files(b, (uint32_t)f);
		return;
	case REQ_FILE_CONTAINING_SYMBOL:
		s = find_sym(r->arg);
		if (!s)
			put_not_found(b, "symbol", r->arg);
		else
			put_files(b, s->file);
		return;
	case REQ_FILE_CONTAINING_EXTENSION:
		if (!find_sym_kind(r->arg, SYM_MESSAGE)) {
			put_not_found(b, "message type", r->arg);
			return;
		}
		for (size_t i = 0; i < db.nexts; i++) {
			if (db.exts[i].number == r->number && !strcmp(db.exts[i].extendee, r->arg)) {
				put_files(b, db.exts[i].file);
				return;
			}
		}
		buf_init(&msg);
		buf_printf(&msg, "extension not found: %s, number %d", r->arg, (int)r->number);
		put_error(b, REFLECTION_NOT_FOUND, &msg);
		return;
	case REQ_ALL_EXTENSION_NUMBERS:
		if (!find_sym_kind(r->arg, SYM_MESSAGE))
			put_not_found(b, "message type", r->arg);
		else
			put_extension_numbers(b, r->arg);
		return;
	case REQ_LIST_SERVICES:
		put_services(b);
		return;
	default:
		buf_init(&msg);
		buf_puts(&msg, "no message_request in ServerReflectionRequest");
		put_error(b, REFLECTION_INVALID_ARGUMENT, &msg);
		return;
	}
}

int reflection_answer(int version, const uint8_t *req, size_t len, uint8_t **out, size_t *outlen)
{
	static const uint8_t empty[1];
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *m;
	struct request r = { .arg = "" };
	struct buf b;
	uint8_t *orig;
	size_t olen;

	if (!out || !outlen || (!req && len))
		return -EINVAL;
	if (version == REFLECTION_V1ALPHA)
		desc = &grpc__reflection__v1alpha__server_reflection_request__descriptor;
	else if (version == REFLECTION_V1)
		desc = &grpc__reflection__v1__server_reflection_request__descriptor;
	else
		return -EINVAL;
	if (!db.ready)
		return -ENODEV;

	if (check_request(req, len, 0))
		return -EINVAL;
	m = protobuf_c_message_unpack(desc, NULL, len, req ? req : empty);
	if (!m)
		return -EINVAL;
	if (version == REFLECTION_V1ALPHA)
		REQUEST_FROM((Grpc__Reflection__V1alpha__ServerReflectionRequest *)m, &r);
	else
		REQUEST_FROM((Grpc__Reflection__V1__ServerReflectionRequest *)m, &r);
	if (!r.arg)
		r.arg = "";
	if (!valid_utf8(r.host) || !valid_utf8(r.arg)) {
		protobuf_c_message_free_unpacked(m, NULL);
		return -EINVAL;
	}

	buf_init(&b);
	put_str(&b, RESP_VALID_HOST, r.host);
	olen = protobuf_c_message_get_packed_size(m);
	orig = malloc(olen ? olen : 1);
	if (orig) {
		protobuf_c_message_pack(m, orig);
		put_bytes(&b, RESP_ORIGINAL_REQUEST, orig, olen);
		free(orig);
	} else {
		b.oom = true;
	}
	answer(&b, &r);
	protobuf_c_message_free_unpacked(m, NULL);

	if (b.oom) {
		buf_free(&b);
		return -ENOMEM;
	}
	*out = (uint8_t *)buf_steal(&b, outlen);
	return *out ? 0 : -ENOMEM;
}
