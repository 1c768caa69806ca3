/* gRPC server on the C core. See grpc_server.h for the threading design.
 *
 * Every completion-queue tag is a struct tag embedded in a call (or the
 * server) with a kind; the core loop dispatches on it. A call holds one
 * reference per batch in flight; RECV_CLOSE_ON_SERVER is started first and
 * completes last (when the call ends, or at once when the client cancels or
 * goes away), so a call is freed exactly when its last batch completes.
 *
 * Subscribe streams are the exception, for speed. With 100 subscribers an
 * event is 100 messages, and gRPC allows one SEND_MESSAGE in flight per
 * call; when every completion went pump thread -> eventfd -> core loop ->
 * start_batch, each message cost two context switches before the next could
 * go, and the core loop did all of it. Now:
 *  - the core loop serializes each event once into the "feed", a ring of
 *    refcounted slices by seq that the pump thread may read;
 *  - when a subscriber's send completes, the pump thread itself sends it
 *    the next event (from the feed, else from the journal under the
 *    journal's lock), with GRPC_WRITE_BUFFER_HINT while more follow, so a
 *    reader that is behind gets its events many to a write;
 *  - idle subscribers are woken once per loop iteration (kick_prepare), the
 *    core loop and the pump thread sharing the round;
 *  - what only the core loop may do comes back to it as the completion:
 *    EVENTS_LOST markers (the loop accounts for losses), failed sends,
 *    calls that ended, the ends of streams at shutdown.
 *
 * Who may touch a subscriber's cursor and send buffer is decided by its
 * send slot: send_busy, changed only under g->slock, is true while a send
 * is in flight or a thread is about to start one; that thread (the one that
 * got the completion, or the core loop when it took an idle slot) owns the
 * cursor. A subscriber holds one call reference for its send slot as long
 * as it streams (the pump never touches refs); the core loop drops it once
 * the stream has stopped and no send is in flight. The feed holds only
 * events the journal still has (its size is at most the journal's), and the
 * pump asks the core loop for a marker as soon as the cursor is older than
 * the journal, so a reader is never told less than it lost. */
#include "grpc_server.h"
#include "mgmt.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "auth.h"
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
#include "tls.h"

#define PENDING_REQUESTS 8       /* grpc_server_request_call kept armed */
#define MIN_STREAM_INTERVAL_MS 100
#define SHUTDOWN_GRACE_MS 1000
#define FEED_MAX 1024            /* serialized recent events shared with the pump */
#define HINT_SCAN 64             /* look-ahead for "more follows" */
#define HINT_RUN 64              /* buffered sends in a row, then one goes out */

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

enum tag_kind { T_NEW, T_RECV, T_CLOSE, T_SEND, T_SUB_SEND, T_STATUS, T_SHUTDOWN };

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
	bool md_sent;             /* SEND_INITIAL_METADATA started */
	int cancelled;
	grpc_byte_buffer *recv_buf;
	grpc_byte_buffer *send_buf;
	struct tag t_new, t_recv, t_close, t_send, t_sub, t_status;
	/* Subscribe (send slot: see the top of this file) */
	bool subscriber;
	bool slot;                /* holds the send slot's call reference */
	bool sub_stop;            /* under g->slock: no more sends */
	int hinted;               /* buffered sends in a row */
	struct gcall *ready_next; /* under g->slock: on g->ready */
	struct journal_cursor cur;
	/* "grpc:<peer>" plus the authenticated identity (call_identify) */
	char who[96];
	/* the peer's address without the port, "unix" on the unix socket: the
	 * key of the auth limiter and of api.limits.max_streams_per_peer */
	char addr[64];
	bool peer_stream;         /* Subscribe / StreamMetrics admitted: counts for addr */
	/* StreamMetrics */
	struct loop_timer *timer;
	char *prefix;
	bool tick_due;
	struct gcall *prev, *next;
};

struct grpc_api {
	struct agent *agent;
	char *sock_path;            /* api.grpc_socket, removed at stop */
	/* The unix socket is ours, not gRPC's: the core loop accepts, reads
	 * the peer's uid (SO_PEERCRED) and hands the connection to gRPC
	 * (grpc_server_add_channel_from_fd), whose peer string for it is
	 * "fd:N"; call_identify looks N up here (from the pump thread's
	 * completions, so under ulock). An fd's entry is overwritten when the
	 * number is accepted again; while a call is open on it, its
	 * connection, and so the number, is still the one accepted. */
	int ufd;
	struct loop_io *uio;
	pthread_mutex_t ulock;
	unsigned *uids;             /* by fd: uid + 1, 0 = not ours */
	size_t nuids;
	grpc_server *server;
	grpc_completion_queue *cq;
	pthread_t pump;
	bool pump_started;
	int port;
	size_t max_subscribers;
	size_t max_request;         /* api.limits.grpc_max_message_bytes */
	size_t max_peer_streams;    /* api.limits.max_streams_per_peer */
	size_t nsubscribers, nstreams;
	bool closing, shutdown_started, shutdown_done;
	struct tag t_shutdown;
	struct gcall *calls;        /* accepted calls */
	size_t pending;             /* request_call armed */
	struct buf scratch;         /* core loop: serializing events */
	struct buf pscratch;        /* the same for the pump thread */
	bool kick_due;              /* events journaled since the last kick_prepare */
	struct gcall *ready;        /* under slock: the kick round (kick_prepare) */
	bool prepare_added;

	/* The feed: the last feed_cap events by seq (seq 0 = not serialized:
	 * nobody subscribed then), shared with the pump thread. slock guards
	 * it, feed_last, feed_closing and every subscriber's send_busy. */
	pthread_mutex_t slock;
	struct feed_ent {
		uint64_t seq;
		enum event_type type;
		grpc_slice slice;
	} *feed;
	size_t feed_cap;            /* power of two, <= the journal's capacity */
	uint64_t feed_last;         /* journal_last_seq as of the last append */
	bool feed_closing;

	/* completions from the pump thread */
	pthread_mutex_t lock;
	struct done {
		struct tag *tag;
		int ok;
	} *q;
	size_t qlen, qcap;
	int efd;
	struct loop_io *io;

	/* TLS (api.tls): gRPC asks tls_fetch for a certificate config at each
	 * new connection, on one of its threads; the core loop stages a new
	 * one in tls_next when a SIGHUP brought new files (a->tls_gen moved),
	 * so renewed certificates apply to new connections without a restart.
	 * Switching TLS or client certificates on or off needs a restart. */
	pthread_mutex_t tls_lock;
	grpc_ssl_server_certificate_config *tls_next; /* under tls_lock */
	unsigned tls_gen;
	bool tls, mtls;
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

static void sub_next(struct grpc_api *g, struct gcall *c, struct buf *scratch);
static void pump_help(struct grpc_api *g);

static void *pump(void *arg)
{
	struct grpc_api *g = arg;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		struct tag *t = ev.tag;
		if (t->kind == T_SUB_SEND && ev.success)
			sub_next(g, t->call, &g->pscratch);
		else
			post(g, t, ev.success);
		pump_help(g);
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
	c->t_sub = (struct tag){ T_SUB_SEND, c };
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
	grpc_op ops[2];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
	grpc_metadata md;
	memset(&md, 0, sizeof(md));
	/* Not without headers: gRPC 1.51's server never sends a status on a
	 * call that has not sent its initial metadata. */
	if (!c->md_sent)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	grpc_op *op = &ops[n++];
	op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	op->data.send_status_from_server.status = code;
	op->data.send_status_from_server.status_details = msg ? &details : NULL;
	if (key && val) {
		md.key = grpc_slice_from_static_string(key);
		md.value = grpc_slice_from_copied_buffer(val->data ? val->data : "", val->len);
		op->data.send_status_from_server.trailing_metadata_count = 1;
		op->data.send_status_from_server.trailing_metadata = &md;
	}
	if (batch(c, ops, n, &c->t_status)) {
		c->status_sent = true;
		c->md_sent = true;
	}
	grpc_slice_unref(details);
	if (key && val) {
		grpc_slice_unref(md.key);
		grpc_slice_unref(md.value);
	}
	if (code != GRPC_STATUS_OK)
		log_debug("grpc: call ends with status %d: %s", code, msg ? msg : "");
}

static void send_status(struct gcall *c, grpc_status_code code, const char *msg);
static void dispatch(struct grpc_api *g, struct tag *t, int ok);

static void send_status(struct gcall *c, grpc_status_code code, const char *msg)
{
	send_status_md(c, code, msg, NULL, NULL);
}

/* One SEND_MESSAGE (StreamMetrics, reflection), completing on t_send. */
static bool send_bytes(struct gcall *c, const struct buf *b)
{
	grpc_slice s = grpc_slice_from_copied_buffer(b->data ? b->data : "", b->len);
	c->send_buf = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = c->send_buf;
	if (!batch(c, &op, 1, &c->t_send)) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
		return false;
	}
	c->send_busy = true;
	return true;
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
	/* The answer usually goes out (and completes) inside start_batch: take
	 * the completion from the thread-local cache rather than through the
	 * pump thread and back. The call outlives it: the caller holds another
	 * reference (the receive that brought the request, or the apply's). */
	grpc_completion_queue_thread_local_cache_init(c->g->cq);
	bool ok = batch(c, ops, 2, &c->t_send);
	void *tag;
	int tok;
	bool caught = grpc_completion_queue_thread_local_cache_flush(c->g->cq, &tag, &tok);
	if (ok) {
		c->send_busy = true;
		c->status_sent = true;
	}
	if (caught) {
		if (tag == &c->t_send)
			dispatch(c->g, tag, tok);
		else
			post(c->g, tag, tok);
	}
}

/* The first receive also sends the response headers: one batch, one
 * completion less per call. */
static void start_recv(struct gcall *c)
{
	grpc_op ops[2];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n++].data.recv_message.recv_message = &c->recv_buf;
	if (batch(c, ops, n, &c->t_recv)) {
		c->recv_busy = true;
		c->md_sent = true;
	}
}

/* ---- streams ---- */

/* The event as one slice (a new reference), serialized into g->scratch. */
static bool event_slice(struct grpc_api *g, const struct event *e, grpc_slice *out)
{
	buf_reset(&g->scratch);
	if (pb_event(e, &g->scratch))
		return false;
	*out = grpc_slice_from_copied_buffer(g->scratch.data ? g->scratch.data : "", g->scratch.len);
	return true;
}

enum feed_res {
	F_SEND,    /* here is the next event to send */
	F_IDLE,    /* caught up */
	F_JOURNAL, /* the next one is not in the feed: read the journal */
	F_POST,    /* a decision for the core loop (stream stopped or ending) */
};

/* With g->slock held, by the owner of c's send slot: the next event for c
 * from the feed. F_SEND: *s is a new reference, the cursor moved past it,
 * *flags says whether to buffer it (more follows at once). F_IDLE: caught
 * up. F_JOURNAL: the next one is not in the feed (older than the feed, or
 * journaled while nobody subscribed). */
static enum feed_res feed_next(struct grpc_api *g, struct gcall *c, grpc_slice *s, uint32_t *flags)
{
	uint64_t n = c->cur.next, mask = c->cur.type_mask;
	size_t m = g->feed_cap - 1;
	if (n + g->feed_cap <= g->feed_last)
		return F_JOURNAL;
	for (; n <= g->feed_last; n++) {
		const struct feed_ent *f = &g->feed[n & m];
		if (f->seq != n)
			return F_JOURNAL;
		if (mask && !(mask & (1ULL << f->type)))
			continue;
		c->cur.next = n + 1;
		*s = grpc_slice_ref(f->slice);
		/* Buffer this one only if another follows from the feed at
		 * once, and never more than HINT_RUN in a row, so a reader
		 * catching up gets its events in batches without waiting for
		 * the end of the backlog. */
		*flags = 0;
		if (c->hinted < HINT_RUN) {
			uint64_t end = g->feed_last < n + HINT_SCAN ? g->feed_last : n + HINT_SCAN;
			for (uint64_t k = n + 1; k <= end; k++) {
				const struct feed_ent *h = &g->feed[k & m];
				if (h->seq != k)
					break;
				if (!mask || (mask & (1ULL << h->type))) {
					*flags = GRPC_WRITE_BUFFER_HINT;
					break;
				}
			}
		}
		c->hinted = *flags ? c->hinted + 1 : 0;
		return F_SEND;
	}
	c->cur.next = n;
	return F_IDLE;
}

/* By the owner of the send slot: one SEND_MESSAGE on c->t_sub. The slot's
 * reference covers it (no refs++: the pump thread may call this). */
static bool sub_send(struct gcall *c, grpc_slice s, uint32_t flags)
{
	c->send_buf = grpc_raw_byte_buffer_create(&s, 1);
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.flags = flags;
	op.data.send_message.send_message = c->send_buf;
	if (grpc_call_start_batch(c->call, &op, 1, &c->t_sub, NULL) != GRPC_CALL_OK) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
		return false;
	}
	return true;
}

/* By the owner of c's slot: the next event from the feed, or F_IDLE (the
 * slot is given back under the lock: c may be freed by the core loop from
 * then on), or F_JOURNAL, or F_POST when the stream has stopped, or has
 * caught up while the server is closing (the core loop ends it). */
static enum feed_res sub_advance(struct grpc_api *g, struct gcall *c, grpc_slice *s, uint32_t *flags)
{
	pthread_mutex_lock(&g->slock);
	enum feed_res r = c->sub_stop ? F_POST : feed_next(g, c, s, flags);
	if (r == F_IDLE && g->feed_closing)
		r = F_POST;
	if (r == F_IDLE)
		c->send_busy = false;
	pthread_mutex_unlock(&g->slock);
	return r;
}

/* By the owner of c's slot, on either thread: the next event for c from
 * the journal, under its lock, serialized with scratch. 1: *s is set (a new
 * reference); 0: nothing more matches (the cursor is past the last event);
 * -1: for the core loop (an EVENTS_LOST marker is due: the loop accounts
 * for losses; or out of memory). A reader that fell out of the feed costs a
 * serialization per message, but not a trip through the core loop. */
static int journal_fetch(struct grpc_api *g, struct gcall *c, struct buf *scratch, grpc_slice *s, uint32_t *flags)
{
	struct journal *j = g->agent->journal;
	const struct event *e;
	struct event *marker;
	int r = -1;
	journal_lock(j);
	if (c->cur.next < journal_first_seq(j)) {
		journal_unlock(j);
		return -1;
	}
	if (!journal_next(j, &c->cur, &e, &marker)) {
		r = 0;
	} else {
		buf_reset(scratch);
		if (pb_event(e, scratch) == 0) {
			bool more = c->hinted < HINT_RUN && journal_has_next(j, &c->cur, HINT_SCAN);
			*s = grpc_slice_from_copied_buffer(scratch->data ? scratch->data : "", scratch->len);
			*flags = more ? GRPC_WRITE_BUFFER_HINT : 0;
			c->hinted = more ? c->hinted + 1 : 0;
			r = 1;
		} else {
			c->cur.next = e->seq; /* the core loop tries again */
		}
	}
	journal_unlock(j);
	return r;
}

/* A subscriber's send completed fine; by the thread that got the completion
 * (the pump, or the core loop through its completion cache), which owns
 * the slot: send the next event, from the feed or the journal, or go idle,
 * or leave the decision to the core loop (the completion is posted). */
static void sub_next(struct grpc_api *g, struct gcall *c, struct buf *scratch)
{
	grpc_slice s;
	uint32_t flags = 0;
	if (c->send_buf) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	for (;;) {
		switch (sub_advance(g, c, &s, &flags)) {
		case F_IDLE:
			return;
		case F_POST:
			post(g, &c->t_sub, 1);
			return;
		case F_JOURNAL: {
			int r = journal_fetch(g, c, scratch, &s, &flags);
			if (r < 0) {
				post(g, &c->t_sub, 1);
				return;
			}
			if (r == 0)
				continue; /* past the end: idle, unless more came since */
			break;
		}
		case F_SEND:
			break;
		}
		if (!sub_send(c, s, flags))
			post(g, &c->t_sub, 0);
		grpc_slice_unref(s);
		return;
	}
}

static void sub_drop_slot(struct gcall *c);

/* Core loop, owning c's slot: start the send. The core loop starts most
 * sends at low rates (one per subscriber for every event), and such a send
 * usually completes before start_batch returns (the socket took the bytes).
 * Its completion would then wake the pump thread through the queue only to
 * find the subscriber caught up; a thread-local completion cache catches it
 * here instead, and the subscriber goes idle on the spot. If it has more to
 * send, the next send is started without the cache, so its completion goes
 * to the pump thread, which carries on: the core loop never works through a
 * backlog itself. Whatever else gets caught (another call's completion on a
 * shared connection) is posted to the loop as usual. */
static void loop_sub_send(struct gcall *c, grpc_slice s, uint32_t flags, bool cache)
{
	struct grpc_api *g = c->g;
	if (cache)
		grpc_completion_queue_thread_local_cache_init(g->cq);
	bool ok = sub_send(c, s, flags);
	grpc_slice_unref(s);
	void *tag;
	int tok;
	bool caught = cache && grpc_completion_queue_thread_local_cache_flush(g->cq, &tag, &tok);
	if (!ok) {
		send_status(c, GRPC_STATUS_INTERNAL, "cannot send");
		sub_drop_slot(c);
	}
	if (!caught)
		return;
	struct tag *t = tag;
	if (t->kind != T_SUB_SEND || !tok) {
		post(g, t, tok);
		return;
	}
	sub_next(g, t->call, &g->scratch);
}

/* Core loop, owning the send slot of a subscriber that stops: give up the
 * slot and its call reference (may free c). */
static void sub_drop_slot(struct gcall *c)
{
	struct grpc_api *g = c->g;
	pthread_mutex_lock(&g->slock);
	c->sub_stop = true;
	c->send_busy = false;
	pthread_mutex_unlock(&g->slock);
	if (c->send_buf) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	if (c->slot) {
		c->slot = false;
		unref(c);
	}
}

/* Core loop, owning the send slot: the next message, from the feed or the
 * journal; at the end of a stream, the status; else the slot goes back.
 * cache: catch the send's completion here when it comes at once (see
 * loop_sub_send); without, it goes to the pump thread. */
static void sub_continue_cache(struct gcall *c, bool cache)
{
	struct grpc_api *g = c->g;
	struct agent *a = g->agent;
	grpc_slice s;
	uint32_t flags = 0;
	pthread_mutex_lock(&g->slock);
	enum feed_res r = feed_next(g, c, &s, &flags);
	pthread_mutex_unlock(&g->slock);
	if (r == F_SEND) {
		loop_sub_send(c, s, flags, cache);
		return;
	}
	const struct event *e;
	struct event *marker;
	if (r == F_JOURNAL && journal_next(a->journal, &c->cur, &e, &marker)) {
		bool ok;
		if (marker) {
			a->events_lost_subscribers += marker->lost_to - marker->lost_from + 1;
			ok = event_slice(g, marker, &s);
			event_free(marker);
			flags = 0;
		} else {
			ok = event_slice(g, e, &s);
			flags = journal_has_next(a->journal, &c->cur, HINT_SCAN) ? GRPC_WRITE_BUFFER_HINT : 0;
		}
		c->hinted = 0;
		if (ok) {
			loop_sub_send(c, s, flags, cache);
		} else {
			send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent out of memory");
			sub_drop_slot(c);
		}
		return;
	}
	if (g->closing) {
		send_status(c, GRPC_STATUS_OK, NULL);
		sub_drop_slot(c);
		return;
	}
	pthread_mutex_lock(&g->slock);
	c->send_busy = false;
	pthread_mutex_unlock(&g->slock);
}

static void sub_continue(struct gcall *c)
{
	sub_continue_cache(c, true);
}

/* Core loop: take an idle send slot and send what is next. */
static void kick_subscriber(struct gcall *c)
{
	struct grpc_api *g = c->g;
	pthread_mutex_lock(&g->slock);
	bool mine = !c->send_busy && !c->sub_stop;
	if (mine)
		c->send_busy = true;
	pthread_mutex_unlock(&g->slock);
	if (mine)
		sub_continue(c);
}

/* Core loop: a subscriber's send completed and the pump left it to us. */
static void on_sub_send(struct gcall *c, int ok)
{
	if (c->send_buf) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	if (!ok || c->closed || c->status_sent || c->sub_stop)
		sub_drop_slot(c);
	else
		sub_continue(c);
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

/* The verified client certificate's subject (mTLS), true when there is one. */
static bool call_cert_subject(grpc_call *call, char *out, size_t outlen)
{
	grpc_auth_context *ac = grpc_call_auth_context(call);
	if (!ac)
		return false;
	grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ac, GRPC_X509_SUBJECT_PROPERTY_NAME);
	const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
	if (p)
		snprintf(out, outlen, "%.*s", (int)p->value_length, p->value);
	grpc_auth_context_release(ac);
	return p != NULL;
}

/* mTLS: the call's client certificate (gRPC verified its chain in the
 * handshake) against the agent's current CRLs; true with why when it is
 * revoked. A call without one (the unix socket) is not for this check. */
static bool call_cert_revoked(struct grpc_api *g, grpc_call *call, char *why, size_t whylen)
{
	const struct tls_creds *t = g->agent->tls;
	if (!g->mtls || !t || !t->ncrls)
		return false;
	grpc_auth_context *ac = grpc_call_auth_context(call);
	if (!ac)
		return false;
	grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ac, GRPC_X509_PEM_CERT_PROPERTY_NAME);
	const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
	bool revoked = p && tls_pem_revoked(t, p->value, p->value_length, why, whylen) != 0;
	grpc_auth_context_release(ac);
	return revoked;
}

static void tls_reload(struct grpc_api *g);

/* After a reload (a new crl_file, maybe): the open streams whose client
 * certificate is now revoked are ended with UNAUTHENTICATED, as a new call
 * would be refused. (Unary calls are short; they finish.) */
static void end_revoked_streams(struct grpc_api *g)
{
	char why[160];
	for (struct gcall *c = g->calls; c; c = c->next) {
		if ((!c->subscriber && !c->timer) || c->closed || c->status_sent ||
		    !call_cert_revoked(g, c->call, why, sizeof(why)))
			continue;
		log_warn("grpc: stream %s ended: %s", c->m == M_SUBSCRIBE ? "Subscribe" : "StreamMetrics", why);
		grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAUTHENTICATED, why, NULL);
	}
}

/* Journal listener: into the feed (serialized once for every subscriber).
 * The idle subscribers are woken once per loop iteration (kick_prepare),
 * not once per event: a burst journaled in one go (the test generator's
 * tick, a batch of process events) then goes out as one write per
 * subscriber instead of one per event. AGENT_CONFIG_RELOADED is also when
 * new TLS files (a SIGHUP) are staged for new connections. */
static void on_event(void *arg, const struct event *e)
{
	struct grpc_api *g = arg;
	grpc_slice s = grpc_empty_slice(), old = grpc_empty_slice();
	if (e->type == EV_AGENT_CONFIG_RELOADED && g->agent->tls_gen != g->tls_gen)
		tls_reload(g);
	if (e->type == EV_AGENT_CONFIG_RELOADED && g->mtls)
		end_revoked_streams(g);
	bool have = g->nsubscribers && event_slice(g, e, &s);
	pthread_mutex_lock(&g->slock);
	struct feed_ent *f = &g->feed[e->seq & (g->feed_cap - 1)];
	if (f->seq)
		old = f->slice;
	f->seq = have ? e->seq : 0;
	f->type = e->type;
	f->slice = s;
	g->feed_last = e->seq;
	pthread_mutex_unlock(&g->slock);
	grpc_slice_unref(old);
	g->kick_due = true;
}

/* With g->slock held: the next subscriber of the current kick round. */
static struct gcall *ready_pop(struct grpc_api *g)
{
	struct gcall *c = g->ready;
	if (c)
		g->ready = c->ready_next;
	return c;
}

/* Pump thread, between completions: take one subscriber of the core loop's
 * kick round, if any is left, and send its next event. */
static void pump_help(struct grpc_api *g)
{
	pthread_mutex_lock(&g->slock);
	struct gcall *c = ready_pop(g);
	pthread_mutex_unlock(&g->slock);
	if (c)
		sub_next(g, c, &g->pscratch);
}

/* Loop prepare hook (before the loop sleeps): wake the idle subscribers
 * that have events to get. Every one costs a write (most of it the kernel's
 * TCP work), so with 100 subscribers the round is the bulk of an event's
 * latency; the pump thread takes its share of the round: the idle ones are
 * put on the ready list (their slots taken), the first send's completion
 * goes to the pump, which wakes up and pops subscribers from the list
 * between its completions while the core loop pops the rest. The list is
 * empty again when this returns. */
static int kick_prepare(void *arg)
{
	struct grpc_api *g = arg;
	if (!g->kick_due)
		return -1;
	g->kick_due = false;
	struct gcall **tail = &g->ready;
	pthread_mutex_lock(&g->slock);
	for (struct gcall *c = g->calls; c; c = c->next) {
		if (c->subscriber && !c->send_busy && !c->sub_stop && c->cur.next <= g->feed_last) {
			c->send_busy = true;
			c->ready_next = NULL;
			*tail = c;
			tail = &c->ready_next;
		}
	}
	bool first = true;
	for (;;) {
		struct gcall *c = ready_pop(g);
		pthread_mutex_unlock(&g->slock);
		if (!c)
			break;
		sub_continue_cache(c, !first);
		first = false;
		pthread_mutex_lock(&g->slock);
	}
	return -1;
}

/* ---- configuration management ---- */

/* HTTP status of the REST API's answer -> the gRPC code (pbconv.c, shared
 * with the One Shield client; agent.proto documents the mapping). */
static grpc_status_code grpc_code(int http)
{
	return (grpc_status_code)pb_code_from_http(http);
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
		char subject[256], peer[sizeof(((struct cfgapply_req *)0)->peer)];
		snprintf(peer, sizeof(peer), "%s", c->who);
		if (call_cert_subject(c->call, subject, sizeof(subject))) {
			size_t n = strlen(peer);
			snprintf(peer + n, sizeof(peer) - n, " cert:%s", subject);
		}
		struct cfgapply_req *ar = NULL;
		bool ok = pb_apply_request(req, peer, &ar) == 0;
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

/* probes_start's refusals (pbconv.c); the proto documents the mapping. */
static grpc_status_code probes_code(int rc)
{
	return (grpc_status_code)pb_code_from_probes(rc);
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

/* api.limits.max_streams_per_peer, before a Subscribe or StreamMetrics
 * stream starts: true when c's peer holds fewer streams than that, else
 * the call ends with RESOURCE_EXHAUSTED. A stream's slot is free again as
 * soon as its call is (call_free unlinks it from g->calls). */
static bool peer_stream_admit(struct gcall *c)
{
	struct grpc_api *g = c->g;
	size_t n = 0;
	for (const struct gcall *o = g->calls; o; o = o->next)
		n += o->peer_stream && strcmp(o->addr, c->addr) == 0;
	if (n < g->max_peer_streams)
		return true;
	char msg[160];
	snprintf(msg, sizeof(msg), API_PEER_STREAMS_FMT, c->addr, g->max_peer_streams);
	send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
	return false;
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
			if (!peer_stream_admit(c))
				break;
			uint64_t ms = interval ? interval : a->cfg->metrics.interval_ms;
			if (ms < MIN_STREAM_INTERVAL_MS)
				ms = MIN_STREAM_INTERVAL_MS;
			c->timer = loop_timer_new(a->loop, metrics_tick, c);
			if (!c->timer || loop_timer_arm(c->timer, ms, ms)) {
				send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot arm a timer");
				break;
			}
			c->peer_stream = true;
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
		if (!peer_stream_admit(c))
			break;
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
		c->peer_stream = true;
		g->nsubscribers++;
		journal_cursor_init(a->journal, &c->cur, after, mask);
		c->slot = true;
		c->refs++;
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

/* ---- the unix socket (api.grpc_socket) ---- */

static bool unix_peer_uid(struct grpc_api *g, const char *num, unsigned *uid)
{
	char *end;
	errno = 0;
	unsigned long fd = strtoul(num, &end, 10);
	if (errno || end == num || *end)
		return false;
	pthread_mutex_lock(&g->ulock);
	bool known = fd < g->nuids && g->uids[fd];
	if (known)
		*uid = g->uids[fd] - 1;
	pthread_mutex_unlock(&g->ulock);
	return known;
}

static int unix_record(struct grpc_api *g, int fd, unsigned uid)
{
	pthread_mutex_lock(&g->ulock);
	if ((size_t)fd >= g->nuids) {
		size_t n = g->nuids ? g->nuids : 64;
		while (n <= (size_t)fd)
			n *= 2;
		unsigned *u = realloc(g->uids, n * sizeof(*u));
		if (!u) {
			pthread_mutex_unlock(&g->ulock);
			return -ENOMEM;
		}
		memset(u + g->nuids, 0, (n - g->nuids) * sizeof(*u));
		g->uids = u;
		g->nuids = n;
	}
	g->uids[fd] = uid + 1;
	pthread_mutex_unlock(&g->ulock);
	return 0;
}

static void unix_accept(void *arg, int lfd, uint32_t events)
{
	struct grpc_api *g = arg;
	(void)events;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("grpc: %s: accept: %s", g->sock_path, strerror(errno));
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		unsigned uid;
		if (g->closing || auth_peer_uid(fd, &uid) || unix_record(g, fd, uid)) {
			close(fd);
			continue;
		}
		/* gRPC owns the fd from here, and closes it */
		grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
		grpc_server_add_channel_from_fd(g->server, fd, creds);
		grpc_server_credentials_release(creds);
	}
}

/* Who is calling, decided before anything of the call is read: every
 * method needs a token (server reflection too: it maps the API for whoever
 * asks), except on the unix socket (api.grpc_socket), whose file mode is
 * the credential, and whose peer is named by its uid. A hook for TLS
 * (issue 8 §2): with client certificates, the verified subject
 * (grpc_call_auth_context) becomes the identity here ("cert:<subject>"),
 * before the token. */
static enum auth_result call_identify(struct gcall *c, const char *path, uint64_t *retry_ms)
{
	struct auth *au = c->g->agent->auth;
	char *peer = grpc_call_get_peer(c->call);
	const char *p = peer ? peer : "?";
	snprintf(c->who, sizeof(c->who), "grpc:%s", p);
	/* the peer's key is the address without the port */
	const char *s = p, *e = NULL;
	if (strncmp(p, "ipv4:", 5) == 0) {
		s = p + 5;
		e = strrchr(s, ':');
	} else if (strncmp(p, "ipv6:[", 6) == 0) {
		s = p + 6;
		e = strchr(s, ']');
	} else if (strncmp(p, "ipv6:%5B", 8) == 0) {
		/* newer gRPC percent-encodes the brackets */
		s = p + 8;
		e = strstr(s, "%5D");
	}
	size_t n = e ? (size_t)(e - s) : strlen(s);
	snprintf(c->addr, sizeof(c->addr), "%.*s", (int)(n < sizeof(c->addr) - 1 ? n : sizeof(c->addr) - 1), s);
	auth_peer_key(c->addr, sizeof(c->addr));
	unsigned uid = 0;
	bool is_unix = strncmp(p, "fd:", 3) == 0 && unix_peer_uid(c->g, p + 3, &uid);
	gpr_free(peer);
	if (is_unix) {
		/* every client of the socket is the one peer "unix" (the limits'
		 * key, as on the REST socket); the audit names its uid */
		snprintf(c->addr, sizeof(c->addr), "unix");
		snprintf(c->who, sizeof(c->who), "grpc:unix uid:%u", uid);
		return AUTH_OK;
	}
	if (!au || !au->enabled)
		return AUTH_OK;
	char hdr[AUTH_TOKEN_MAX + 16] = "";
	bool have = false;
	for (size_t i = 0; i < c->md.count; i++) {
		const grpc_metadata *m = &c->md.metadata[i];
		if (grpc_slice_str_cmp(m->key, "authorization") != 0)
			continue;
		size_t vl = GRPC_SLICE_LENGTH(m->value);
		/* longer than any token: wrong, without copying it all */
		snprintf(hdr, sizeof(hdr), "%.*s", (int)(vl < sizeof(hdr) - 1 ? vl : sizeof(hdr) - 1),
			 (const char *)GRPC_SLICE_START_PTR(m->value));
		have = true;
		break;
	}
	char id[32];
	enum auth_result r = auth_request(au, "grpc", c->addr, "call", path, have ? hdr : NULL, id, sizeof(id),
					  retry_ms);
	if (r == AUTH_OK) {
		size_t l = strlen(c->who);
		snprintf(c->who + l, sizeof(c->who) - l, " %s", id);
	}
	return r;
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
	char why[160];
	if (call_cert_revoked(g, c->call, why, sizeof(why))) {
		log_warn("grpc: call %s refused: %s", path, why);
		send_status(c, GRPC_STATUS_UNAUTHENTICATED, why);
		return;
	}
	uint64_t retry_ms = 0;
	enum auth_result ar = call_identify(c, path, &retry_ms);
	if (ar == AUTH_THROTTLED) {
		char msg[160];
		snprintf(msg, sizeof(msg), "too many failed authentication attempts; retry in %llu ms",
			 (unsigned long long)retry_ms);
		send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
		return;
	} else if (ar != AUTH_OK) {
		char msg[160];
		snprintf(msg, sizeof(msg), "authentication required: %s (send metadata \"authorization: Bearer "
			 "<token>\")", auth_result_str(ar));
		send_status(c, GRPC_STATUS_UNAUTHENTICATED, msg);
		return;
	}
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
	int r = pb_read_message(c->recv_buf, &data, &len);
	grpc_byte_buffer_destroy(c->recv_buf);
	c->recv_buf = NULL;
	if (r)
		send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "unreadable request");
	else if (len > c->g->max_request)
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
	if (c->timer) {
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
	if (c->slot) {
		/* Stop the pump; with no send in flight the slot is ours to drop,
		 * else the send's completion comes to on_sub_send. */
		struct grpc_api *g = c->g;
		pthread_mutex_lock(&g->slock);
		c->sub_stop = true;
		bool idle = !c->send_busy;
		if (idle)
			c->send_busy = true;
		pthread_mutex_unlock(&g->slock);
		if (idle)
			sub_drop_slot(c);
	}
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
	case T_SUB_SEND: on_sub_send(c, ok); break;
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

/* Debian's abseil is built without NDEBUG, so every absl::Mutex acquisition
 * inside gRPC also runs abseil's debug-only deadlock detector (a lookup in a
 * global lock graph under a global spinlock, and stack traces): several per
 * cent of the agent's CPU under load. absl::SetMutexDeadlockDetectionMode
 * (kIgnore = 0) turns it off. A weak reference to the Debian build's
 * mangled name: with another abseil build it is NULL and nothing changes. */
extern void _ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(int) __attribute__((weak));

static void absl_no_deadlock_detection(void)
{
	if (_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE)
		_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(0);
}

static void impl_stop(struct grpc_api *g);

/* The certificate config gRPC copies from the agent's PEM text. */
static grpc_ssl_server_certificate_config *tls_config(const struct tls_creds *t)
{
	grpc_ssl_pem_key_cert_pair pair = { .private_key = t->key_pem, .cert_chain = t->cert_pem };
	/* gRPC 1.51 aborts on a fetched config without root certificates
	 * (ssl_security_connector.cc asserts them) even when it asks for no
	 * client certificate; then they are never used, so the server's own
	 * chain stands in. */
	return grpc_ssl_server_certificate_config_create(t->ca_pem ? t->ca_pem : t->cert_pem, &pair, 1);
}

/* gRPC's thread, at server start and at each new connection. */
static grpc_ssl_certificate_config_reload_status tls_fetch(void *arg, grpc_ssl_server_certificate_config **config)
{
	struct grpc_api *g = arg;
	pthread_mutex_lock(&g->tls_lock);
	*config = g->tls_next;
	g->tls_next = NULL;
	pthread_mutex_unlock(&g->tls_lock);
	return *config ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
}

/* Core loop, after a SIGHUP changed the agent's TLS files. */
static void tls_reload(struct grpc_api *g)
{
	const struct tls_creds *t = g->agent->tls;
	g->tls_gen = g->agent->tls_gen;
	if (!g->tls || !t || g->mtls != (t->ca_pem != NULL)) {
		log_warn("grpc: api.tls now %s; the gRPC server keeps %s until the agent restarts",
			 !t ? "off" : t->ca_pem ? "requires client certificates" : "on without client certificates",
			 !g->tls ? "plaintext" : g->mtls ? "TLS with client certificates" : "TLS without client certificates");
		return;
	}
	grpc_ssl_server_certificate_config *cc = tls_config(t), *old;
	if (!cc) {
		log_error("grpc: cannot build the new TLS configuration; new connections keep the previous one");
		return;
	}
	pthread_mutex_lock(&g->tls_lock);
	old = g->tls_next;
	g->tls_next = cc;
	pthread_mutex_unlock(&g->tls_lock);
	if (old)
		grpc_ssl_server_certificate_config_destroy(old);
	log_info("grpc: new TLS certificate (%s) for new connections", t->subject);
}

static int impl_start(struct agent *a, const char *listen, size_t max_subscribers, struct grpc_api **out, char *err,
		   size_t errlen)
{
	char host[128];
	uint16_t port;
	*out = NULL;
	if (listen && config_parse_listen(listen, host, sizeof(host), &port)) {
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
	g->max_request = a->cfg->api.limits.grpc_max_message_bytes; /* api.limits, read at start */
	g->max_peer_streams = a->cfg->api.limits.max_streams_per_peer;
	g->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	g->ufd = -1;
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->tls_lock, NULL);
	pthread_mutex_init(&g->ulock, NULL);
	/* Held for a few hundred nanoseconds at a time by two threads: spin a
	 * little before sleeping, as a sleep costs two context switches. */
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&g->slock, &ma);
	pthread_mutexattr_destroy(&ma);
	buf_init(&g->scratch);
	buf_init(&g->pscratch);
	/* The feed never holds an event the journal has dropped. */
	size_t jcap = journal_capacity(a->journal);
	for (g->feed_cap = FEED_MAX; g->feed_cap > jcap; g->feed_cap /= 2)
		;
	g->feed_last = journal_last_seq(a->journal);
	g->feed = calloc(g->feed_cap ? g->feed_cap : 1, sizeof(*g->feed));
	if (!g->feed || !g->feed_cap) {
		snprintf(err, errlen, "out of memory");
		close(g->efd);
		pthread_mutex_destroy(&g->tls_lock);
		pthread_mutex_destroy(&g->lock);
		pthread_mutex_destroy(&g->slock);
		free(g->feed);
		free(g);
		reflection_fini();
		return -ENOMEM;
	}
	g->t_shutdown.kind = T_SHUTDOWN;
	absl_no_deadlock_detection();
	grpc_init();
	grpc_arg args[] = {
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
		  .value.integer = (int)g->max_request },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0 },
	};
	grpc_channel_args cargs = { .num_args = sizeof(args) / sizeof(args[0]), .args = args };
	g->server = grpc_server_create(&cargs, NULL);
	g->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(g->server, g->cq, NULL);
	grpc_server_credentials *creds;
	if (a->tls) {
		/* gRPC's SSL server allows TLS 1.2 and 1.3 only (its default
		 * minimum; tests/e2e/test_tls.py checks that 1.1 is refused). */
		g->tls = true;
		g->mtls = a->tls->ca_pem != NULL;
		g->tls_gen = a->tls_gen;
		g->tls_next = tls_config(a->tls);
		grpc_ssl_server_credentials_options *o = g->tls_next ?
			grpc_ssl_server_credentials_create_options_using_config_fetcher(
				g->mtls ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
					: GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
				tls_fetch, g) : NULL;
		creds = o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
	} else {
		creds = grpc_insecure_server_credentials_create();
	}
	g->port = listen && creds ? grpc_server_add_http2_port(g->server, listen, creds) : 0;
	bool ok = listen ? g->port > 0 : true;
	if (!ok)
		snprintf(err, errlen, creds ? "cannot listen on %s" : "cannot set up TLS for %s", listen);
	if (creds)
		grpc_server_credentials_release(creds);
	const char *sock = a->cfg->api.grpc_socket;
	if (ok && sock) {
		/* Plaintext: the socket file's mode is the credential (the same
		 * stale-file rule and umask as the REST socket's) */
		g->ufd = auth_unix_listen(sock, a->cfg->api.socket_mode, err, errlen);
		ok = g->ufd >= 0 && (g->sock_path = strdup(sock)) != NULL;
		if (g->ufd >= 0 && !ok)
			snprintf(err, errlen, "out of memory");
	}
	if (!ok || g->efd < 0) {
		if (g->efd < 0)
			snprintf(err, errlen, "cannot create an eventfd");
		if (g->ufd >= 0) {
			close(g->ufd);
			unlink(sock);
		}
		if (g->tls_next)
			grpc_ssl_server_certificate_config_destroy(g->tls_next);
		pthread_mutex_destroy(&g->tls_lock);
		grpc_server_destroy(g->server);
		grpc_completion_queue_shutdown(g->cq);
		grpc_completion_queue_destroy(g->cq);
		if (g->efd >= 0)
			close(g->efd);
		pthread_mutex_destroy(&g->lock);
		pthread_mutex_destroy(&g->slock);
		pthread_mutex_destroy(&g->ulock);
		free(g->feed);
		free(g->sock_path);
		free(g);
		grpc_shutdown();
		reflection_fini();
		return -EADDRINUSE;
	}
	grpc_server_start(g->server);
	g->io = loop_io_add(a->loop, g->efd, EPOLLIN, drain, g);
	if (g->io && pthread_create(&g->pump, NULL, pump, g) == 0)
		g->pump_started = true;
	if (!g->pump_started || (g->ufd >= 0 && !(g->uio = loop_io_add(a->loop, g->ufd, EPOLLIN, unix_accept, g))) ||
	    journal_add_listener(a->journal, on_event, g) ||
	    !(g->prepare_added = loop_add_prepare(a->loop, kick_prepare, g) == 0)) {
		snprintf(err, errlen, "cannot attach the gRPC server to the core loop");
		impl_stop(g);
		return -ENOMEM;
	}
	for (int i = 0; i < PENDING_REQUESTS; i++)
		request_one(g);
	*out = g;
	return 0;
}

/* No new connections on the unix socket (those open are gRPC's to end);
 * the file goes, so a client is refused at once rather than queued. */
static void unix_close(struct grpc_api *g)
{
	loop_io_del(g->agent->loop, g->uio);
	g->uio = NULL;
	if (g->ufd >= 0)
		close(g->ufd);
	g->ufd = -1;
	if (g->sock_path) {
		unlink(g->sock_path);
		free(g->sock_path);
		g->sock_path = NULL;
	}
}

static void impl_begin_shutdown(struct grpc_api *g)
{
	if (!g)
		return;
	g->closing = true;
	unix_close(g);
	pthread_mutex_lock(&g->slock);
	g->feed_closing = true; /* the pump leaves the ends of streams to us */
	pthread_mutex_unlock(&g->slock);
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
	unix_close(g);
	if (g->prepare_added)
		loop_remove_prepare(g->agent->loop, kick_prepare, g);
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
	for (size_t i = 0; i < g->feed_cap; i++)
		if (g->feed[i].seq)
			grpc_slice_unref(g->feed[i].slice);
	free(g->feed);
	buf_free(&g->scratch);
	buf_free(&g->pscratch);
	grpc_server_destroy(g->server);
	grpc_completion_queue_destroy(g->cq);
	close(g->efd);
	if (g->tls_next)
		grpc_ssl_server_certificate_config_destroy(g->tls_next);
	pthread_mutex_destroy(&g->tls_lock);
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->slock);
	free(g->q);
	pthread_mutex_destroy(&g->ulock);
	free(g->uids);
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
	.mgmt_start = mgmt_plugin_start,
	.mgmt_begin_shutdown = mgmt_plugin_begin_shutdown,
	.mgmt_sending = mgmt_plugin_sending,
	.mgmt_stop = mgmt_plugin_stop,
	.mgmt_status_json = mgmt_plugin_status_json,
	.mgmt_collect = mgmt_plugin_collect,
};
