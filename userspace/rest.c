#include "rest.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "auth.h"
#include "cfgapply.h"
#include "cfgfs.h"
#include "buf.h"
#include "config.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "probes.h"
#include "testgen.h"
#include "tls.h"

#define HEARTBEAT_MS 15000
/* An apply body: the configured total of files, 4/3 of it when in base64,
 * plus JSON around each file. */
static size_t apply_body_limit(const struct agent *a)
{
	struct cfgfs_limits lim;
	cfgapply_limits(a, &lim);
	return lim.max_total_bytes / 3 * 4 + 4 + lim.max_files * 4200 + 65536;
}

struct sse {
	struct rest *rest;
	struct MHD_Connection *conn;
	struct journal_cursor cur;
	struct buf out;       /* serialized, not yet handed to MHD */
	size_t off;
	bool suspended;
	bool heartbeat_due;
	bool peer_gone;       /* the client hung up while we were parked */
	bool revoked;         /* its client certificate no longer passes: end after s->out */
	struct loop_io *hup;  /* EPOLLRDHUP watch on the socket */
	char addr[INET6_ADDRSTRLEN]; /* the peer (req.addr): api.limits.max_streams_per_peer */
	struct sse *prev, *next;
};

/* The TCP listener and the optional unix socket: two daemons, one handler. */
struct listener {
	struct rest *rest;
	struct MHD_Daemon *d;
	struct loop_io *io;
	bool is_unix;
};

struct rest {
	struct agent *agent;
	struct listener l[2];
	size_t nl;
	char *sock_path;      /* api.rest_socket, unlinked at stop */
	bool prepare_added;
	struct loop_timer *heartbeat;
	struct sse *clients;
	size_t nclients, max_clients;
	bool closing;
	struct req *apply_req;  /* the request waiting for the running apply */
	bool need_run;        /* a connection was resumed: run MHD before sleeping */
	bool mtls;            /* every TCP request must come with a verified client certificate */
	unsigned short port;
	struct api_limits lim; /* api.limits, as when the listener started */
};

struct req {
	size_t hdr_bytes;     /* names + values of the headers (api.limits.max_header_bytes) */
	bool denied;          /* mTLS: no or bad client certificate, 403 queued */
	char cert_subject[256]; /* mTLS: the verified client certificate's subject DN */
	/* who: "rest:<address>" plus the authenticated identity
	 * ("token:<id>", "uid:<n>" on the unix socket); see rest_identify */
	char peer[96];
	/* the client's address without the port, "unix" for any client of
	 * the unix socket: the peer of the per-peer limits */
	char addr[INET6_ADDRSTRLEN];
	enum auth_result auth;    /* AUTH_OK, or why the request is refused */
	uint64_t retry_ms;        /* AUTH_THROTTLED: backoff left */
	size_t body_len;
	struct buf body;      /* kept only for POST /v1/config/apply */
	bool keep_body;
	bool method_post;
	/* a config apply running for this request */
	struct MHD_Connection *conn;
	cJSON *result;
	int result_code;
	bool waiting, answered;
};

/* ---- responses ---- */

static enum MHD_Result send_text_hdr(struct MHD_Connection *c, unsigned code, char *body, size_t len,
				    const char *ctype, const char *hname, const char *hvalue)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (hname)
		MHD_add_response_header(r, hname, hvalue);
	enum MHD_Result ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, char *body, size_t len, const char *ctype)
{
	return send_text_hdr(c, code, body, len, ctype, NULL, NULL);
}

static enum MHD_Result send_json_hdr(struct MHD_Connection *c, unsigned code, cJSON *j, const char *hname,
				     const char *hvalue)
{
	char *s = j ? cJSON_PrintUnformatted(j) : NULL;
	cJSON_Delete(j);
	if (!s)
		return MHD_NO;
	size_t n = strlen(s);
	/* a trailing newline keeps curl output readable */
	char *t = realloc(s, n + 2);
	if (t) {
		s = t;
		s[n++] = '\n';
		s[n] = '\0';
	}
	return send_text_hdr(c, code, s, n, "application/json", hname, hvalue);
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned code, cJSON *j)
{
	return send_json_hdr(c, code, j, NULL, NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "error", msg);
	cJSON_AddNumberToObject(j, "status", code);
	return send_json(c, code, j);
}

/* ---- query parsing ---- */

struct qcheck {
	const char *const *allowed;
	const char *bad;
};

static enum MHD_Result check_key(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct qcheck *q = cls;
	(void)kind;
	(void)value;
	for (const char *const *a = q->allowed; *a; a++)
		if (strcmp(*a, key) == 0)
			return MHD_YES;
	q->bad = key;
	return MHD_NO;
}

/* 0, or -EINVAL with the name of the first unknown parameter in *bad. */
static int check_query(struct MHD_Connection *c, const char *const *allowed, const char **bad)
{
	struct qcheck q = { allowed, NULL };
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_key, &q);
	*bad = q.bad;
	return q.bad ? -EINVAL : 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* "T1,T2" -> mask; empty/NULL = all. On error *bad names the offender. */
static int parse_types(const char *s, uint64_t *mask, char *bad, size_t badlen)
{
	*mask = 0;
	if (!s || !*s)
		return 0;
	const char *p = s;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char name[64];
		if (n == 0 || n >= sizeof(name)) {
			snprintf(bad, badlen, "%.*s", (int)(n < 60 ? n : 60), p);
			return -EINVAL;
		}
		memcpy(name, p, n);
		name[n] = '\0';
		enum event_type t;
		if (event_type_parse(name, &t)) {
			snprintf(bad, badlen, "%s", name);
			return -EINVAL;
		}
		*mask |= 1ULL << t;
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

static cJSON *valid_types(void)
{
	cJSON *a = cJSON_CreateArray();
	for (int t = 1; t < EV__COUNT; t++)
		cJSON_AddItemToArray(a, cJSON_CreateString(event_type_name((enum event_type)t)));
	return a;
}

/* Shared by /v1/events and the stream: after (or Last-Event-ID) and type. */
static enum MHD_Result parse_event_query(struct MHD_Connection *c, bool stream, uint64_t *after, uint64_t *mask,
					 uint64_t *limit, bool *ok)
{
	static const char *const allowed_list[] = { "after", "type", "limit", NULL };
	static const char *const allowed_stream[] = { "after", "type", NULL };
	const char *bad;
	*ok = false;
	if (check_query(c, stream ? allowed_stream : allowed_list, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\" (allowed: after, type%s)",
				  bad, stream ? "" : ", limit");
	const char *a = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
	const char *lei = stream ? MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID") : NULL;
	*after = 0;
	/* A reconnecting EventSource repeats the original URL: its
	 * Last-Event-ID is the newer position, so it wins. */
	if (lei && *lei) {
		if (parse_u64(lei, after))
			return send_error(c, MHD_HTTP_BAD_REQUEST, "Last-Event-ID must be a sequence number, got \"%.64s\"", lei);
	} else if (a && parse_u64(a, after)) {
		return send_error(c, MHD_HTTP_BAD_REQUEST, "after must be a sequence number, got \"%.64s\"", a);
	}
	char badt[64];
	if (parse_types(MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "type"), mask, badt, sizeof(badt))) {
		cJSON *j = cJSON_CreateObject();
		char msg[128];
		snprintf(msg, sizeof(msg), "unknown event type \"%s\"", badt);
		cJSON_AddStringToObject(j, "error", msg);
		cJSON_AddNumberToObject(j, "status", MHD_HTTP_BAD_REQUEST);
		cJSON_AddItemToObject(j, "valid_types", valid_types());
		return send_json(c, MHD_HTTP_BAD_REQUEST, j);
	}
	if (limit) {
		const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
		*limit = 1000;
		if (l && (parse_u64(l, limit) || *limit == 0 || *limit > 100000))
			return send_error(c, MHD_HTTP_BAD_REQUEST, "limit must be 1..100000, got \"%.64s\"", l);
	}
	*ok = true;
	return MHD_YES;
}

/* ---- limits (api.limits) ---- */

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	size_t *n = cls;
	(void)kind;
	*n += strlen(key) + (value ? strlen(value) : 0);
	return MHD_YES;
}

/* Nesting of a JSON text deeper than max, counted before it is parsed
 * (brackets inside strings do not count). */
static bool json_too_deep(const char *s, size_t n, size_t max)
{
	size_t depth = 0;
	bool in_str = false;
	for (size_t i = 0; s && i < n; i++) {
		char ch = s[i];
		if (in_str) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_str = false;
		} else if (ch == '"') {
			in_str = true;
		} else if (ch == '[' || ch == '{') {
			if (++depth > max)
				return true;
		} else if ((ch == ']' || ch == '}') && depth) {
			depth--;
		}
	}
	return false;
}

/* ---- handlers ---- */

static enum MHD_Result h_healthz(struct rest *r, struct MHD_Connection *c)
{
	(void)r;
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "status", "ok");
	return send_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result h_status(struct rest *r, struct MHD_Connection *c)
{
	cJSON *j = agent_status_json(r->agent);
	if (j) {
		cJSON *api = cJSON_GetObjectItem(j, "api");
		if (!api)
			api = cJSON_AddObjectToObject(j, "api");
		cJSON_AddNumberToObject(api, "sse_clients", (double)r->nclients);
	}
	return send_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result h_metrics_json(struct rest *r, struct MHD_Connection *c)
{
	static const char *const allowed[] = { "prefix", NULL };
	const char *bad;
	if (check_query(c, allowed, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\" (allowed: prefix)", bad);
	const char *prefix = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "prefix");
	cJSON *j = metrics_to_json(r->agent->snapshot, prefix);
	if (!j)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	return send_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result h_metrics_prom(struct rest *r, struct MHD_Connection *c)
{
	struct buf b;
	buf_init(&b);
	if (metrics_render_prom(r->agent->snapshot, NULL, &b)) {
		buf_free(&b);
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	}
	size_t n;
	char *s = buf_steal(&b, &n);
	if (!s)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	return send_text(c, MHD_HTTP_OK, s, n, "text/plain; version=0.0.4; charset=utf-8");
}

static enum MHD_Result h_events(struct rest *r, struct MHD_Connection *c)
{
	uint64_t after, mask, limit;
	bool ok;
	enum MHD_Result ret = parse_event_query(c, false, &after, &mask, &limit, &ok);
	if (!ok)
		return ret;
	struct journal *j = r->agent->journal;
	struct journal_cursor cur;
	journal_cursor_init(j, &cur, after, mask);
	cJSON *o = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(o, "events");
	const struct event *e;
	struct event *marker;
	uint64_t n = 0;
	while (n < limit && journal_next(j, &cur, &e, &marker)) {
		cJSON_AddItemToArray(arr, event_to_json(e ? e : marker));
		event_free(marker);
		n++;
	}
	cJSON_AddNumberToObject(o, "first_seq", (double)journal_first_seq(j));
	cJSON_AddNumberToObject(o, "last_seq", (double)journal_last_seq(j));
	/* where to resume: everything up to here was considered */
	cJSON_AddNumberToObject(o, "next_after", (double)(cur.next - 1));
	return send_json(c, MHD_HTTP_OK, o);
}

/* ---- SSE ---- */

static void sse_unlink(struct sse *s)
{
	struct rest *r = s->rest;
	if (s->prev)
		s->prev->next = s->next;
	else if (r->clients == s)
		r->clients = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	r->nclients--;
}

static void sse_free(void *cls)
{
	struct sse *s = cls;
	loop_io_del(s->rest->agent->loop, s->hup);
	sse_unlink(s);
	buf_free(&s->out);
	free(s);
}

static void sse_format(struct sse *s, const struct event *e)
{
	cJSON *j = event_to_json(e);
	char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
	cJSON_Delete(j);
	if (!txt)
		return;
	uint64_t id = e->type == EV_EVENTS_LOST ? e->lost_to : e->seq;
	buf_printf(&s->out, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)id, event_type_name(e->type), txt);
	free(txt);
}

static void sse_resume(struct sse *s);

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct sse *s = cls;
	struct rest *r = s->rest;
	(void)pos;
	if (s->peer_gone)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (s->revoked && s->off == s->out.len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (s->off == s->out.len) {
		buf_reset(&s->out);
		s->off = 0;
		const struct event *e;
		struct event *marker;
		/* Batch a few events per call; the cursor keeps the rest. */
		while (s->out.len < max && journal_next(r->agent->journal, &s->cur, &e, &marker)) {
			if (marker) {
				r->agent->events_lost_subscribers += marker->lost_to - marker->lost_from + 1;
				sse_format(s, marker);
				event_free(marker);
			} else {
				sse_format(s, e);
			}
		}
		if (s->out.len == 0 && s->heartbeat_due)
			buf_puts(&s->out, ": keepalive\n\n");
		s->heartbeat_due = false;
		if (s->out.oom) {
			log_error("rest: out of memory serialising an event stream; closing it");
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
	}
	if (s->off < s->out.len) {
		size_t n = s->out.len - s->off;
		if (n > max)
			n = max;
		memcpy(out, s->out.data + s->off, n);
		s->off += n;
		return (ssize_t)n;
	}
	if (r->closing)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* Nothing to send: park the connection until an event or heartbeat. */
	MHD_suspend_connection(s->conn);
	s->suspended = true;
	return 0;
}

static void sse_resume(struct sse *s)
{
	if (s->suspended) {
		s->suspended = false;
		MHD_resume_connection(s->conn);
		s->rest->need_run = true;
	}
}

/* MHD does not watch a suspended connection's socket, so a client that hangs
 * up would only be noticed at the next heartbeat; this watch notices at once. */
static void sse_hup(void *arg, int fd, uint32_t events)
{
	struct sse *s = arg;
	(void)fd;
	(void)events;
	s->peer_gone = true;
	sse_resume(s);
}

/* After a reload (a new crl_file, maybe): each mTLS event stream's client
 * certificate is checked again, as a new request would be; a stream that
 * fails ends after a last comment saying why. */
static void end_revoked_streams(struct rest *r)
{
	char subject[256], why[200];
	for (struct sse *s = r->clients; s; s = s->next) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
		if (s->revoked || !ci || !ci->tls_session ||
		    tls_peer_check(ci->tls_session, r->agent->tls, subject, sizeof(subject), why, sizeof(why)) == 0)
			continue;
		log_warn("rest: event stream of %s ended: %s", s->addr, why);
		buf_printf(&s->out, ": closed: %s\n\n", why);
		s->revoked = true;
		sse_resume(s);
	}
}

static void on_event(void *arg, const struct event *e)
{
	struct rest *r = arg;
	if (e->type == EV_AGENT_CONFIG_RELOADED && r->mtls && r->agent->tls && r->agent->tls->ncrls)
		end_revoked_streams(r);
	for (struct sse *s = r->clients; s; s = s->next)
		if (!s->cur.type_mask || (s->cur.type_mask & (1ULL << e->type)))
			sse_resume(s);
}

static void heartbeat(void *arg)
{
	struct rest *r = arg;
	for (struct sse *s = r->clients; s; s = s->next) {
		s->heartbeat_due = true;
		sse_resume(s);
	}
}

/* Streams the peer at addr holds now (api.limits.max_streams_per_peer). */
static size_t peer_streams(const struct rest *r, const char *addr)
{
	size_t n = 0;
	for (const struct sse *s = r->clients; s; s = s->next)
		n += strcmp(s->addr, addr) == 0;
	return n;
}

static enum MHD_Result h_stream(struct rest *r, struct MHD_Connection *c, struct req *q)
{
	uint64_t after, mask;
	bool ok;
	enum MHD_Result ret = parse_event_query(c, true, &after, &mask, NULL, &ok);
	if (!ok)
		return ret;
	if (r->closing)
		return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "agent is shutting down");
	/* the peer's own limit first: it is the one that peer can act on */
	if (peer_streams(r, q->addr) >= r->lim.max_streams_per_peer)
		return send_error(c, MHD_HTTP_TOO_MANY_REQUESTS, API_PEER_STREAMS_FMT, q->addr,
				  r->lim.max_streams_per_peer);
	if (r->nclients >= r->max_clients)
		return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "too many event streams (max %zu)", r->max_clients);
	struct sse *s = calloc(1, sizeof(*s));
	if (!s)
		return MHD_NO;
	s->rest = r;
	s->conn = c;
	snprintf(s->addr, sizeof(s->addr), "%s", q->addr);
	buf_init(&s->out);
	journal_cursor_init(r->agent->journal, &s->cur, after, mask);
	/* An opening comment flushes the headers so curl shows the stream at once. */
	buf_puts(&s->out, ": oneshield-agent event stream\n\n");
	s->next = r->clients;
	if (r->clients)
		r->clients->prev = s;
	r->clients = s;
	r->nclients++;
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, s, sse_free);
	if (!resp) {
		sse_free(s);
		return MHD_NO;
	}
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci)
		s->hup = loop_io_add(r->agent->loop, ci->connect_fd, EPOLLRDHUP | EPOLLET, sse_hup, s);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- config management ---- */

static enum MHD_Result h_config_list(struct rest *r, struct MHD_Connection *c, struct req *q)
{
	(void)q;
	const char *bad;
	static const char *const none[] = { NULL };
	if (check_query(c, none, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\"", bad);
	int code;
	cJSON *j = cfgapply_list_json(r->agent, &code);
	if (!j)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot list the managed files");
	return send_json(c, (unsigned)code, j);
}

static enum MHD_Result h_config_file(struct rest *r, struct MHD_Connection *c, struct req *q)
{
	(void)q;
	static const char *const allowed[] = { "path", NULL };
	const char *bad;
	if (check_query(c, allowed, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\" (allowed: path)", bad);
	int code;
	cJSON *j = cfgapply_file_json(r->agent, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "path"), &code);
	return send_json(c, (unsigned)code, j);
}

static void apply_done(void *arg, cJSON *result, int code)
{
	struct rest *r = arg;
	struct req *q = r->apply_req;
	r->apply_req = NULL;
	if (!q) {
		/* the client's connection is gone; the outcome is in the log */
		cJSON_Delete(result);
		return;
	}
	q->result = result;
	q->result_code = code;
	q->waiting = false;
	MHD_resume_connection(q->conn);
	r->need_run = true;
}

static enum MHD_Result h_config_apply(struct rest *r, struct MHD_Connection *c, struct req *q)
{
	if (q->result) {
		/* resumed: the apply finished */
		cJSON *res = q->result;
		q->result = NULL;
		return send_json(c, (unsigned)q->result_code, res);
	}
	if (q->body_len > apply_body_limit(r->agent))
		return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body over %zu bytes",
				  apply_body_limit(r->agent));
	const char *bad;
	static const char *const none[] = { NULL };
	if (check_query(c, none, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\"", bad);
	if (r->closing)
		return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "agent is shutting down");
	if (json_too_deep(q->body.data, q->body.len, r->lim.max_json_depth))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "JSON nested deeper than %zu (api.limits.max_json_depth)",
				  r->lim.max_json_depth);
	char err[512];
	struct cfgapply_req *req = NULL;
	struct cfgfs_limits lim;
	cfgapply_limits(r->agent, &lim);
	int rc = cfgapply_parse_json(q->body.data ? q->body.data : "", q->body.len, &lim, &req, err, sizeof(err));
	if (rc == -ENOMEM)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	if (rc) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "status", rc == -EFBIG ? "too_large" : "malformed");
		cJSON_AddStringToObject(j, "error", err);
		cJSON_AddStringToObject(j, "message", err);
		return send_json(c, rc == -EFBIG ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST, j);
	}
	snprintf(req->peer, sizeof(req->peer), "%s", q->peer);
	if (q->cert_subject[0]) {
		size_t n = strlen(req->peer);
		snprintf(req->peer + n, sizeof(req->peer) - n, " cert:%s", q->cert_subject);
	}
	cJSON *res = NULL;
	int code = 500;
	if (cfgapply_start(r->agent->cfgapply, req, apply_done, r, &res, &code))
		return send_json(c, (unsigned)code, res);
	/* runs on in the loop: park this connection until apply_done */
	q->conn = c;
	q->waiting = true;
	r->apply_req = q;
	MHD_suspend_connection(c);
	return MHD_YES;
}

/* POST /v1/test/events?count=N&rate=R — only with ONESHIELD_TEST_EVENTS=1. */
static enum MHD_Result h_testgen(struct rest *r, struct MHD_Connection *c)
{
	static const char *const allowed[] = { "count", "rate", NULL };
	const char *bad;
	uint64_t count = 0, rate = 0;
	if (check_query(c, allowed, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\"", bad);
	const char *cs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "count");
	const char *rs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "rate");
	if (!cs || parse_u64(cs, &count) || count == 0 || count > 100000000 || (rs && parse_u64(rs, &rate)) ||
	    rate > 10000000)
		return send_error(c, MHD_HTTP_BAD_REQUEST, "count must be 1..100000000 and rate 0..10000000");
	int err = testgen_start(r->agent->loop, r->agent->journal, count, rate);
	if (err)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot start the generator: %s", strerror(-err));
	cJSON *j = cJSON_CreateObject();
	cJSON_AddNumberToObject(j, "count", (double)count);
	cJSON_AddNumberToObject(j, "rate", (double)rate);
	return send_json(c, MHD_HTTP_ACCEPTED, j);
}

/* GET /v1/probes/syscalls: the current or last investigation.
 * POST /v1/probes/syscalls {"duration_s": N}: start one (202), or 409 when
 * one runs, 400 for a bad body, 503 without eBPF or onepanel. */
static enum MHD_Result h_probes(struct rest *r, struct MHD_Connection *c, struct req *q)
{
	const char *bad;
	static const char *const none[] = { NULL };
	if (check_query(c, none, &bad))
		return send_error(c, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%.64s\"", bad);
	const char *method = q->method_post ? "POST" : "GET";
	if (strcmp(method, "POST") == 0) {
		if (q->body_len > r->lim.max_body_bytes)
			return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body over %zu bytes (api.limits.max_body_bytes)",
					  r->lim.max_body_bytes);
		if (json_too_deep(q->body.data, q->body.len, r->lim.max_json_depth))
			return send_error(c, MHD_HTTP_BAD_REQUEST, "JSON nested deeper than %zu (api.limits.max_json_depth)",
					  r->lim.max_json_depth);
		cJSON *in = cJSON_ParseWithLength(q->body.data ? q->body.data : "", q->body.len);
		cJSON *d = in ? cJSON_GetObjectItemCaseSensitive(in, "duration_s") : NULL;
		bool ok = cJSON_IsObject(in) && cJSON_IsNumber(d) && cJSON_GetArraySize(in) == 1;
		double dur = ok ? d->valuedouble : 0;
		cJSON_Delete(in);
		if (!ok)
			return send_error(c, MHD_HTTP_BAD_REQUEST,
					  "body must be a JSON object {\"duration_s\": seconds} and nothing else");
		char err[256];
		int rc = probes_start(r->agent->probes, dur, err, sizeof(err));
		if (rc) {
			unsigned code = rc == -EINVAL ? MHD_HTTP_BAD_REQUEST
				      : rc == -EBUSY  ? MHD_HTTP_CONFLICT
						      : MHD_HTTP_SERVICE_UNAVAILABLE;
			return send_error(c, code, "%s", err);
		}
		return send_json(c, MHD_HTTP_ACCEPTED, probes_json(r->agent->probes));
	}
	cJSON *j = probes_json(r->agent->probes);
	if (!j)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	return send_json(c, MHD_HTTP_OK, j);
}

/* ---- routing ---- */

struct route {
	const char *path;
	enum MHD_Result (*fn)(struct rest *, struct MHD_Connection *);
	enum MHD_Result (*fnq)(struct rest *, struct MHD_Connection *, struct req *);
	const char *method;  /* GET routes also answer HEAD */
};

static const struct route routes[] = {
	{ "/healthz", h_healthz, NULL, "GET" },
	{ "/v1/status", h_status, NULL, "GET" },
	{ "/v1/metrics", h_metrics_json, NULL, "GET" },
	{ "/metrics", h_metrics_prom, NULL, "GET" },
	{ "/v1/events", h_events, NULL, "GET" },
	{ "/v1/events/stream", NULL, h_stream, "GET" },
	{ "/v1/config", NULL, h_config_list, "GET" },
	{ "/v1/config/file", NULL, h_config_file, "GET" },
	{ "/v1/config/apply", NULL, h_config_apply, "POST" },
	{ "/v1/probes/syscalls", NULL, h_probes, "GET,POST" },
};

static const struct route *find_route(const char *url)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (strcmp(url, routes[i].path) == 0)
			return &routes[i];
	return NULL;
}

/* mTLS: the connection's client certificate, verified against
 * client_ca_file and the agent's current crl_file, before any request is
 * looked at; its subject is kept in q for the audit. On failure q is
 * marked denied and why says it. */
static bool client_cert_ok(struct rest *r, struct MHD_Connection *c, struct req *q, char *why, size_t whylen)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	snprintf(why, whylen, "no TLS session");
	if (ci && ci->tls_session &&
	    tls_peer_check(ci->tls_session, r->agent->tls, q->cert_subject, sizeof(q->cert_subject), why, whylen) == 0)
		return true;
	q->denied = true;
	log_warn("rest: request refused: %s", why);
	return false;
}

/* ---- authentication ---- */

static bool from_unix(struct rest *r, struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *di = MHD_get_connection_info(c, MHD_CONNECTION_INFO_DAEMON);
	for (size_t k = 0; di && k < r->nl; k++)
		if (r->l[k].is_unix && r->l[k].d == di->daemon)
			return true;
	return false;
}

/* Paths anyone may read: liveness, and the Prometheus scrape unless
 * api.metrics_auth (scrapers are often not given secrets). */
static bool open_path(const struct auth *au, const char *url)
{
	return strcmp(url, "/healthz") == 0 || (strcmp(url, "/metrics") == 0 && !au->metrics_auth);
}

/* Who is asking, decided once per request from its headers (before any
 * body is read): q->peer, q->addr and q->auth. A hook for TLS (issue 8 §2): with
 * client certificates, a verified certificate's subject becomes the
 * identity here ("cert:<subject>"), before the token is looked at. */
static void rest_identify(struct rest *r, struct MHD_Connection *c, const char *url, const char *method,
			  struct req *q)
{
	struct auth *au = r->agent->auth;
	q->auth = AUTH_OK;
	if (from_unix(r, c)) {
		snprintf(q->addr, sizeof(q->addr), "unix");
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		unsigned uid;
		if (ci && auth_peer_uid(ci->connect_fd, &uid) == 0)
			snprintf(q->peer, sizeof(q->peer), "rest:unix uid:%u", uid);
		else
			snprintf(q->peer, sizeof(q->peer), "rest:unix uid:?");
		return;
	}
	snprintf(q->addr, sizeof(q->addr), "unknown");
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr) {
		const struct sockaddr *sa = ci->client_addr;
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, q->addr, sizeof(q->addr));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, q->addr, sizeof(q->addr));
	}
	snprintf(q->peer, sizeof(q->peer), "rest:%s", q->addr);
	auth_peer_key(q->addr, sizeof(q->addr)); /* logs keep the address, limits the key */
	if (!au || !au->enabled || open_path(au, url))
		return;
	char who[32];
	const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	q->auth = auth_request(au, "rest", q->addr, method, url, hdr, who, sizeof(who), &q->retry_ms);
	if (q->auth == AUTH_OK) {
		size_t n = strlen(q->peer);
		snprintf(q->peer + n, sizeof(q->peer) - n, " %s", who);
	}
}

static bool has_body(struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
	       (cl && strcmp(cl, "0") != 0);
}

/* 401 with a WWW-Authenticate challenge (RFC 6750), or 429 with
 * Retry-After while the peer backs off. */
static enum MHD_Result send_refusal(struct MHD_Connection *c, const struct req *q)
{
	cJSON *j = cJSON_CreateObject();
	if (q->auth == AUTH_THROTTLED) {
		char secs[24];
		snprintf(secs, sizeof(secs), "%llu", (unsigned long long)((q->retry_ms + 999) / 1000));
		cJSON_AddStringToObject(j, "error", "too many failed authentication attempts; retry later");
		cJSON_AddNumberToObject(j, "status", MHD_HTTP_TOO_MANY_REQUESTS);
		cJSON_AddNumberToObject(j, "retry_after_ms", (double)q->retry_ms);
		return send_json_hdr(c, MHD_HTTP_TOO_MANY_REQUESTS, j, MHD_HTTP_HEADER_RETRY_AFTER, secs);
	}
	char msg[160];
	snprintf(msg, sizeof(msg), "authentication required: %s (send \"Authorization: Bearer <token>\")",
		 auth_result_str(q->auth));
	cJSON_AddStringToObject(j, "error", msg);
	cJSON_AddNumberToObject(j, "status", MHD_HTTP_UNAUTHORIZED);
	return send_json_hdr(c, MHD_HTTP_UNAUTHORIZED, j, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
			     q->auth == AUTH_WRONG ? "Bearer realm=\"oneshield-agent\", error=\"invalid_token\""
						   : "Bearer realm=\"oneshield-agent\"");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct rest *r = cls;
	struct req *q = *con_cls;
	(void)version;
	if (!q) {
		/* First call: headers only. Answering now would close a
		 * keep-alive connection, so answer on the next call. */
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		buf_init(&q->body);
		*con_cls = q;
		char why[256];
		if (r->mtls && !from_unix(r, c) && !client_cert_ok(r, c, q, why, sizeof(why)))
			return send_error(c, MHD_HTTP_FORBIDDEN, "%s", why);
		const struct route *rt = find_route(url);
		q->method_post = strcmp(method, "POST") == 0;
		MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &q->hdr_bytes);
		rest_identify(r, c, url, method, q);
		/* a refused request's body is never kept (nor read: below) */
		q->keep_body = rt && (rt->fnq == h_config_apply || rt->fnq == h_probes) && q->method_post &&
			       q->auth == AUTH_OK;
		*con_cls = q;
		/* Refused with a body to come: answer now, before any of it is
		 * read (no "100 Continue"; MHD closes the connection after the
		 * answer) rather than read a stranger's upload to its end. */
		if (q->auth != AUTH_OK && has_body(c))
			return send_refusal(c, q);
		return MHD_YES;
	}
	if (q->denied) {
		*upload_size = 0;
		return MHD_YES;
	}
	bool is_probes = strcmp(url, "/v1/probes/syscalls") == 0;
	if (*upload_size) {
		size_t limit = q->keep_body && !is_probes ? apply_body_limit(r->agent) : r->lim.max_body_bytes;
		if (q->body_len <= limit && q->body_len + *upload_size <= limit && q->keep_body)
			buf_append(&q->body, upload, *upload_size);
		q->body_len += *upload_size;
		*upload_size = 0;
		return MHD_YES;
	}
	if (q->auth != AUTH_OK)
		return send_refusal(c, q);
	if (q->hdr_bytes > r->lim.max_header_bytes)
		return send_error(c, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE,
				  "request headers over %zu bytes (api.limits.max_header_bytes; names and values)",
				  r->lim.max_header_bytes);
	if (!q->keep_body && q->body_len > r->lim.max_body_bytes)
		return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body over %zu bytes (api.limits.max_body_bytes)",
				  r->lim.max_body_bytes);
	if (q->body.oom)
		return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory reading the request");
	const struct route *rt = find_route(url);
	if (!rt && strcmp(url, "/v1/test/events") == 0 && testgen_enabled()) {
		if (strcmp(method, "POST") != 0)
			return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST");
		return h_testgen(r, c);
	}
	if (!rt)
		return send_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint: %.128s", url);
	bool get = strncmp(rt->method, "GET", 3) == 0;
	bool both = strcmp(rt->method, "GET,POST") == 0;
	bool allowed = strcmp(method, rt->method) == 0 ||
		       (get && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) ||
		       (both && strcmp(method, "POST") == 0);
	if (!allowed) {
		char msg[128];
		snprintf(msg, sizeof(msg), "method %.16s not allowed on %s (use %s)", method, rt->path, rt->method);
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "error", msg);
		cJSON_AddNumberToObject(j, "status", MHD_HTTP_METHOD_NOT_ALLOWED);
		return send_json_hdr(c, MHD_HTTP_METHOD_NOT_ALLOWED, j, MHD_HTTP_HEADER_ALLOW,
				     both ? "GET, HEAD, POST" : get ? "GET, HEAD" : rt->method);
	}
	return rt->fn ? rt->fn(r, c) : rt->fnq(r, c, q);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct rest *r = cls;
	struct req *q = *con_cls;
	(void)c;
	(void)toe;
	if (!q)
		return;
	if (r->apply_req == q)
		r->apply_req = NULL; /* apply_done will find nobody waiting */
	cJSON_Delete(q->result);
	buf_free(&q->body);
	free(q);
	*con_cls = NULL;
}

static void mhd_ready(void *arg, int fd, uint32_t events)
{
	struct listener *l = arg;
	(void)fd;
	(void)events;
	MHD_run(l->d);
}

/* Before the loop sleeps: libmicrohttpd may have work that no fd will signal
 * (a response it can write now, an expired connection timeout); its timeout
 * says so with 0, and then it is run here, on the loop's thread. */
static int mhd_prepare(void *arg)
{
	struct rest *r = arg;
	int best = -1; /* no daemon has a timeout */
	/* Resumed connections are picked up by the next MHD_run; nothing
	 * signals the external epoll set for them. */
	bool resumed = r->need_run;
	r->need_run = false;
	for (size_t k = 0; k < r->nl; k++) {
		struct MHD_Daemon *d = r->l[k].d;
		MHD_UNSIGNED_LONG_LONG t = 0;
		bool has = false;
		if (resumed)
			MHD_run(d);
		for (int i = 0; i < 8 && (has = MHD_get_timeout(d, &t) == MHD_YES) && t == 0; i++)
			MHD_run(d);
		if (!has)
			continue;
		if (t > 60000)
			t = 60000;
		if (best < 0 || (int)t < best)
			best = (int)t;
	}
	return best;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_debug("rest: %s", msg);
}

/* One daemon per listener, the same handler; sock_fd >= 0: a unix socket
 * we bound (MHD takes it over), else the TCP address ss. */
static int add_listener(struct rest *r, unsigned flags, const struct sockaddr_storage *ss, int sock_fd,
			size_t max_sse, const struct MHD_OptionItem *tlsopt)
{
	struct listener *l = &r->l[r->nl];
	l->rest = r;
	l->is_unix = sock_fd >= 0;
	/* MHD's own bound on a connection's memory stays above the header limit,
	 * so that an oversized request reaches the handler and gets a JSON 431 */
	size_t mem = 2 * r->lim.max_header_bytes + 32768;
	if (mem < 65536)
		mem = 65536;
	if (l->is_unix)
		l->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, r,
					MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
					MHD_OPTION_LISTEN_SOCKET, sock_fd,
					MHD_OPTION_NOTIFY_COMPLETED, completed, r,
					MHD_OPTION_CONNECTION_LIMIT, (unsigned)(max_sse + 128),
					MHD_OPTION_CONNECTION_TIMEOUT, 60u,
					MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem,
					MHD_OPTION_END);
	else
		l->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, r,
					MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
					MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)ss,
					MHD_OPTION_NOTIFY_COMPLETED, completed, r,
					MHD_OPTION_CONNECTION_LIMIT, (unsigned)(max_sse + 128),
					MHD_OPTION_CONNECTION_TIMEOUT, 60u,
					MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem,
					MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)r->lim.max_connections_per_peer,
					MHD_OPTION_LISTEN_BACKLOG_SIZE, 128u,
					MHD_OPTION_ARRAY, tlsopt,
					MHD_OPTION_END);
	if (!l->d) {
		int e = errno ? errno : EADDRINUSE;
		if (sock_fd >= 0)
			close(sock_fd); /* not taken over */
		return -e;
	}
	r->nl++;
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!di || !(l->io = loop_io_add(r->agent->loop, di->epoll_fd, EPOLLIN, mhd_ready, l)))
		return -ENOMEM;
	if (!l->is_unix) {
		const union MHD_DaemonInfo *pi = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_BIND_PORT);
		r->port = pi ? pi->port : 0;
	}
	return 0;
}

int rest_start(struct agent *a, const char *listen, const char *sock_path, unsigned sock_mode, size_t max_sse,
	       const struct tls_creds *tls, const struct api_limits *lim, struct rest **out, char *err,
	       size_t errlen)
{
	char host[128];
	uint16_t port = 0;
	*out = NULL;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (listen) {
		if (config_parse_listen(listen, host, sizeof(host), &port)) {
			snprintf(err, errlen, "invalid listen address \"%s\"", listen);
			return -EINVAL;
		}
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons(port);
		} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(port);
			flags |= MHD_USE_IPv6;
		} else {
			snprintf(err, errlen, "invalid listen host \"%s\"", host);
			return -EINVAL;
		}
	}
	struct rest *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->agent = a;
	r->max_clients = max_sse;
	r->lim = *lim;
	/* TLS, on the TCP listener (the unix socket's file mode is its
	 * credential): the PEM is copied into gnutls credentials at start; a
	 * new certificate means a new daemon (main.c's reload does that). */
	struct MHD_OptionItem tlsopt[5];
	size_t nt = 0;
	unsigned tflags = flags;
	if (tls) {
		tflags |= MHD_USE_TLS;
		tlsopt[nt++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, tls->cert_pem };
		tlsopt[nt++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, tls->key_pem };
		tlsopt[nt++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES };
		if (tls->ca_pem) {
			tlsopt[nt++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0, tls->ca_pem };
			r->mtls = true;
		}
	}
	tlsopt[nt] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
	int rc = 0;
	if (listen && (rc = add_listener(r, tflags, &ss, -1, max_sse, tlsopt))) {
		snprintf(err, errlen, "cannot listen on %s: %s", listen, strerror(-rc));
		rest_stop(r);
		return rc == -ENOMEM ? rc : -EADDRINUSE;
	}
	if (sock_path) {
		int fd = auth_unix_listen(sock_path, sock_mode, err, errlen);
		if (fd < 0) {
			rest_stop(r);
			return fd;
		}
		if (!(r->sock_path = strdup(sock_path))) {
			close(fd);
			rest_stop(r);
			return -ENOMEM;
		}
		if ((rc = add_listener(r, MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, NULL, fd,
				       max_sse, tlsopt + nt))) {
			snprintf(err, errlen, "cannot serve on %s: %s", sock_path, strerror(-rc));
			rest_stop(r);
			return rc;
		}
	}
	if (loop_add_prepare(a->loop, mhd_prepare, r) || !(r->prepare_added = true) ||
	    journal_add_listener(a->journal, on_event, r) || !(r->heartbeat = loop_timer_new(a->loop, heartbeat, r)) ||
	    loop_timer_arm(r->heartbeat, HEARTBEAT_MS, HEARTBEAT_MS)) {
		snprintf(err, errlen, "cannot attach the REST server to the core loop");
		rest_stop(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void rest_begin_shutdown(struct rest *r)
{
	if (!r)
		return;
	r->closing = true;
	for (struct sse *s = r->clients; s; s = s->next)
		sse_resume(s);
}

size_t rest_sse_clients(const struct rest *r)
{
	return r ? r->nclients : 0;
}

unsigned short rest_port(const struct rest *r)
{
	return r->port;
}

void rest_stop(struct rest *r)
{
	if (!r)
		return;
	journal_remove_listener(r->agent->journal, on_event, r);
	if (r->prepare_added)
		loop_remove_prepare(r->agent->loop, mhd_prepare, r);
	loop_timer_free(r->agent->loop, r->heartbeat);
	/* Resume parked streams so MHD can close and free them. */
	for (struct sse *s = r->clients; s; s = s->next)
		sse_resume(s);
	for (size_t k = 0; k < r->nl; k++) {
		loop_io_del(r->agent->loop, r->l[k].io);
		MHD_stop_daemon(r->l[k].d);
	}
	if (r->sock_path) {
		unlink(r->sock_path);
		free(r->sock_path);
	}
	free(r);
}

/* ---- fuzzing hook (tests/fuzz/fuzz_http.c) ---- */

int rest_add_connection(struct rest *r, int fd)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (size_t k = 0; k < r->nl; k++) {
		if (r->l[k].is_unix)
			continue;
		/* MHD owns fd from here, also when this fails */
		if (MHD_add_connection(r->l[k].d, fd, (struct sockaddr *)&sin, sizeof(sin)) != MHD_YES)
			return -ECONNREFUSED;
		r->need_run = true;
		return 0;
	}
	close(fd);
	return -ECONNREFUSED;
}
