/* gRPC server on the C core. See grpc_server.h for the threading design.
 *
 * Every completion-queue tag is a struct tag embedded in a call (or the
 * server) with a kind; the core loop dispatches on it. A call holds one
 * reference per batch in flight; RECV_CLOSE_ON_SERVER is started first and
 * completes last (when the call ends, or at once when the client cancels or
 * goes away), so a call is freed exactly when its last batch completes. */
#include "grpc_server.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/slice.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cfgapply.h"
#include "cfgfs.h"
#include <cjson/cJSON.h>
#include "buf.h"
#include "config.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "oneshield/agent/v1/agent.pb-c.h"
#include "pbconv.h"
#include "probes.h"
#include "reflection.h"

#define PENDING_REQUESTS 8       /* grpc_server_request_call kept armed */
#define MAX_REQUEST_BYTES (1u << 20)
#define MIN_STREAM_INTERVAL_MS 100
#define SHUTDOWN_GRACE_MS 1000
#define EVENT_CACHE 256          /* serialized recent events, by seq */

enum method {
	M_UNKNOWN,
	M_GET_STATUS,
	M_GET_METRICS,
	M_STREAM_METRICS,
	M_SUBSCRIBE,
	M_REFLECTION,
	M_GET_CONFIG,
	M_GET_CONFIG_FILE,
	M_APPLY_CONFIG,
	M_START_SYSCALL_INVESTIGATION,
	M_GET_SYSCALL_INVESTIGATION,
};

static const struct {
	const char *path;
	enum method m;
} methods[] = {
	{ "/oneshield.agent.v1.Agent/GetStatus", M_GET_STATUS },
	{ "/oneshield.agent.v1.Agent/GetMetrics", M_GET_METRICS },
	{ "/oneshield.agent.v1.Agent/StreamMetrics", M_STREAM_METRICS },
	{ "/oneshield.agent.v1.Agent/Subscribe", M_SUBSCRIBE },
	{ "/oneshield.agent.v1.Agent/GetConfig", M_GET_CONFIG },
	{ "/oneshield.agent.v1.Agent/GetConfigFile", M_GET_CONFIG_FILE },
	{ "/oneshield.agent.v1.Agent/ApplyConfig", M_APPLY_CONFIG },
	{ "/oneshield.agent.v1.Agent/StartSyscallInvestigation", M_START_SYSCALL_INVESTIGATION },
	{ "/oneshield.agent.v1.Agent/GetSyscallInvestigation", M_GET_SYSCALL_INVESTIGATION },
};

enum tag_kind { T_NEW, T_RECV, T_CLOSE, T_SEND, T_STATUS, T_SHUTDOWN };

struct gcall;
struct tag {
	enum tag_kind kind;
	struct gcall *call;
};

struct gcall {
	struct grpc_api *g;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	enum method m;
	int refl_version;
	int refs;                 /* batches in flight */
	bool accepted;            /* T_NEW completed */
	bool closed;              /* RECV_CLOSE_ON_SERVER completed */
	bool status_sent;
	bool send_busy;
	bool recv_busy;
	bool half_closed;         /* client finished sending (streams) */
	int cancelled;
	grpc_byte_buffer *recv_buf;
	grpc_byte_buffer *send_buf;
	struct tag t_new, t_recv, t_close, t_send, t_status;
	/* Subscribe */
	bool subscriber;
	struct journal_cursor cur;
	/* StreamMetrics */
	struct loop_timer *timer;
	char *prefix;
	bool tick_due;
	struct gcall *prev, *next;
};

struct grpc_api {
	struct agent *agent;
	grpc_server *server;
	grpc_completion_queue *cq;
	pthread_t pump;
	bool pump_started;
	int port;
	size_t max_subscribers;
	size_t nsubscribers, nstreams;
	bool closing, shutdown_started, shutdown_done;
	struct tag t_shutdown;
	struct gcall *calls;        /* accepted calls */
	size_t pending;             /* request_call armed */
	struct slice_cache {
		uint64_t seq;       /* 0 = empty */
		grpc_slice slice;
	} cache[EVENT_CACHE];

	/* completions from the pump thread */
	pthread_mutex_t lock;
	struct done {
		struct tag *tag;
		int ok;
	} *q;
	size_t qlen, qcap;
	int efd;
	struct loop_io *io;
};

/* ---- pump thread: completion queue -> core loop ---- */

static void post(struct grpc_api *g, struct tag *t, int ok)
{
	pthread_mutex_lock(&g->lock);
	if (g->qlen == g->qcap) {
		size_t cap = g->qcap ? g->qcap * 2 : 64;
		struct done *p = realloc(g->q, cap * sizeof(*p));
		if (!p) {
			/* Cannot drop a completion: it owns a call reference. */
			pthread_mutex_unlock(&g->lock);
			log_error("grpc: out of memory queueing a completion; retrying");
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			post(g, t, ok);
			return;
		}
		g->q = p;
		g->qcap = cap;
	}
	bool wake = g->qlen == 0;
	g->q[g->qlen++] = (struct done){ t, ok };
	pthread_mutex_unlock(&g->lock);
	if (wake) {
		uint64_t one = 1;
		ssize_t r = write(g->efd, &one, sizeof(one));
		(void)r;
	}
}

static void *pump(void *arg)
{
	struct grpc_api *g = arg;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE)
			post(g, ev.tag, ev.success);
	}
	return NULL;
}

/* ---- calls ---- */

static void call_free(struct gcall *c)
{
	struct grpc_api *g = c->g;
	if (c->accepted) {
		if (c->prev)
			c->prev->next = c->next;
		else if (g->calls == c)
			g->calls = c->next;
		if (c->next)
			c->next->prev = c->prev;
		if (c->subscriber)
			g->nsubscribers--;
		if (c->m == M_SUBSCRIBE || c->m == M_STREAM_METRICS || c->m == M_REFLECTION)
			g->nstreams--;
	}
	loop_timer_free(g->agent->loop, c->timer);
	free(c->prefix);
	if (c->recv_buf)
		grpc_byte_buffer_destroy(c->recv_buf);
	if (c->send_buf)
		grpc_byte_buffer_destroy(c->send_buf);
	grpc_metadata_array_destroy(&c->md);
	grpc_call_details_destroy(&c->details);
	if (c->call)
		grpc_call_unref(c->call);
	free(c);
}

static void unref(struct gcall *c)
{
	if (--c->refs == 0)
		call_free(c);
}

static bool batch(struct gcall *c, const grpc_op *ops, size_t n, struct tag *t)
{
	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
	if (e != GRPC_CALL_OK) {
		log_debug("grpc: start_batch failed: %d", e);
		return false;
	}
	c->refs++;
	return true;
}

static void request_one(struct grpc_api *g)
{
	struct gcall *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->g = g;
	c->t_new = (struct tag){ T_NEW, c };
	c->t_recv = (struct tag){ T_RECV, c };
	c->t_close = (struct tag){ T_CLOSE, c };
	c->t_send = (struct tag){ T_SEND, c };
	c->t_status = (struct tag){ T_STATUS, c };
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	if (grpc_server_request_call(g->server, &c->call, &c->details, &c->md, g->cq, g->cq, &c->t_new) !=
	    GRPC_CALL_OK) {
		grpc_metadata_array_destroy(&c->md);
		grpc_call_details_destroy(&c->details);
		free(c);
		return;
	}
	c->refs = 1;
	g->pending++;
}

/* Status with one optional binary trailer (key ends in -bin). */
static void send_status_md(struct gcall *c, grpc_status_code code, const char *msg, const char *key,
			   const struct buf *val)
{
	if (c->status_sent || c->closed)
		return;
	grpc_op op;
	memset(&op, 0, sizeof(op));
	grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
	grpc_metadata md;
	memset(&md, 0, sizeof(md));
	op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	op.data.send_status_from_server.status = code;
	op.data.send_status_from_server.status_details = msg ? &details : NULL;
	if (key && val) {
		md.key = grpc_slice_from_static_string(key);
		md.value = grpc_slice_from_copied_buffer(val->data ? val->data : "", val->len);
		op.data.send_status_from_server.trailing_metadata_count = 1;
		op.data.send_status_from_server.trailing_metadata = &md;
	}
	if (batch(c, &op, 1, &c->t_status))
		c->status_sent = true;
	grpc_slice_unref(details);
	if (key && val) {
		grpc_slice_unref(md.key);
		grpc_slice_unref(md.value);
	}
	if (code != GRPC_STATUS_OK)
		log_debug("grpc: call ends with status %d: %s", code, msg ? msg : "");
}

static void send_status(struct gcall *c, grpc_status_code code, const char *msg);

static void send_status(struct gcall *c, grpc_status_code code, const char *msg)
{
	send_status_md(c, code, msg, NULL, NULL);
}

/* Start one SEND_MESSAGE of the slice (the byte buffer takes its own ref).
 * flags GRPC_WRITE_BUFFER_HINT: more follows at once, so the transport may
 * hold this one and write several in one syscall; the send completes
 * without waiting for the socket. The last of a burst goes without it. */
static bool send_slice(struct gcall *c, grpc_slice s, uint32_t flags)
{
	c->send_buf = grpc_raw_byte_buffer_create(&s, 1);
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.flags = flags;
	op.data.send_message.send_message = c->send_buf;
	if (!batch(c, &op, 1, &c->t_send)) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
		return false;
	}
	c->send_busy = true;
	return true;
}

static bool send_bytes(struct gcall *c, const struct buf *b)
{
	grpc_slice s = grpc_slice_from_copied_buffer(b->data ? b->data : "", b->len);
	bool ok = send_slice(c, s, 0);
	grpc_slice_unref(s);
	return ok;
}

/* Unary answer: message and OK status in one batch. */
static void reply(struct gcall *c, const struct buf *b)
{
	grpc_slice s = grpc_slice_from_copied_buffer(b->data ? b->data : "", b->len);
	c->send_buf = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	grpc_op ops[2];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_MESSAGE;
	ops[0].data.send_message.send_message = c->send_buf;
	ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[1].data.send_status_from_server.status = GRPC_STATUS_OK;
	if (batch(c, ops, 2, &c->t_send)) {
		c->send_busy = true;
		c->status_sent = true;
	}
}

static void start_recv(struct gcall *c)
{
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->recv_buf;
	if (batch(c, &op, 1, &c->t_recv))
		c->recv_busy = true;
}

/* ---- streams ---- */

/* Subscribers mostly read the same recent events: serialize each once into
 * a refcounted slice that every subscriber's send shares. */
static bool cached_event(struct grpc_api *g, const struct event *e, grpc_slice *out)
{
	struct slice_cache *sc = &g->cache[e->seq % EVENT_CACHE];
	if (sc->seq != e->seq) {
		struct buf b;
		buf_init(&b);
		if (pb_event(e, &b)) {
			buf_free(&b);
			return false;
		}
		if (sc->seq)
			grpc_slice_unref(sc->slice);
		sc->slice = grpc_slice_from_copied_buffer(b.data ? b.data : "", b.len);
		sc->seq = e->seq;
		buf_free(&b);
	}
	*out = sc->slice;
	return true;
}

static void kick_subscriber(struct gcall *c)
{
	struct grpc_api *g = c->g;
	if (c->send_busy || c->status_sent || c->closed)
		return;
	const struct event *e;
	struct event *marker;
	if (journal_next(g->agent->journal, &c->cur, &e, &marker)) {
		bool ok;
		if (marker) {
			g->agent->events_lost_subscribers += marker->lost_to - marker->lost_from + 1;
			struct buf b;
			buf_init(&b);
			ok = pb_event(marker, &b) == 0 && send_bytes(c, &b);
			buf_free(&b);
			event_free(marker);
		} else {
			grpc_slice s;
			uint32_t hint = journal_has_next(g->agent->journal, &c->cur, 64) ? GRPC_WRITE_BUFFER_HINT : 0;
			ok = cached_event(g, e, &s) && send_slice(c, s, hint);
		}
		if (!ok)
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
		return;
	}
	if (g->closing)
		send_status(c, GRPC_STATUS_OK, NULL);
}

static void send_snapshot(struct gcall *c)
{
	struct agent *a = c->g->agent;
	struct buf b;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	buf_init(&b);
	if (pb_metrics(a->snapshot, c->prefix, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec, &b))
		send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
	else if (c->m == M_GET_METRICS)
		reply(c, &b);
	else if (!send_bytes(c, &b))
		send_status(c, GRPC_STATUS_INTERNAL, "cannot send");
	buf_free(&b);
}

static void metrics_tick(void *arg)
{
	struct gcall *c = arg;
	if (c->closed || c->status_sent)
		return;
	if (c->g->closing) {
		if (!c->send_busy)
			send_status(c, GRPC_STATUS_OK, NULL);
		return;
	}
	/* A reader slower than the interval gets the newest snapshot, not a queue. */
	if (c->send_busy)
		c->tick_due = true;
	else
		send_snapshot(c);
}

static void on_event(void *arg, const struct event *e)
{
	struct grpc_api *g = arg;
	for (struct gcall *c = g->calls; c; c = c->next)
		if (c->subscriber && (!c->cur.type_mask || (c->cur.type_mask & (1ULL << e->type))))
			kick_subscriber(c);
}

/* ---- configuration management ---- */

static grpc_status_code grpc_code(int http)
{
	switch (http) {
	case 200: return GRPC_STATUS_OK;
	case 400: return GRPC_STATUS_INVALID_ARGUMENT;
	case 403: return GRPC_STATUS_PERMISSION_DENIED;
	case 404: return GRPC_STATUS_NOT_FOUND;
	case 409: return GRPC_STATUS_ABORTED;
	case 413: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case 422: return GRPC_STATUS_FAILED_PRECONDITION;
	case 503: return GRPC_STATUS_UNAVAILABLE;
	case 507: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	default: return GRPC_STATUS_INTERNAL;
	}
}

/* The outcome of an apply: OK with the result, or the matching error
 * status with the result in the trailers. Consumes res. */
static void apply_reply(struct gcall *c, cJSON *res, int http)
{
	struct buf b;
	buf_init(&b);
	if (!res || pb_apply_result(res, &b)) {
		send_status(c, GRPC_STATUS_INTERNAL, "cannot encode the apply result");
	} else if (http == 200) {
		reply(c, &b);
	} else {
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(res, "message");
		send_status_md(c, grpc_code(http), cJSON_IsString(m) ? m->valuestring : "config apply failed",
			       "oneshield-apply-result-bin", &b);
	}
	buf_free(&b);
	cJSON_Delete(res);
}

static void apply_done(void *arg, cJSON *res, int http)
{
	struct gcall *c = arg;
	if (c->closed)
		cJSON_Delete(res); /* the client went away; the outcome is in the log */
	else
		apply_reply(c, res, http);
	unref(c); /* the reference held while the apply ran */
}

static void handle_config(struct gcall *c, const uint8_t *data, size_t len)
{
	struct agent *a = c->g->agent;
	int http = 500;
	cJSON *j = NULL;
	struct buf b;
	buf_init(&b);
	if (c->m == M_GET_CONFIG) {
		Oneshield__Agent__V1__GetConfigRequest *req =
			oneshield__agent__v1__get_config_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed GetConfigRequest");
			return;
		}
		oneshield__agent__v1__get_config_request__free_unpacked(req, NULL);
		j = cfgapply_list_json(a, &http);
		if (!j || pb_config_listing(j, &b))
			send_status(c, GRPC_STATUS_INTERNAL, "cannot list the managed files");
		else
			reply(c, &b);
	} else if (c->m == M_GET_CONFIG_FILE) {
		Oneshield__Agent__V1__GetConfigFileRequest *req =
			oneshield__agent__v1__get_config_file_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed GetConfigFileRequest");
			return;
		}
		j = cfgapply_file_json(a, *req->path ? req->path : NULL, &http);
		oneshield__agent__v1__get_config_file_request__free_unpacked(req, NULL);
		if (http != 200) {
			const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
			send_status(c, grpc_code(http), cJSON_IsString(e) ? e->valuestring : "cannot read the file");
		} else if (pb_config_file(j, &b)) {
			send_status(c, GRPC_STATUS_INTERNAL, "cannot encode the file");
		} else {
			reply(c, &b);
		}
	} else {
		Oneshield__Agent__V1__ApplyConfigRequest *req =
			oneshield__agent__v1__apply_config_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed ApplyConfigRequest");
			return;
		}
		struct cfgapply_req *ar = calloc(1, sizeof(*ar));
		bool ok = ar != NULL;
		if (ok && req->n_files)
			ok = (ar->files = calloc(req->n_files, sizeof(*ar->files))) != NULL;
		for (size_t i = 0; ok && i < req->n_files; i++) {
			const Oneshield__Agent__V1__FileChange *fc = req->files[i];
			struct cfgapply_file *f = &ar->files[i];
			ar->nfiles = i + 1;
			ok = (f->path = strdup(fc->path)) != NULL;
			if (fc->change_case == ONESHIELD__AGENT__V1__FILE_CHANGE__CHANGE_DELETE && fc->delete_) {
				f->del = true;
			} else if (ok) {
				f->len = fc->content.len;
				ok = (f->data = malloc(f->len ? f->len : 1)) != NULL;
				if (ok && f->len)
					memcpy(f->data, fc->content.data, f->len);
			}
		}
		if (ar) {
			ar->dry_run = req->dry_run;
			ar->reload = !req->no_reload;
			char *peer = grpc_call_get_peer(c->call);
			snprintf(ar->peer, sizeof(ar->peer), "grpc:%s", peer ? peer : "?");
			gpr_free(peer);
		}
		oneshield__agent__v1__apply_config_request__free_unpacked(req, NULL);
		char err[512];
		int rc;
		struct cfgfs_limits lim;
		if (!ok) {
			cfgapply_req_free(ar);
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
		} else if (cfgapply_limits(a, &lim), (rc = cfgapply_req_check(ar, &lim, err, sizeof(err)))) {
			cfgapply_req_free(ar);
			send_status(c, rc == -EFBIG ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT, err);
		} else {
			cJSON *res = NULL;
			/* held until apply_done: the call must outlive the apply */
			c->refs++;
			if (cfgapply_start(a->cfgapply, ar, apply_done, c, &res, &http)) {
				c->refs--;
				apply_reply(c, res, http);
			}
		}
	}
	cJSON_Delete(j);
	buf_free(&b);
}

/* ---- syscall investigations ---- */

/* probes_start's refusals; the proto documents the mapping. */
static grpc_status_code probes_code(int rc)
{
	switch (rc) {
	case -EINVAL: return GRPC_STATUS_INVALID_ARGUMENT;
	case -EBUSY: return GRPC_STATUS_ABORTED;
	case -ESRCH:
	case -EOPNOTSUPP: return GRPC_STATUS_FAILED_PRECONDITION;
	default: return GRPC_STATUS_UNAVAILABLE;
	}
}

static void handle_probes(struct gcall *c, const uint8_t *data, size_t len)
{
	struct probes *p = c->g->agent->probes;
	if (c->m == M_START_SYSCALL_INVESTIGATION) {
		Oneshield__Agent__V1__StartSyscallInvestigationRequest *req =
			oneshield__agent__v1__start_syscall_investigation_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed StartSyscallInvestigationRequest");
			return;
		}
		double dur = req->duration_s;
		oneshield__agent__v1__start_syscall_investigation_request__free_unpacked(req, NULL);
		if (!p) {
			send_status(c, GRPC_STATUS_UNAVAILABLE, "syscall investigations are not set up");
			return;
		}
		char err[256];
		int rc = probes_start(p, dur, err, sizeof(err));
		if (rc) {
			send_status(c, probes_code(rc), err[0] ? err : "cannot start the investigation");
			return;
		}
	} else {
		Oneshield__Agent__V1__GetSyscallInvestigationRequest *req =
			oneshield__agent__v1__get_syscall_investigation_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed GetSyscallInvestigationRequest");
			return;
		}
		oneshield__agent__v1__get_syscall_investigation_request__free_unpacked(req, NULL);
		if (!p) {
			send_status(c, GRPC_STATUS_UNAVAILABLE, "syscall investigations are not set up");
			return;
		}
	}
	/* The same document GET /v1/probes/syscalls serves, as protobuf. */
	cJSON *j = probes_json(p);
	struct buf b;
	buf_init(&b);
	if (!j || pb_syscall_investigation(j, &b))
		send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
	else
		reply(c, &b);
	buf_free(&b);
	cJSON_Delete(j);
}

/* ---- request handling ---- */

static int read_request(struct gcall *c, uint8_t **data, size_t *len)
{
	grpc_byte_buffer_reader r;
	if (!grpc_byte_buffer_reader_init(&r, c->recv_buf))
		return -EINVAL;
	grpc_slice s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	*len = GRPC_SLICE_LENGTH(s);
	*data = malloc(*len ? *len : 1);
	if (!*data) {
		grpc_slice_unref(s);
		return -ENOMEM;
	}
	memcpy(*data, GRPC_SLICE_START_PTR(s), *len);
	grpc_slice_unref(s);
	return 0;
}

static void handle_request(struct gcall *c, const uint8_t *data, size_t len)
{
	struct grpc_api *g = c->g;
	struct agent *a = g->agent;
	struct buf b;
	buf_init(&b);
	switch (c->m) {
	case M_GET_STATUS: {
		Oneshield__Agent__V1__GetStatusRequest *req =
			oneshield__agent__v1__get_status_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed GetStatusRequest");
			break;
		}
		oneshield__agent__v1__get_status_request__free_unpacked(req, NULL);
		if (pb_status(a, &b))
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
		else
			reply(c, &b);
		break;
	}
	case M_GET_METRICS:
	case M_STREAM_METRICS: {
		char *prefix = NULL;
		uint32_t interval = 0;
		if (c->m == M_GET_METRICS) {
			Oneshield__Agent__V1__GetMetricsRequest *req =
				oneshield__agent__v1__get_metrics_request__unpack(NULL, len, data);
			if (!req) {
				send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed GetMetricsRequest");
				break;
			}
			prefix = strdup(req->name_prefix);
			oneshield__agent__v1__get_metrics_request__free_unpacked(req, NULL);
		} else {
			Oneshield__Agent__V1__StreamMetricsRequest *req =
				oneshield__agent__v1__stream_metrics_request__unpack(NULL, len, data);
			if (!req) {
				send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed StreamMetricsRequest");
				break;
			}
			prefix = strdup(req->name_prefix);
			interval = req->interval_ms;
			oneshield__agent__v1__stream_metrics_request__free_unpacked(req, NULL);
		}
		if (!prefix) {
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
			break;
		}
		c->prefix = prefix;
		if (c->m == M_STREAM_METRICS) {
			uint64_t ms = interval ? interval : a->cfg->metrics.interval_ms;
			if (ms < MIN_STREAM_INTERVAL_MS)
				ms = MIN_STREAM_INTERVAL_MS;
			c->timer = loop_timer_new(a->loop, metrics_tick, c);
			if (!c->timer || loop_timer_arm(c->timer, ms, ms)) {
				send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot arm a timer");
				break;
			}
		}
		send_snapshot(c);
		break;
	}
	case M_SUBSCRIBE: {
		Oneshield__Agent__V1__SubscribeRequest *req =
			oneshield__agent__v1__subscribe_request__unpack(NULL, len, data);
		if (!req) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed SubscribeRequest");
			break;
		}
		uint64_t mask = 0;
		bool bad = false;
		for (size_t i = 0; i < req->n_types; i++) {
			int t = (int)req->types[i];
			if (t <= 0 || t >= EV__COUNT)
				bad = true;
			else
				mask |= 1ULL << t;
		}
		uint64_t after = req->after_seq;
		oneshield__agent__v1__subscribe_request__free_unpacked(req, NULL);
		if (bad) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "unknown event type in types");
			break;
		}
		if (g->nsubscribers >= g->max_subscribers) {
			char msg[96];
			snprintf(msg, sizeof(msg), "too many subscribers (max %zu)", g->max_subscribers);
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
			break;
		}
		if (g->closing) {
			send_status(c, GRPC_STATUS_UNAVAILABLE, "agent is shutting down");
			break;
		}
		c->subscriber = true;
		g->nsubscribers++;
		journal_cursor_init(a->journal, &c->cur, after, mask);
		kick_subscriber(c);
		break;
	}
	case M_REFLECTION: {
		uint8_t *out = NULL;
		size_t outlen = 0;
		int r = reflection_answer(c->refl_version, data, len, &out, &outlen);
		if (r == -ENOMEM) {
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
			break;
		} else if (r) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed ServerReflectionRequest");
			break;
		}
		b.data = (char *)out;
		b.len = outlen;
		b.cap = outlen;
		if (!send_bytes(c, &b))
			send_status(c, GRPC_STATUS_INTERNAL, "cannot send");
		break;
	}
	case M_GET_CONFIG:
	case M_GET_CONFIG_FILE:
	case M_APPLY_CONFIG:
		handle_config(c, data, len);
		break;
	case M_START_SYSCALL_INVESTIGATION:
	case M_GET_SYSCALL_INVESTIGATION:
		handle_probes(c, data, len);
		break;
	case M_UNKNOWN:
		break;
	}
	buf_free(&b);
}

static void on_new(struct gcall *c, int ok)
{
	struct grpc_api *g = c->g;
	g->pending--;
	if (!ok || g->shutdown_started) {
		/* The server is shutting down: this slot never got a call. */
		unref(c);
		return;
	}
	if (!g->closing)
		request_one(g);
	c->accepted = true;
	c->next = g->calls;
	if (g->calls)
		g->calls->prev = c;
	g->calls = c;

	char path[160];
	size_t n = GRPC_SLICE_LENGTH(c->details.method);
	snprintf(path, sizeof(path), "%.*s", (int)(n < sizeof(path) - 1 ? n : sizeof(path) - 1),
		 (const char *)GRPC_SLICE_START_PTR(c->details.method));
	c->m = M_UNKNOWN;
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(path, methods[i].path) == 0)
			c->m = methods[i].m;
	if (c->m == M_UNKNOWN && (c->refl_version = reflection_method(path)) > 0)
		c->m = M_REFLECTION;
	if (c->m == M_SUBSCRIBE || c->m == M_STREAM_METRICS || c->m == M_REFLECTION)
		g->nstreams++;
	log_debug("grpc: call %s", path);

	/* The call's first reference (from request_call) now stands for
	 * RECV_CLOSE_ON_SERVER, which completes last. */
	c->refs--;
	grpc_op ops[2];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[0].data.recv_close_on_server.cancelled = &c->cancelled;
	if (!batch(c, ops, 1, &c->t_close)) {
		c->refs++;
		unref(c);
		return;
	}
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = 0;
	batch(c, ops, 1, &c->t_status); /* completion is just an unref */
	if (c->m == M_UNKNOWN) {
		char msg[200];
		snprintf(msg, sizeof(msg), "unknown method %s", path);
		send_status(c, GRPC_STATUS_UNIMPLEMENTED, msg);
		return;
	}
	if (g->closing) {
		send_status(c, GRPC_STATUS_UNAVAILABLE, "agent is shutting down");
		return;
	}
	start_recv(c);
}

static void on_recv(struct gcall *c, int ok)
{
	c->recv_busy = false;
	if (!ok || c->closed || c->status_sent) {
		unref(c);
		return;
	}
	if (!c->recv_buf) {
		/* The client half-closed. Unary and server-streaming calls need a
		 * request first; a reflection stream is done. */
		c->half_closed = true;
		if (c->m == M_REFLECTION) {
			if (!c->send_busy)
				send_status(c, GRPC_STATUS_OK, NULL);
		} else if (!c->subscriber && !c->timer) {
			send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
		}
		unref(c);
		return;
	}
	uint8_t *data = NULL;
	size_t len = 0;
	int r = read_request(c, &data, &len);
	grpc_byte_buffer_destroy(c->recv_buf);
	c->recv_buf = NULL;
	if (r)
		send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "unreadable request");
	else if (len > MAX_REQUEST_BYTES)
		send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "request too large");
	else if (c->m == M_REFLECTION || (!c->subscriber && !c->timer))
		handle_request(c, data, len);
	free(data);
	/* Server streams keep reading to see the client's half-close (anything
	 * more is ignored); a reflection stream reads its next request once
	 * this answer is sent (on_send). */
	if (c->m != M_REFLECTION && (c->subscriber || c->timer) && !c->status_sent)
		start_recv(c);
	unref(c);
}

static void on_send(struct gcall *c, int ok)
{
	c->send_busy = false;
	if (c->send_buf) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	if (!ok || c->closed || c->status_sent) {
		unref(c);
		return;
	}
	if (c->subscriber) {
		kick_subscriber(c);
	} else if (c->timer) {
		if (c->g->closing)
			send_status(c, GRPC_STATUS_OK, NULL);
		else if (c->tick_due) {
			c->tick_due = false;
			send_snapshot(c);
		}
	} else if (c->m == M_REFLECTION) {
		if (c->half_closed)
			send_status(c, GRPC_STATUS_OK, NULL);
		else if (!c->recv_busy)
			start_recv(c);
	}
	unref(c);
}

static void on_close(struct gcall *c)
{
	c->closed = true;
	if (c->cancelled)
		log_debug("grpc: call cancelled by the client or its deadline");
	if (c->timer)
		loop_timer_disarm(c->timer);
	unref(c);
}

static void dispatch(struct grpc_api *g, struct tag *t, int ok)
{
	if (t->kind == T_SHUTDOWN) {
		g->shutdown_done = true;
		return;
	}
	struct gcall *c = t->call;
	switch (t->kind) {
	case T_NEW: on_new(c, ok); break;
	case T_RECV: on_recv(c, ok); break;
	case T_SEND: on_send(c, ok); break;
	case T_CLOSE: on_close(c); break;
	case T_STATUS: unref(c); break;
	case T_SHUTDOWN: break;
	}
}

static void drain(void *arg, int fd, uint32_t events)
{
	struct grpc_api *g = arg;
	uint64_t n;
	(void)events;
	ssize_t r = read(fd, &n, sizeof(n));
	(void)r;
	for (;;) {
		pthread_mutex_lock(&g->lock);
		size_t len = g->qlen;
		struct done batchq[64];
		if (len > 64)
			len = 64;
		memcpy(batchq, g->q, len * sizeof(*batchq));
		memmove(g->q, g->q + len, (g->qlen - len) * sizeof(*batchq));
		g->qlen -= len;
		pthread_mutex_unlock(&g->lock);
		if (!len)
			break;
		for (size_t i = 0; i < len; i++)
			dispatch(g, batchq[i].tag, batchq[i].ok);
	}
}

/* ---- lifecycle ---- */

static void impl_stop(struct grpc_api *g);

static int impl_start(struct agent *a, const char *listen, size_t max_subscribers, struct grpc_api **out, char *err,
		   size_t errlen)
{
	char host[128];
	uint16_t port;
	*out = NULL;
	if (config_parse_listen(listen, host, sizeof(host), &port)) {
		snprintf(err, errlen, "invalid listen address \"%s\"", listen);
		return -EINVAL;
	}
	static const char *const served[] = { "oneshield.agent.v1.Agent", "grpc.reflection.v1alpha.ServerReflection",
					      "grpc.reflection.v1.ServerReflection", NULL };
	if (reflection_init(served)) {
		snprintf(err, errlen, "cannot load the embedded protobuf descriptors");
		return -EINVAL;
	}
	struct grpc_api *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->agent = a;
	g->max_subscribers = max_subscribers;
	g->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&g->lock, NULL);
	g->t_shutdown.kind = T_SHUTDOWN;
	grpc_init();
	grpc_arg args[] = {
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
		  .value.integer = (int)MAX_REQUEST_BYTES },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0 },
	};
	grpc_channel_args cargs = { .num_args = sizeof(args) / sizeof(args[0]), .args = args };
	g->server = grpc_server_create(&cargs, NULL);
	g->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(g->server, g->cq, NULL);
	grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
	g->port = grpc_server_add_http2_port(g->server, listen, creds);
	grpc_server_credentials_release(creds);
	if (g->port <= 0 || g->efd < 0) {
		snprintf(err, errlen, "cannot listen on %s", listen);
		grpc_server_destroy(g->server);
		grpc_completion_queue_shutdown(g->cq);
		grpc_completion_queue_destroy(g->cq);
		if (g->efd >= 0)
			close(g->efd);
		pthread_mutex_destroy(&g->lock);
		free(g);
		grpc_shutdown();
		reflection_fini();
		return -EADDRINUSE;
	}
	grpc_server_start(g->server);
	g->io = loop_io_add(a->loop, g->efd, EPOLLIN, drain, g);
	if (!g->io || pthread_create(&g->pump, NULL, pump, g) != 0 || journal_add_listener(a->journal, on_event, g)) {
		snprintf(err, errlen, "cannot attach the gRPC server to the core loop");
		impl_stop(g);
		return -ENOMEM;
	}
	g->pump_started = true;
	for (int i = 0; i < PENDING_REQUESTS; i++)
		request_one(g);
	*out = g;
	return 0;
}

static void impl_begin_shutdown(struct grpc_api *g)
{
	if (!g)
		return;
	g->closing = true;
	for (struct gcall *c = g->calls; c; c = c->next) {
		if (c->subscriber)
			kick_subscriber(c);
		else if (c->timer && !c->send_busy)
			send_status(c, GRPC_STATUS_OK, NULL);
		else if (c->m == M_REFLECTION && !c->send_busy)
			send_status(c, GRPC_STATUS_OK, NULL);
	}
}

static size_t impl_streams(const struct grpc_api *g)
{
	return g ? g->nstreams : 0;
}

static size_t impl_subscribers(const struct grpc_api *g)
{
	return g ? g->nsubscribers : 0;
}

static int impl_port(const struct grpc_api *g)
{
	return g->port;
}

static void impl_stop(struct grpc_api *g)
{
	if (!g)
		return;
	journal_remove_listener(g->agent->journal, on_event, g);
	if (g->pump_started) {
		g->closing = true;
		g->shutdown_started = true;
		grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
		/* Calls still open after the grace period are cancelled. */
		uint64_t deadline = loop_now_ms() + SHUTDOWN_GRACE_MS;
		bool cancelled = false;
		while (!g->shutdown_done || g->calls || g->pending) {
			if (!cancelled && loop_now_ms() >= deadline) {
				grpc_server_cancel_all_calls(g->server);
				cancelled = true;
			}
			struct epoll_event ev;
			int efd = epoll_create1(EPOLL_CLOEXEC);
			ev.events = EPOLLIN;
			epoll_ctl(efd, EPOLL_CTL_ADD, g->efd, &ev);
			epoll_wait(efd, &ev, 1, 50);
			close(efd);
			drain(g, g->efd, 0);
			if (cancelled && loop_now_ms() >= deadline + 5000) {
				log_warn("grpc: %s still open after cancel; leaving them", g->calls ? "calls" : "requests");
				break;
			}
		}
		grpc_completion_queue_shutdown(g->cq);
		pthread_join(g->pump, NULL);
	}
	loop_io_del(g->agent->loop, g->io);
	for (size_t i = 0; i < EVENT_CACHE; i++)
		if (g->cache[i].seq)
			grpc_slice_unref(g->cache[i].slice);
	grpc_server_destroy(g->server);
	grpc_completion_queue_destroy(g->cq);
	close(g->efd);
	pthread_mutex_destroy(&g->lock);
	free(g->q);
	free(g);
	grpc_shutdown();
	reflection_fini();
}

/* The plugin's one exported symbol (see grpc_plugin.c). */
const struct grpc_plugin_ops oneshield_grpc_plugin = {
	.abi = GRPC_PLUGIN_ABI,
	.start = impl_start,
	.begin_shutdown = impl_begin_shutdown,
	.streams = impl_streams,
	.subscribers = impl_subscribers,
	.port = impl_port,
	.stop = impl_stop,
};
