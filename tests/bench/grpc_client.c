/* gRPC load client for `make bench-grpc` (tests/bench/grpc_bench.py builds it).
 *
 *   grpc_client fanout --target HOST:PORT --subscribers N [--types 12] --after SEQ
 *                      --expect COUNT [--timeout S] [--channels C] [--threads T]
 *   grpc_client unary  --target HOST:PORT [--concurrency 16] [--seconds S] [--channels C]
 *
 * fanout: N Subscribe calls, one RECV_MESSAGE in flight per call. Each Event
 * is decoded with protobuf-c (from a per-thread arena: no malloc per message)
 * and accounted per subscriber: delivered, lost (EVENTS_LOST_MESSAGE ranges),
 * duplicates and unreported gaps in seq. Latency is now(CLOCK_REALTIME) minus
 * the event's time_unix_nano, kept in a fixed-bucket histogram (1 us buckets
 * below 10 ms, coarser above), never per sample. "READY" is printed once every
 * stream has its response headers; the run ends when each subscriber has
 * accounted for COUNT events (seq after+1 .. after+COUNT) or at the timeout.
 * The subscribers are spread over C channels (each its own TCP connection;
 * default one per subscriber, as separate clients would be) and T threads,
 * each thread with its own completion queue.
 *
 * unary: CONCURRENCY GetStatus calls kept in flight for S seconds.
 *
 * Both print one JSON object on stdout, including the client's own CPU time
 * (getrusage, all of its threads, gRPC's included), so the driver can tell
 * whether the client was the bottleneck. */
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "oneshield/agent/v1/agent.pb-c.h"

#define EVT_TEST 12
#define EVT_LOST 9

/* ---- clocks ---- */

static int64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* ---- latency histogram (microseconds) ----
 * [0, 10 ms): 1 us buckets; [10 ms, 1 s): 100 us; [1 s, 100 s): 10 ms; then one
 * overflow bucket. A percentile is reported as its bucket's upper bound. */
#define H_FINE 10000
#define H_MID 9900
#define H_COARSE 9900
#define H_N (H_FINE + H_MID + H_COARSE + 1)

struct hist {
	uint64_t b[H_N];
	uint64_t n, max_us, neg; /* neg: clock said the event came from the future */
	double sum_us;
};

static void hist_add(struct hist *h, int64_t us)
{
	if (us < 0) {
		h->neg++;
		us = 0;
	}
	uint64_t u = (uint64_t)us;
	size_t i;
	if (u < 10000)
		i = u;
	else if (u < 1000000)
		i = H_FINE + (u - 10000) / 100;
	else if (u < 100000000)
		i = H_FINE + H_MID + (u - 1000000) / 10000;
	else
		i = H_N - 1;
	h->b[i]++;
	h->n++;
	h->sum_us += (double)u;
	if (u > h->max_us)
		h->max_us = u;
}

static uint64_t bucket_upper(size_t i)
{
	if (i < H_FINE)
		return i + 1;
	if (i < H_FINE + H_MID)
		return 10000 + (i - H_FINE + 1) * 100;
	if (i < H_N - 1)
		return 1000000 + (i - H_FINE - H_MID + 1) * 10000;
	return UINT64_MAX;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
	if (!h->n)
		return 0;
	uint64_t want = (uint64_t)(p * (double)h->n + 0.999999);
	if (want < 1)
		want = 1;
	uint64_t acc = 0;
	for (size_t i = 0; i < H_N; i++) {
		acc += h->b[i];
		if (acc >= want) {
			uint64_t u = bucket_upper(i);
			return u < h->max_us ? u : h->max_us;
		}
	}
	return h->max_us;
}

static void hist_merge(struct hist *to, const struct hist *from)
{
	for (size_t i = 0; i < H_N; i++)
		to->b[i] += from->b[i];
	to->n += from->n;
	to->neg += from->neg;
	to->sum_us += from->sum_us;
	if (from->max_us > to->max_us)
		to->max_us = from->max_us;
}

static void hist_json(const char *name, const struct hist *h)
{
	printf("\"%s\":{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%" PRIu64 ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64
	       ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 ",\"negative\":%" PRIu64 "}",
	       name, h->n, h->n ? h->sum_us / (double)h->n : 0.0, hist_pct(h, 0.50), hist_pct(h, 0.90),
	       hist_pct(h, 0.99), hist_pct(h, 0.999), h->max_us, h->neg);
}

/* ---- protobuf-c arena allocator: reset after every message ---- */

struct arena {
	size_t used;
	_Alignas(16) unsigned char mem[64 * 1024];
};

static void *arena_alloc(void *ud, size_t size)
{
	struct arena *a = ud;
	size = (size + 15) & ~(size_t)15;
	if (size > sizeof(a->mem) - a->used)
		return NULL;
	void *p = a->mem + a->used;
	a->used += size;
	return p;
}

static void arena_free(void *ud, void *p)
{
	(void)ud;
	(void)p;
}

/* The bytes of a received message, without a copy when it is one slice. */
static const uint8_t *bb_bytes(grpc_byte_buffer *bb, grpc_slice *hold, size_t *len)
{
	if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
	    bb->data.raw.slice_buffer.count == 1) {
		*hold = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
	} else {
		grpc_byte_buffer_reader r;
		if (!grpc_byte_buffer_reader_init(&r, bb))
			return NULL;
		*hold = grpc_byte_buffer_reader_readall(&r);
		grpc_byte_buffer_reader_destroy(&r);
	}
	*len = GRPC_SLICE_LENGTH(*hold);
	return GRPC_SLICE_START_PTR(*hold);
}

/* ---- options ---- */

static struct {
	const char *target;
	int subscribers, channels, threads, concurrency;
	int types[16];
	size_t ntypes;
	uint64_t after, expect;
	double timeout, seconds;
} opt = { .subscribers = 100, .threads = 1, .concurrency = 16, .timeout = 60, .seconds = 5 };

__attribute__((noreturn)) static void usage(void)
{
	fprintf(stderr, "usage: grpc_client fanout --target HOST:PORT --subscribers N [--types T[,T..]] --after SEQ\n"
			"                          --expect COUNT [--timeout S] [--channels C] [--threads T]\n"
			"       grpc_client unary --target HOST:PORT [--concurrency N] [--seconds S] [--channels C]\n");
	exit(2);
}

static void parse_types(const char *s)
{
	char *dup = strdup(s), *save = NULL;
	for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (opt.ntypes == sizeof(opt.types) / sizeof(opt.types[0]))
			usage();
		opt.types[opt.ntypes++] = atoi(t);
	}
	free(dup);
}

static grpc_channel *new_channel(void)
{
	/* A local subchannel pool gives each channel its own connection. */
	grpc_arg args[] = {
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1 },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_RETRIES, .value.integer = 0 },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 64 << 20 },
	};
	grpc_channel_args cargs = { .num_args = sizeof(args) / sizeof(args[0]), .args = args };
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(opt.target, creds, &cargs);
	grpc_channel_credentials_release(creds);
	return ch;
}

static grpc_byte_buffer *packed(const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	grpc_slice s = grpc_slice_malloc(n);
	protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* ==== fanout ==== */

enum tag_kind { T_START, T_MSG, T_STATUS, T_UNARY };

struct sub;
struct tag {
	enum tag_kind kind;
	void *owner;
};

struct sub {
	int id;
	grpc_call *call;
	grpc_byte_buffer *req, *recv;
	grpc_metadata_array md_init, md_trail;
	grpc_status_code status;
	grpc_slice details;
	struct tag t_start, t_msg, t_status;
	int inflight;     /* batches outstanding */
	bool headers, ended, complete, cancelled;
	uint64_t next;    /* next expected seq */
	uint64_t delivered, lost, lost_markers, dups, gaps, other, decode_errors;
	int64_t first_ns, last_ns; /* monotonic, first and last event received */
};

static atomic_int g_headers;
static atomic_int g_complete;
static atomic_int g_stop;
static int64_t g_deadline_mono;

struct worker {
	pthread_t th;
	int idx;
	grpc_completion_queue *cq;
	grpc_channel **ch;
	int nch;
	struct sub *subs;
	int nsubs;
	int live;        /* subscriber calls not yet fully finished */
	struct hist h;
	struct arena arena;
};

static void sub_recv(struct sub *s)
{
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->recv;
	if (grpc_call_start_batch(s->call, &op, 1, &s->t_msg, NULL) == GRPC_CALL_OK)
		s->inflight++;
}

static void sub_finish_if_done(struct worker *w, struct sub *s)
{
	if (!s->complete && s->next > opt.after + opt.expect) {
		s->complete = true;
		atomic_fetch_add(&g_complete, 1);
	}
	if ((s->complete || atomic_load(&g_stop)) && !s->cancelled && !s->ended) {
		s->cancelled = true;
		grpc_call_cancel(s->call, NULL);
	}
	(void)w;
}

static void sub_account(struct worker *w, struct sub *s, const uint8_t *data, size_t len, int64_t now_real)
{
	ProtobufCAllocator alloc = { arena_alloc, arena_free, &w->arena };
	w->arena.used = 0;
	Oneshield__Agent__V1__Event *e = oneshield__agent__v1__event__unpack(&alloc, len, data);
	if (!e) {
		s->decode_errors++;
		return;
	}
	if (e->type == EVT_LOST) {
		uint64_t from = e->lost_from, to = e->lost_to;
		if (to >= from) {
			/* Count only what falls in this run's window. */
			uint64_t lo = from > opt.after ? from : opt.after + 1;
			uint64_t hi = to < opt.after + opt.expect ? to : opt.after + opt.expect;
			if (hi >= lo)
				s->lost += hi - lo + 1;
			if (lo > s->next && s->next <= opt.after + opt.expect)
				s->gaps += lo - s->next;
			if (to + 1 > s->next)
				s->next = to + 1;
		}
		s->lost_markers++;
	} else if ((int)e->type == EVT_TEST && e->seq > opt.after) {
		if (e->seq < s->next) {
			s->dups++;
		} else {
			if (e->seq > s->next)
				s->gaps += e->seq - s->next;
			s->next = e->seq + 1;
			if (e->seq <= opt.after + opt.expect) {
				s->delivered++;
				hist_add(&w->h, (now_real - e->time_unix_nano) / 1000);
			}
		}
	} else {
		s->other++;
	}
}

static void on_sub_event(struct worker *w, struct tag *t, int ok)
{
	struct sub *s = t->owner;
	s->inflight--;
	switch (t->kind) {
	case T_START:
		if (ok && !s->headers) {
			s->headers = true;
			if (atomic_fetch_add(&g_headers, 1) + 1 == opt.subscribers) {
				printf("READY\n");
				fflush(stdout);
			}
		}
		if (ok && !s->ended)
			sub_recv(s);
		break;
	case T_MSG:
		if (ok && s->recv) {
			int64_t now_real = now_ns(CLOCK_REALTIME);
			int64_t mono = now_ns(CLOCK_MONOTONIC);
			if (!s->first_ns)
				s->first_ns = mono;
			s->last_ns = mono;
			grpc_slice hold;
			size_t len = 0;
			const uint8_t *p = bb_bytes(s->recv, &hold, &len);
			if (p) {
				sub_account(w, s, p, len, now_real);
				grpc_slice_unref(hold);
			} else {
				s->decode_errors++;
			}
			grpc_byte_buffer_destroy(s->recv);
			s->recv = NULL;
			sub_finish_if_done(w, s);
			if (!s->cancelled && !s->ended)
				sub_recv(s);
		}
		break;
	case T_STATUS:
		s->ended = true;
		break;
	case T_UNARY:
		break;
	}
	if (s->ended && s->inflight == 0 && s->call) {
		grpc_call_unref(s->call);
		s->call = NULL;
		w->live--;
	}
}

static bool sub_start(struct worker *w, struct sub *s, grpc_channel *ch)
{
	static const char method[] = "/oneshield.agent.v1.Agent/Subscribe";
	s->t_start = (struct tag){ T_START, s };
	s->t_msg = (struct tag){ T_MSG, s };
	s->t_status = (struct tag){ T_STATUS, s };
	s->next = opt.after + 1;
	s->details = grpc_empty_slice();
	grpc_metadata_array_init(&s->md_init);
	grpc_metadata_array_init(&s->md_trail);

	Oneshield__Agent__V1__SubscribeRequest req = ONESHIELD__AGENT__V1__SUBSCRIBE_REQUEST__INIT;
	Oneshield__Agent__V1__EventType types[16];
	for (size_t i = 0; i < opt.ntypes; i++)
		types[i] = (Oneshield__Agent__V1__EventType)opt.types[i];
	req.n_types = opt.ntypes;
	req.types = types;
	req.after_seq = opt.after;
	s->req = packed(&req.base);

	grpc_slice m = grpc_slice_from_static_string(method);
	s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq, m, NULL,
					   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (!s->call)
		return false;
	grpc_op ops[4];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = s->req;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
	if (grpc_call_start_batch(s->call, ops, 4, &s->t_start, NULL) != GRPC_CALL_OK)
		return false;
	s->inflight++;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s->md_trail;
	ops[0].data.recv_status_on_client.status = &s->status;
	ops[0].data.recv_status_on_client.status_details = &s->details;
	if (grpc_call_start_batch(s->call, ops, 1, &s->t_status, NULL) != GRPC_CALL_OK)
		return false;
	s->inflight++;
	w->live++;
	return true;
}

static void *fanout_worker(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < w->nsubs; i++)
		if (!sub_start(w, &w->subs[i], w->ch[i % w->nch])) {
			fprintf(stderr, "grpc_client: cannot start subscriber %d\n", w->subs[i].id);
			exit(1);
		}
	bool stopping = false;
	while (w->live > 0) {
		grpc_event ev = grpc_completion_queue_next(w->cq, gpr_time_from_millis(100, GPR_TIMESPAN), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			on_sub_event(w, ev.tag, ev.success);
		else if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (!stopping && (atomic_load(&g_stop) || atomic_load(&g_complete) == opt.subscribers ||
				  now_ns(CLOCK_MONOTONIC) >= g_deadline_mono)) {
			stopping = true;
			atomic_store(&g_stop, 1);
			for (int i = 0; i < w->nsubs; i++) {
				struct sub *s = &w->subs[i];
				if (s->call && !s->cancelled && !s->ended) {
					s->cancelled = true;
					grpc_call_cancel(s->call, NULL);
				}
			}
		}
	}
	return NULL;
}

static int run_fanout(void)
{
	if (opt.channels <= 0)
		opt.channels = opt.subscribers;
	if (opt.threads <= 0)
		opt.threads = 1;
	if (opt.threads > opt.subscribers)
		opt.threads = opt.subscribers;
	if (opt.channels > opt.subscribers)
		opt.channels = opt.subscribers;
	if (opt.channels < opt.threads)
		opt.channels = opt.threads;
	struct sub *subs = calloc((size_t)opt.subscribers, sizeof(*subs));
	struct worker *ws = calloc((size_t)opt.threads, sizeof(*ws));
	if (!subs || !ws)
		return 1;
	for (int i = 0; i < opt.subscribers; i++)
		subs[i].id = i;
	int64_t t0 = now_ns(CLOCK_MONOTONIC);
	double c0 = cpu_seconds();
	g_deadline_mono = t0 + (int64_t)(opt.timeout * 1e9);
	/* Subscribers and channels split evenly over the threads. */
	int sdone = 0, cdone = 0;
	for (int k = 0; k < opt.threads; k++) {
		struct worker *w = &ws[k];
		w->idx = k;
		w->nsubs = (opt.subscribers - sdone) / (opt.threads - k);
		w->subs = subs + sdone;
		sdone += w->nsubs;
		w->nch = (opt.channels - cdone) / (opt.threads - k);
		cdone += w->nch;
		w->ch = calloc((size_t)w->nch, sizeof(*w->ch));
		for (int i = 0; i < w->nch; i++)
			w->ch[i] = new_channel();
		w->cq = grpc_completion_queue_create_for_next(NULL);
	}
	for (int k = 0; k < opt.threads; k++)
		if (pthread_create(&ws[k].th, NULL, fanout_worker, &ws[k])) {
			fprintf(stderr, "grpc_client: pthread_create: %s\n", strerror(errno));
			return 1;
		}
	for (int k = 0; k < opt.threads; k++)
		pthread_join(ws[k].th, NULL);
	int64_t t1 = now_ns(CLOCK_MONOTONIC);
	double c1 = cpu_seconds();

	struct hist *h = calloc(1, sizeof(*h));
	for (int k = 0; k < opt.threads; k++)
		hist_merge(h, &ws[k].h);
	uint64_t dmin = UINT64_MAX, dmax = 0, lmin = UINT64_MAX, lmax = 0, dsum = 0, lsum = 0, dups = 0, gaps = 0;
	uint64_t markers = 0, other = 0, decode = 0, pmin = UINT64_MAX, pmax = 0, psum = 0;
	int with_loss = 0, complete = 0, ended_early = 0, no_headers = 0;
	int64_t first = 0, last = 0;
	for (int i = 0; i < opt.subscribers; i++) {
		struct sub *s = &subs[i];
		dmin = s->delivered < dmin ? s->delivered : dmin;
		dmax = s->delivered > dmax ? s->delivered : dmax;
		lmin = s->lost < lmin ? s->lost : lmin;
		lmax = s->lost > lmax ? s->lost : lmax;
		dsum += s->delivered;
		lsum += s->lost;
		dups += s->dups;
		gaps += s->gaps;
		markers += s->lost_markers;
		other += s->other;
		decode += s->decode_errors;
		/* Not yet accounted for when the run ended (timeout). */
		uint64_t pend = s->next <= opt.after + opt.expect ? opt.after + opt.expect + 1 - s->next : 0;
		pmin = pend < pmin ? pend : pmin;
		pmax = pend > pmax ? pend : pmax;
		psum += pend;
		with_loss += s->lost > 0;
		complete += s->complete;
		no_headers += !s->headers;
		/* Ended by the server (not by our cancel) before its COUNT events. */
		if (!s->complete && s->status != GRPC_STATUS_CANCELLED)
			ended_early++;
		if (s->first_ns && (!first || s->first_ns < first))
			first = s->first_ns;
		if (s->last_ns > last)
			last = s->last_ns;
	}
	double span = first && last > first ? (double)(last - first) / 1e9 : 0;
	printf("{\"mode\":\"fanout\",\"subscribers\":%d,\"channels\":%d,\"threads\":%d,\"expect\":%" PRIu64
	       ",\"complete\":%d,\"timed_out\":%s,\"no_headers\":%d,\"ended_by_server\":%d,",
	       opt.subscribers, opt.channels, opt.threads, opt.expect, complete,
	       complete == opt.subscribers ? "false" : "true", no_headers, ended_early);
	printf("\"delivered\":{\"total\":%" PRIu64 ",\"min\":%" PRIu64 ",\"max\":%" PRIu64 "},", dsum, dmin, dmax);
	printf("\"lost\":{\"total\":%" PRIu64 ",\"min\":%" PRIu64 ",\"max\":%" PRIu64 ",\"subscribers\":%d,\"markers\":%" PRIu64
	       "},",
	       lsum, lmin, lmax, with_loss, markers);
	printf("\"pending\":{\"total\":%" PRIu64 ",\"min\":%" PRIu64 ",\"max\":%" PRIu64 "},", psum, pmin, pmax);
	printf("\"duplicates\":%" PRIu64 ",\"gaps\":%" PRIu64 ",\"other\":%" PRIu64 ",\"decode_errors\":%" PRIu64 ",",
	       dups, gaps, other, decode);
	printf("\"receive_span_s\":%.3f,\"msgs_per_s\":%.0f,\"first_mono_s\":%.6f,\"last_mono_s\":%.6f,", span,
	       span > 0 ? (double)(dsum + markers) / span : 0.0, (double)first / 1e9, (double)last / 1e9);
	hist_json("latency_us", h);
	printf(",\"client\":{\"wall_s\":%.3f,\"cpu_s\":%.3f},\"per_subscriber\":[", (double)(t1 - t0) / 1e9, c1 - c0);
	for (int i = 0; i < opt.subscribers; i++)
		printf("%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "", subs[i].delivered, subs[i].lost);
	printf("]}\n");
	fflush(stdout);

	for (int k = 0; k < opt.threads; k++) {
		struct worker *w = &ws[k];
		for (int i = 0; i < w->nsubs; i++) {
			struct sub *s = &w->subs[i];
			if (s->call)
				grpc_call_unref(s->call);
			grpc_byte_buffer_destroy(s->req);
			if (s->recv)
				grpc_byte_buffer_destroy(s->recv);
			grpc_metadata_array_destroy(&s->md_init);
			grpc_metadata_array_destroy(&s->md_trail);
			grpc_slice_unref(s->details);
		}
		for (int i = 0; i < w->nch; i++)
			grpc_channel_destroy(w->ch[i]);
		free(w->ch);
		grpc_completion_queue_shutdown(w->cq);
		while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		       GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(w->cq);
	}
	free(h);
	free(ws);
	free(subs);
	return complete == opt.subscribers ? 0 : 3;
}

/* ==== unary ==== */

struct ucall {
	grpc_call *call;
	grpc_byte_buffer *recv;
	grpc_metadata_array md_init, md_trail;
	grpc_status_code status;
	grpc_slice details;
	struct tag t;
	int64_t start_ns;
	int ch;
};

static grpc_byte_buffer *g_status_req;

static bool unary_start(grpc_completion_queue *cq, grpc_channel *ch, struct ucall *u)
{
	static const char method[] = "/oneshield.agent.v1.Agent/GetStatus";
	grpc_metadata_array_init(&u->md_init);
	grpc_metadata_array_init(&u->md_trail);
	u->details = grpc_empty_slice();
	u->recv = NULL;
	u->t = (struct tag){ T_UNARY, u };
	u->start_ns = now_ns(CLOCK_MONOTONIC);
	grpc_slice m = grpc_slice_from_static_string(method);
	u->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
					   gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN)),
					   NULL);
	if (!u->call)
		return false;
	grpc_op ops[6];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = g_status_req;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->md_init;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &u->recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &u->md_trail;
	ops[5].data.recv_status_on_client.status = &u->status;
	ops[5].data.recv_status_on_client.status_details = &u->details;
	return grpc_call_start_batch(u->call, ops, 6, &u->t, NULL) == GRPC_CALL_OK;
}

static void unary_end(struct ucall *u)
{
	if (u->recv)
		grpc_byte_buffer_destroy(u->recv);
	u->recv = NULL;
	grpc_metadata_array_destroy(&u->md_init);
	grpc_metadata_array_destroy(&u->md_trail);
	grpc_slice_unref(u->details);
	grpc_call_unref(u->call);
	u->call = NULL;
}

static int run_unary(void)
{
	int n = opt.concurrency > 0 ? opt.concurrency : 1;
	if (opt.channels <= 0)
		opt.channels = 1;
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	grpc_channel **ch = calloc((size_t)opt.channels, sizeof(*ch));
	for (int i = 0; i < opt.channels; i++)
		ch[i] = new_channel();
	Oneshield__Agent__V1__GetStatusRequest req = ONESHIELD__AGENT__V1__GET_STATUS_REQUEST__INIT;
	g_status_req = packed(&req.base);
	struct ucall *us = calloc((size_t)n, sizeof(*us));
	struct hist *h = calloc(1, sizeof(*h));
	static struct arena ar;

	/* Warm-up: connect and complete one call on each channel. */
	for (int i = 0; i < opt.channels; i++) {
		struct ucall w = { .ch = i };
		if (!unary_start(cq, ch[i], &w))
			return 1;
		grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type != GRPC_OP_COMPLETE || !ev.success || w.status != GRPC_STATUS_OK) {
			char *d = grpc_slice_to_c_string(w.details);
			fprintf(stderr, "grpc_client: warm-up GetStatus failed: status %d %s\n", w.status, d);
			gpr_free(d);
			return 1;
		}
		unary_end(&w);
	}

	int64_t t0 = now_ns(CLOCK_MONOTONIC), end = t0 + (int64_t)(opt.seconds * 1e9);
	double c0 = cpu_seconds();
	uint64_t ok = 0, failed = 0, bad = 0, bytes = 0;
	int inflight = 0;
	for (int i = 0; i < n; i++) {
		us[i].ch = i % opt.channels;
		if (!unary_start(cq, ch[us[i].ch], &us[i]))
			return 1;
		inflight++;
	}
	while (inflight > 0) {
		grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		struct ucall *u = ((struct tag *)ev.tag)->owner;
		int64_t t = now_ns(CLOCK_MONOTONIC);
		inflight--;
		if (ev.success && u->status == GRPC_STATUS_OK && u->recv) {
			grpc_slice hold;
			size_t len = 0;
			const uint8_t *p = bb_bytes(u->recv, &hold, &len);
			ProtobufCAllocator alloc = { arena_alloc, arena_free, &ar };
			ar.used = 0;
			Oneshield__Agent__V1__Status *st = p ? oneshield__agent__v1__status__unpack(&alloc, len, p) : NULL;
			if (st && st->pid > 0) {
				ok++;
				bytes += len;
				hist_add(h, (t - u->start_ns) / 1000);
			} else {
				bad++;
			}
			if (p)
				grpc_slice_unref(hold);
		} else {
			failed++;
		}
		unary_end(u);
		if (t < end) {
			if (unary_start(cq, ch[u->ch], u))
				inflight++;
		}
	}
	int64_t t1 = now_ns(CLOCK_MONOTONIC);
	double c1 = cpu_seconds();
	double wall = (double)(t1 - t0) / 1e9;
	printf("{\"mode\":\"unary\",\"concurrency\":%d,\"channels\":%d,\"calls\":%" PRIu64 ",\"failed\":%" PRIu64
	       ",\"bad\":%" PRIu64 ",\"wall_s\":%.3f,\"calls_per_s\":%.0f,\"response_bytes\":%.0f,",
	       n, opt.channels, ok, failed, bad, wall, (double)ok / wall, ok ? (double)bytes / (double)ok : 0.0);
	hist_json("latency_us", h);
	printf(",\"client\":{\"wall_s\":%.3f,\"cpu_s\":%.3f}}\n", wall, c1 - c0);
	fflush(stdout);

	for (int i = 0; i < opt.channels; i++)
		grpc_channel_destroy(ch[i]);
	grpc_byte_buffer_destroy(g_status_req);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	free(ch);
	free(us);
	free(h);
	return failed || bad ? 3 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (!strcmp(a, "--target"))
			opt.target = v;
		else if (!strcmp(a, "--subscribers"))
			opt.subscribers = atoi(v);
		else if (!strcmp(a, "--channels"))
			opt.channels = atoi(v);
		else if (!strcmp(a, "--threads"))
			opt.threads = atoi(v);
		else if (!strcmp(a, "--types"))
			parse_types(v);
		else if (!strcmp(a, "--after"))
			opt.after = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--expect"))
			opt.expect = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--timeout"))
			opt.timeout = atof(v);
		else if (!strcmp(a, "--concurrency"))
			opt.concurrency = atoi(v);
		else if (!strcmp(a, "--seconds"))
			opt.seconds = atof(v);
		else
			usage();
	}
	if (!opt.target)
		usage();
	grpc_init();
	int rc;
	if (!strcmp(mode, "fanout")) {
		if (opt.subscribers <= 0 || !opt.expect)
			usage();
		rc = run_fanout();
	} else if (!strcmp(mode, "unary")) {
		rc = run_unary();
	} else {
		usage();
	}
	grpc_shutdown();
	return rc;
}
