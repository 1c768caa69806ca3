/* The One Shield client: see mgmt.h for what it does and its threads.
 *
 * A stream (struct mcall) is one ManagementPlane.Connect call. Its batches:
 *   t_send   SEND_INITIAL_METADATA + SEND_MESSAGE(hello), then one
 *            SEND_MESSAGE at a time (never two in flight)
 *   t_recv   RECV_INITIAL_METADATA + RECV_MESSAGE, then RECV_MESSAGE again
 *            after each message handled
 *   t_status RECV_STATUS_ON_CLIENT: the end of the stream, whatever ends it
 * Each batch in flight holds a reference; the mgmt holds one until t_status.
 * What to send next (pump): command results first, then, once the HelloAck
 * came, a due metrics snapshot, then the spool cursor's next item.
 *
 * Messages are assembled from already serialized parts where that saves a
 * decode and re-encode: a spooled event is stored as a serialized Event, a
 * status or result as the bytes pbconv.c makes, and the AgentMessage around
 * them is a few bytes of protobuf wire format written here (wire_*). */
#include "mgmt.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/compression.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "cfgapply.h"
#include "cfgfs.h"
#include "config.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "oneshield/agent/v1/agent.pb-c.h"
#include "oneshield/mgmt/v1/mgmt.pb-c.h"
#include "opversion.h"
#include "pbconv.h"
#include "probes.h"
#include "spool.h"
#include "tls.h"

#define METHOD "/oneshield.mgmt.v1.ManagementPlane/Connect"
#define RETRY_MIN_MS 500u
#define AUTH_RETRY_FACTOR 5u
#define AUTH_RETRY_CAP_MS 3600000u
#define MAX_SERVER_MESSAGE (16u << 20)
#define MAX_TOKEN 4096
#define SPOOL_REC_EVENT 1	/* spool record type: a serialized oneshield.agent.v1.Event */
#define MAX_RESULTS 256		/* command results waiting for a stream */

/* Read through the agent: a reload swaps a->cfg (main.c restarts the
 * client when the oneshield section changed, so what is read here never
 * changes under a stream). */
#define CFG(m) (&(m)->a->cfg->oneshield)

enum tag_kind { T_SEND, T_RECV, T_STATUS };

struct mcall;
struct tag {
	enum tag_kind kind;
	struct mcall *c;
};

struct mcall {
	struct mgmt *m;
	grpc_call *call;
	int refs;
	struct tag t_send, t_recv, t_status;
	grpc_metadata auth;
	bool have_auth;
	grpc_metadata_array md_init, md_trail;
	grpc_status_code status;
	grpc_slice details;
	grpc_byte_buffer *recv_buf;
	bool send_busy, hello_acked, ended, half_closed;
	struct spool_cursor *cur;
#ifdef ONESHIELD_FUZZ
	bool fz_recv, fz_status, fz_done;	/* a fake stream's batches waiting; its end */
#endif
};

/* A command result (a serialized AgentMessage) waiting to be sent. */
struct result {
	struct result *next;
	struct buf msg;
};

/* A config apply the server asked for, running. */
struct apply_ctx {
	struct mgmt *m;		/* NULL once the client stopped: the result is dropped */
	char *command_id;
	uint64_t started_ms;
	struct apply_ctx *next;
};

struct done {
	struct tag *tag;
	int ok;
};

enum conn_state { CS_IDLE, CS_CONNECTING, CS_CONNECTED, CS_BACKOFF, CS_STOPPED };
static const char *const state_names[] = { "idle", "connecting", "connected", "backoff", "stopped" };

struct mgmt {
	struct agent *a;
	struct spool *spool;
	char agent_id[257];
	char hostname[256];
	struct journal_cursor jcur;
	uint64_t jlost_from, jlost_to;	/* journal seqs lost before the spool, not yet spooled */
	/* The highest spool_seq the server can have: sent on a stream of this
	 * client, claimed by a HelloAck within the spool, or acked before. */
	uint64_t sent_seq;
	bool spooled;			/* appended since the last sync */

	grpc_completion_queue *cq;
	grpc_channel *ch;
	pthread_t pump;
	bool pump_started;
	int efd;
	struct loop_io *io;
	pthread_mutex_t lock;
	struct done *q;
	size_t qlen, qcap;

	struct mcall *call;
	enum conn_state state;
	bool closing, stopped, prepare_added, listening;
	struct loop_timer *retry_timer, *report_timer, *tick_timer;
	unsigned attempt;
	uint64_t report_ms;
	bool metrics_due;
	struct result *res_head, **res_tail;
	size_t nresults;
	struct apply_ctx *applies;

	/* status */
	char last_error[320];
	char last_failure[320];		/* reason of the last failed attempt already logged */
	double last_error_unix, connected_unix;
	uint64_t retry_at_ms;
	bool auth_refused;
	char server_version[128];
	/* counters */
	uint64_t connects, attempts, stream_errors, auth_failures;
	uint64_t events_sent, lost_sent, acks, metrics_sent, commands, results_dropped;
	uint64_t bytes_sent, bytes_received;
	uint64_t spool_errors, journal_lost;
#ifdef ONESHIELD_FUZZ
	mgmt_fuzz_sent_fn fz_sent;	/* set: a fuzzing client without gRPC (end of this file) */
	void *fz_arg;
#endif
};

#ifdef ONESHIELD_FUZZ
#define FAKE(m) ((m)->fz_sent != NULL)
static void fake_batch(struct mcall *c, const grpc_op *ops, size_t n, struct tag *t);
static void fake_end(struct mcall *c, grpc_status_code code, const char *why);
#else
#define FAKE(m) false
#endif

static double now_unix(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t now_unix_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void set_error(struct mgmt *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct mgmt *m, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->last_error, sizeof(m->last_error), fmt, ap);
	va_end(ap);
	m->last_error_unix = now_unix();
}

/* ---- protobuf wire format, for wrapping serialized messages ---- */

static int wire_varint(struct buf *b, uint64_t v)
{
	uint8_t t[10];
	size_t n = 0;
	do {
		t[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			t[n] |= 0x80;
		n++;
	} while (v);
	return buf_append(b, t, n);
}

/* field with wire type 2 (length-delimited) */
static int wire_bytes(struct buf *b, unsigned field, const void *p, size_t n)
{
	if (wire_varint(b, (uint64_t)field << 3 | 2) || wire_varint(b, n))
		return -ENOMEM;
	return n ? buf_append(b, p, n) : 0;
}

static int wire_uint(struct buf *b, unsigned field, uint64_t v)
{
	if (!v)
		return 0;
	return wire_varint(b, (uint64_t)field << 3) ? -ENOMEM : wire_varint(b, v);
}

static int wire_double(struct buf *b, unsigned field, double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof(u));
	if (wire_varint(b, (uint64_t)field << 3 | 1))
		return -ENOMEM;
	uint8_t t[8];
	for (int i = 0; i < 8; i++)
		t[i] = (uint8_t)(u >> (8 * i));
	return buf_append(b, t, 8);
}

/* ---- the completion queue's thread ---- */

/* A batch completed: hand it to the core loop (drain). */
static void complete(struct mgmt *m, struct tag *t, int ok)
{
	pthread_mutex_lock(&m->lock);
	if (m->qlen == m->qcap) {
		size_t cap = m->qcap ? m->qcap * 2 : 16;
		struct done *q = realloc(m->q, cap * sizeof(*q));
		if (!q) {
			/* cannot happen in practice; losing a completion would leak a call */
			pthread_mutex_unlock(&m->lock);
			abort();
		}
		m->q = q;
		m->qcap = cap;
	}
	m->q[m->qlen++] = (struct done){ t, ok };
	pthread_mutex_unlock(&m->lock);
	uint64_t one = 1;
	ssize_t r = write(m->efd, &one, sizeof(one));
	(void)r;
}

static void *pump(void *arg)
{
	struct mgmt *m = arg;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(m->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE)
			complete(m, ev.tag, ev.success);
	}
	return NULL;
}

/* ---- streams ---- */

static void dispatch(struct mgmt *m, struct tag *t, int ok);
static void schedule_retry(struct mgmt *m, bool auth);
static void pump_send(struct mgmt *m);

static void call_free(struct mcall *c)
{
	grpc_metadata_array_destroy(&c->md_init);
	grpc_metadata_array_destroy(&c->md_trail);
	grpc_slice_unref(c->details);
	if (c->have_auth) {
		grpc_slice_unref(c->auth.key);
		grpc_slice_unref(c->auth.value);
	}
	if (c->recv_buf)
		grpc_byte_buffer_destroy(c->recv_buf);
	spool_cursor_close(c->cur);
	if (c->call)
		grpc_call_unref(c->call);
	free(c);
}

static void unref(struct mcall *c)
{
	if (--c->refs == 0)
		call_free(c);
}

static bool batch(struct mcall *c, const grpc_op *ops, size_t n, struct tag *t)
{
	c->refs++;
#ifdef ONESHIELD_FUZZ
	if (FAKE(c->m)) {
		fake_batch(c, ops, n, t);
		return true;
	}
#endif
	if (grpc_call_start_batch(c->call, ops, n, t, NULL) != GRPC_CALL_OK) {
		c->refs--;
		return false;
	}
	return true;
}

/* compress: metrics reports and command results (large, repetitive);
 * events and hello go as they are (small: gzip would only cost CPU). */
static bool send_msg(struct mcall *c, const struct buf *b, bool with_md, bool compress)
{
	grpc_slice s = grpc_slice_from_copied_buffer(b->data, b->len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	grpc_op ops[2];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	if (with_md) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		ops[n].data.send_initial_metadata.count = c->have_auth ? 1 : 0;
		ops[n].data.send_initial_metadata.metadata = c->have_auth ? &c->auth : NULL;
		n++;
	}
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n].flags = compress ? 0 : GRPC_WRITE_NO_COMPRESS;
	ops[n].data.send_message.send_message = bb;
	n++;
	bool ok = batch(c, ops, n, &c->t_send);
	grpc_byte_buffer_destroy(bb); /* the batch holds its own reference */
	if (ok) {
		c->send_busy = true;
		c->m->bytes_sent += b->len;
	}
	return ok;
}

static bool start_recv(struct mcall *c, bool first)
{
	grpc_op ops[2];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	if (first) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->md_init;
		n++;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n].data.recv_message.recv_message = &c->recv_buf;
	n++;
	return batch(c, ops, n, &c->t_recv);
}

/* A stream that misbehaved or failed: end it; t_status says the rest. */
static void call_abort(struct mcall *c, grpc_status_code code, const char *why)
{
	if (c->ended)
		return;
	c->ended = true;
#ifdef ONESHIELD_FUZZ
	if (FAKE(c->m)) {
		fake_end(c, code, why);
		return;
	}
#endif
	grpc_call_cancel_with_status(c->call, code, why, NULL);
}

/* The token: the file's first line, without trailing whitespace. Refused if
 * group or others may read it (it is a credential), empty or too long. */
static int read_token(const char *path, char *tok, size_t toklen, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
		return -errno;
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "token file %s: not a regular file", path);
		rc = -EINVAL;
	} else if (st.st_mode & 077) {
		snprintf(err, errlen, "token file %s: mode %04o lets others read it; chmod 600", path,
			 (unsigned)(st.st_mode & 07777));
		rc = -EPERM;
	}
	ssize_t n = rc ? 0 : read(fd, tok, toklen - 1);
	close(fd);
	if (rc)
		return rc;
	if (n < 0) {
		snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
		return -EIO;
	}
	tok[n] = '\0';
	tok[strcspn(tok, "\r\n")] = '\0';
	size_t l = strlen(tok);
	while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
		tok[--l] = '\0';
	if (!l || (size_t)n == toklen - 1) {
		snprintf(err, errlen, "token file %s: %s", path, l ? "token too long" : "empty");
		return -EINVAL;
	}
	for (size_t i = 0; i < l; i++) {
		if ((unsigned char)tok[i] < 0x21 || (unsigned char)tok[i] > 0x7e) {
			snprintf(err, errlen, "token file %s: the token must be printable ASCII", path);
			return -EINVAL;
		}
	}
	return 0;
}

static int hello_message(struct mgmt *m, struct buf *out)
{
	struct buf sb;
	buf_init(&sb);
	Oneshield__Agent__V1__Status *st = NULL;
	if (!pb_status(m->a, &sb))
		st = oneshield__agent__v1__status__unpack(NULL, sb.len, (const uint8_t *)sb.data);
	buf_free(&sb);
	struct utsname u;
	if (uname(&u))
		memset(&u, 0, sizeof(u));
	if (gethostname(m->hostname, sizeof(m->hostname) - 1))
		m->hostname[0] = '\0';
	struct spool_stats ss;
	spool_stats(m->spool, &ss);

	Oneshield__Mgmt__V1__Hello h = ONESHIELD__MGMT__V1__HELLO__INIT;
	h.agent_id = m->agent_id;
	h.hostname = m->hostname;
	h.agent_version = (char *)OS_VERSION;
	h.kernel_release = u.release;
	h.arch = u.machine;
	h.mode = (char *)(m->a->mode ? m->a->mode : "");
	h.mode_reason = st && st->mode_reason ? st->mode_reason : (char *)"";
	h.onepanel = st ? st->onepanel : NULL;
	h.onepanel_version = (char *)opversion_get(m->a->opversion);
	size_t nl = CFG(m)->nlabels;
	Oneshield__Mgmt__V1__Hello__LabelsEntry *le = nl ? calloc(nl, sizeof(*le)) : NULL;
	Oneshield__Mgmt__V1__Hello__LabelsEntry **lp = nl ? calloc(nl, sizeof(*lp)) : NULL;
	char **keys = nl ? calloc(nl, sizeof(*keys)) : NULL;
	int rc = 0;
	if (nl && (!le || !lp || !keys))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < nl; i++) {
		const char *l = CFG(m)->labels[i], *eq = strchr(l, '=');
		oneshield__mgmt__v1__hello__labels_entry__init(&le[i]);
		if (!(keys[i] = strndup(l, (size_t)(eq - l)))) {
			rc = -ENOMEM;
			break;
		}
		le[i].key = keys[i];
		le[i].value = (char *)eq + 1;
		lp[i] = &le[i];
	}
	h.n_labels = rc ? 0 : nl;
	h.labels = lp;
	h.spool_id = (char *)spool_id(m->spool);
	h.last_acked_spool_seq = ss.acked_seq;
	h.last_spool_seq = ss.next_seq - 1;
	h.started_unix_nano = (int64_t)(m->a->started_unix * 1e9);
	h.time_unix_nano = now_unix_ns();
	Oneshield__Mgmt__V1__AgentMessage am = ONESHIELD__MGMT__V1__AGENT_MESSAGE__INIT;
	am.kind_case = ONESHIELD__MGMT__V1__AGENT_MESSAGE__KIND_HELLO;
	am.hello = &h;
	if (!rc) {
		size_t len = oneshield__mgmt__v1__agent_message__get_packed_size(&am);
		rc = buf_reserve(out, len);
		if (!rc) {
			oneshield__mgmt__v1__agent_message__pack(&am, (uint8_t *)out->data + out->len);
			out->len += len;
		}
	}
	for (size_t i = 0; keys && i < nl; i++)
		free(keys[i]);
	free(keys);
	free(lp);
	free(le);
	if (st)
		oneshield__agent__v1__status__free_unpacked(st, NULL);
	return rc;
}

/* Plaintext, or TLS verified against oneshield.tls.ca_file (the system's
 * roots without one), with a client certificate when configured. The PEM
 * files are read at every attempt, like the token: renewed certificates
 * need no reload. NULL with err filled when a file is unusable. */
static grpc_channel_credentials *channel_creds(struct mgmt *m, char *err, size_t errlen)
{
	const struct oneshield_tls_config *t = &CFG(m)->tls;
	if (!t->enabled)
		return grpc_insecure_credentials_create();
	char *ca = NULL, *cert = NULL, *key = NULL;
	grpc_channel_credentials *c = NULL;
	if ((!t->ca_file || !tls_read_pem(t->ca_file, false, &ca, err, errlen)) &&
	    (!t->cert_file || (!tls_read_pem(t->cert_file, false, &cert, err, errlen) &&
			       !tls_read_pem(t->key_file, true, &key, err, errlen)))) {
		grpc_ssl_pem_key_cert_pair kp = { .private_key = key, .cert_chain = cert };
		c = grpc_ssl_credentials_create(ca, cert ? &kp : NULL, NULL, NULL);
		if (!c)
			snprintf(err, errlen, "cannot set up TLS credentials");
	}
	if (key)
		explicit_bzero(key, strlen(key));
	free(key);
	free(cert);
	free(ca);
	return c;
}

static grpc_channel *make_channel(struct mgmt *m, grpc_channel_credentials *creds)
{
	const char *addr = CFG(m)->address;
	int maxb = (int)(CFG(m)->retry_max_ms > INT32_MAX ? INT32_MAX : CFG(m)->retry_max_ms);
	grpc_arg args[] = {
		/* this channel's own subchannels: a new attempt really reconnects */
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1 },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
		  .value.integer = (int)MAX_SERVER_MESSAGE },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
		  .value.integer = (int)RETRY_MIN_MS < maxb ? (int)RETRY_MIN_MS : maxb },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = maxb },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_RETRIES, .value.integer = 0 },
		/* a metrics report is ~16 KB of repetitive protobuf; gzip takes it to a few KB */
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM,
		  .value.integer = GRPC_COMPRESS_GZIP },
		{ .type = GRPC_ARG_STRING, .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
		  .value.string = (char *)"oneshield-agent/" OS_VERSION },
		/* A server or network that vanishes without a reset (power cut, a
		 * NAT or firewall forgetting the flow) leaves the stream looking up
		 * for as long as TCP retransmits, or forever while nothing is sent.
		 * PINGs find it: unanswered within the timeout, the transport is
		 * closed and the call ends UNAVAILABLE. They go on an idle
		 * connection and without a limit on pings between data frames;
		 * the server must permit that rate (the reference server does). */
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS,
		  .value.integer = (int)CFG(m)->keepalive_time_ms },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
		  .value.integer = (int)CFG(m)->keepalive_timeout_ms },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, .value.integer = 1 },
		{ .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, .value.integer = 0 },
		/* last: only with TLS and a configured name */
		{ .type = GRPC_ARG_STRING, .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
		  .value.string = CFG(m)->tls.server_name },
	};
	size_t n = sizeof(args) / sizeof(args[0]);
	if (!CFG(m)->tls.enabled || !CFG(m)->tls.server_name)
		n--;
	grpc_channel_args cargs = { .num_args = n, .args = args };
	return grpc_channel_create(addr, creds, &cargs);
}

/* The network half of an attempt: token, credentials, a new channel and
 * the call on it. -1 when it could not be made, logged and a retry
 * scheduled. */
static int open_call(struct mgmt *m, struct mcall *c)
{
	char err[320], tok[MAX_TOKEN + 1];
	if (CFG(m)->token_file) {
		if (read_token(CFG(m)->token_file, tok, sizeof(tok), err, sizeof(err))) {
			log_error("oneshield: %s", err);
			set_error(m, "%s", err);
			schedule_retry(m, true);
			return -1;
		}
		char hv[MAX_TOKEN + 16];
		snprintf(hv, sizeof(hv), "Bearer %s", tok);
		c->auth.key = grpc_slice_from_static_string("authorization");
		c->auth.value = grpc_slice_from_copied_string(hv);
		c->have_auth = true;
		explicit_bzero(hv, sizeof(hv));
		explicit_bzero(tok, sizeof(tok));
	}
	grpc_channel_credentials *creds = channel_creds(m, err, sizeof(err));
	if (!creds) {
		log_error("oneshield: TLS: %s", err);
		set_error(m, "TLS: %s", err);
		schedule_retry(m, true);
		return -1;
	}
	if (m->ch)
		grpc_channel_destroy(m->ch);
	m->ch = make_channel(m, creds);
	grpc_channel_credentials_release(creds);
	grpc_slice method = grpc_slice_from_static_string(METHOD);
	c->call = grpc_channel_create_call(m->ch, NULL, GRPC_PROPAGATE_DEFAULTS, m->cq, method, NULL,
					   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return 0;
}

static void connect_now(struct mgmt *m)
{
	if (m->closing || m->stopped || m->call)
		return;
	m->attempts++;
	m->state = CS_CONNECTING;
	struct mcall *c = calloc(1, sizeof(*c));
	if (!c) {
		set_error(m, "out of memory");
		schedule_retry(m, false);
		return;
	}
	c->m = m;
	c->t_send = (struct tag){ T_SEND, c };
	c->t_recv = (struct tag){ T_RECV, c };
	c->t_status = (struct tag){ T_STATUS, c };
	c->details = grpc_empty_slice();
	grpc_metadata_array_init(&c->md_init);
	grpc_metadata_array_init(&c->md_trail);
	/* a fuzzing client's stream has no call: its batches are fakes */
	if (!FAKE(m) && open_call(m, c)) {
		call_free(c);
		return;
	}
	struct buf hb;
	buf_init(&hb);
	c->refs = 1; /* the mgmt's, until t_status */
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	op.data.recv_status_on_client.trailing_metadata = &c->md_trail;
	op.data.recv_status_on_client.status = &c->status;
	op.data.recv_status_on_client.status_details = &c->details;
	if ((!c->call && !FAKE(m)) || hello_message(m, &hb) || !batch(c, &op, 1, &c->t_status)) {
		set_error(m, "cannot start a call to %s", CFG(m)->address);
		buf_free(&hb);
		call_free(c);
		schedule_retry(m, false);
		return;
	}
	m->call = c;
	if (!send_msg(c, &hb, true, false) || !start_recv(c, true))
		call_abort(c, GRPC_STATUS_INTERNAL, "cannot start the stream's batches");
	buf_free(&hb);
	log_debug("oneshield: connecting to %s", CFG(m)->address);
}

static void retry_fire(void *arg)
{
	connect_now(arg);
}

/* Equal jitter: a uniform wait in [d/2, d], d doubling from RETRY_MIN_MS to
 * retry_max (or AUTH_RETRY_FACTOR times that after a refused token). */
static void schedule_retry(struct mgmt *m, bool auth)
{
	if (m->closing || m->stopped)
		return;
	uint64_t max = CFG(m)->retry_max_ms, d = RETRY_MIN_MS;
	if (auth) {
		d = max * AUTH_RETRY_FACTOR;
		if (d > AUTH_RETRY_CAP_MS)
			d = AUTH_RETRY_CAP_MS;
	} else {
		for (unsigned i = 0; i < m->attempt && d < max; i++)
			d *= 2;
		if (d > max)
			d = max;
		m->attempt++;
	}
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)loop_now_ms() * 2654435761u;
	uint64_t wait = d / 2 + (d - d / 2) * (uint64_t)r / UINT32_MAX;
	if (!wait)
		wait = 1;
	m->state = CS_BACKOFF;
	m->retry_at_ms = loop_now_ms() + wait;
	loop_timer_arm(m->retry_timer, wait, 0);
}

static void on_status(struct mcall *c)
{
	struct mgmt *m = c->m;
	bool was_connected = c->hello_acked;
	c->ended = true;
	if (m->call == c)
		m->call = NULL;
	char *det = grpc_slice_to_c_string(c->details);
	bool auth = c->status == GRPC_STATUS_UNAUTHENTICATED || c->status == GRPC_STATUS_PERMISSION_DENIED;
	/* Ends the status alone does not explain. A PING unanswered within
	 * keepalive_timeout (core 1.51 says "keepalive watchdog timeout", later
	 * ones "keepalive timeout"): the connection died without a reset. A
	 * GOAWAY too_many_pings: the server's ping policy refuses our rate. */
	char why[200] = "";
	if (c->status == GRPC_STATUS_UNAVAILABLE && det && strcasestr(det, "too many pings"))
		snprintf(why, sizeof(why),
			 "the server refuses a PING every %llu ms (too_many_pings): raise oneshield.keepalive_time "
			 "or let the server permit it",
			 (unsigned long long)CFG(m)->keepalive_time_ms);
	else if (c->status == GRPC_STATUS_UNAVAILABLE && det && strstr(det, "keepalive"))
		snprintf(why, sizeof(why),
			 "keepalive timed out (no PING ack within %llu ms: the server or the network is gone)",
			 (unsigned long long)CFG(m)->keepalive_timeout_ms);
	if (!m->stopped) {
		if (auth) {
			m->auth_failures++;
			m->auth_refused = true;
			log_error("oneshield: %s refused this agent's token (%s: %s); retrying in about %llu s", CFG(m)->address,
				  c->status == GRPC_STATUS_UNAUTHENTICATED ? "UNAUTHENTICATED" : "PERMISSION_DENIED",
				  det ? det : "", (unsigned long long)(CFG(m)->retry_max_ms * AUTH_RETRY_FACTOR / 1000));
		} else if (c->status != GRPC_STATUS_OK || !m->closing) {
			m->stream_errors++;
			if (was_connected && why[0])
				log_warn("oneshield: stream to %s ended: %s; reconnecting", CFG(m)->address, why);
			else if (was_connected)
				log_warn("oneshield: stream to %s ended (status %d: %s)", CFG(m)->address, (int)c->status,
					 det ? det : "");
			else if (strcmp(m->last_failure, det ? det : ""))
				/* once per distinct reason: a server down for an hour is one line */
				log_warn("oneshield: cannot connect to %s (status %d: %s); retrying", CFG(m)->address,
					 (int)c->status, det ? det : "");
		}
		if (why[0])
			set_error(m, "%s (status %d: %s)", why, (int)c->status, det);
		else
			set_error(m, "status %d: %s", (int)c->status, det ? det : "");
		snprintf(m->last_failure, sizeof(m->last_failure), "%s", was_connected ? "" : det ? det : "");
	}
	gpr_free(det);
	if (!m->stopped && !m->closing)
		schedule_retry(m, auth);
	else if (!m->stopped)
		m->state = CS_IDLE;
	unref(c);
}

/* ---- commands ---- */

/* AgentMessage{command_result: CommandResult{...}}, payload already
 * serialized (field number pfield, 0 for none). */
static void queue_result(struct mgmt *m, const char *id, int code, const char *msg, double ms, unsigned pfield,
			 const struct buf *payload)
{
	struct buf r;
	buf_init(&r);
	int rc = wire_bytes(&r, 1, id, strlen(id));
	if (!rc && code)
		rc = wire_uint(&r, 2, (uint64_t)(uint32_t)code);
	if (!rc && msg && *msg)
		rc = wire_bytes(&r, 3, msg, strlen(msg));
	if (!rc)
		rc = wire_double(&r, 4, ms);
	if (!rc && pfield)
		rc = wire_bytes(&r, pfield, payload->data, payload->len);
	struct result *res = rc ? NULL : calloc(1, sizeof(*res));
	if (res) {
		buf_init(&res->msg);
		rc = wire_bytes(&res->msg, 5, r.data, r.len);
	}
	buf_free(&r);
	if (!res || rc || m->nresults >= MAX_RESULTS) {
		/* The server sees the command unanswered and may ask again. */
		m->results_dropped++;
		if (res)
			buf_free(&res->msg);
		free(res);
		log_warn("oneshield: result of command %s dropped (%s)", id, rc ? "out of memory" : "too many waiting");
		return;
	}
	*m->res_tail = res;
	m->res_tail = &res->next;
	m->nresults++;
	pump_send(m);
}

static void apply_done(void *arg, cJSON *res, int http)
{
	struct apply_ctx *x = arg;
	struct mgmt *m = x->m;
	if (m) {
		struct buf b;
		buf_init(&b);
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(res, "message");
		int code = pb_code_from_http(http);
		if (!res || pb_apply_result(res, &b))
			queue_result(m, x->command_id, 13, "cannot encode the apply result",
				     (double)(loop_now_ms() - x->started_ms), 0, NULL);
		else
			queue_result(m, x->command_id, code,
				     code ? (cJSON_IsString(msg) ? msg->valuestring : "config apply failed") : NULL,
				     (double)(loop_now_ms() - x->started_ms), 10, &b);
		buf_free(&b);
		for (struct apply_ctx **pp = &m->applies; *pp; pp = &(*pp)->next) {
			if (*pp == x) {
				*pp = x->next;
				break;
			}
		}
	}
	cJSON_Delete(res);
	free(x->command_id);
	free(x);
}

static void cmd_apply(struct mgmt *m, const char *id, const Oneshield__Agent__V1__ApplyConfigRequest *req,
		      uint64_t t0)
{
	char peer[96], err[512];
	snprintf(peer, sizeof(peer), "oneshield:%.80s", CFG(m)->address);
	struct cfgapply_req *ar = NULL;
	struct cfgfs_limits lim;
	int rc;
	if (pb_apply_request(req, peer, &ar)) {
		queue_result(m, id, 8, "agent out of memory", 0, 0, NULL);
		return;
	}
	cfgapply_limits(m->a, &lim);
	if ((rc = cfgapply_req_check(ar, &lim, err, sizeof(err)))) {
		cfgapply_req_free(ar);
		queue_result(m, id, rc == -EFBIG ? 8 : 3, err, (double)(loop_now_ms() - t0), 0, NULL);
		return;
	}
	struct apply_ctx *x = calloc(1, sizeof(*x));
	if (!x || !(x->command_id = strdup(id))) {
		free(x);
		cfgapply_req_free(ar);
		queue_result(m, id, 8, "agent out of memory", 0, 0, NULL);
		return;
	}
	x->m = m;
	x->started_ms = t0;
	x->next = m->applies;
	m->applies = x;
	cJSON *res = NULL;
	int http = 500;
	if (cfgapply_start(m->a->cfgapply, ar, apply_done, x, &res, &http))
		apply_done(x, res, http); /* refused at once (busy, ...): answered the same way */
}

static void handle_command(struct mgmt *m, const Oneshield__Mgmt__V1__ServerMessage *sm)
{
	const char *id = sm->command_id;
	uint64_t t0 = loop_now_ms();
	struct buf b;
	buf_init(&b);
	cJSON *j = NULL;
	int http = 500;
	m->commands++;
	if (m->closing) {
		/* The agent is stopping: nothing new starts (an apply would be
		 * cut short by the exit), and the refusal goes out while the
		 * stream is still open for sending. */
		log_info("oneshield: command %s not run: the agent is stopping", id);
		queue_result(m, id, 14, "the agent is stopping", 0, 0, NULL);
		return;
	}
	switch (sm->kind_case) {
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_PING:
		queue_result(m, id, 0, NULL, 0, 0, NULL);
		break;
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_GET_STATUS:
		if (pb_status(m->a, &b))
			queue_result(m, id, 8, "agent out of memory", 0, 0, NULL);
		else
			queue_result(m, id, 0, NULL, (double)(loop_now_ms() - t0), 13, &b);
		break;
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_GET_CONFIG:
		j = cfgapply_list_json(m->a, &http);
		if (!j || pb_config_listing(j, &b))
			queue_result(m, id, 13, "cannot list the managed files", 0, 0, NULL);
		else
			queue_result(m, id, 0, NULL, (double)(loop_now_ms() - t0), 11, &b);
		break;
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_GET_CONFIG_FILE: {
		const char *path = sm->get_config_file && *sm->get_config_file->path ? sm->get_config_file->path : NULL;
		j = cfgapply_file_json(m->a, path, &http);
		if (http != 200) {
			const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
			queue_result(m, id, pb_code_from_http(http),
				     cJSON_IsString(e) ? e->valuestring : "cannot read the file", 0, 0, NULL);
		} else if (pb_config_file(j, &b)) {
			queue_result(m, id, 13, "cannot encode the file", 0, 0, NULL);
		} else {
			queue_result(m, id, 0, NULL, (double)(loop_now_ms() - t0), 12, &b);
		}
		break;
	}
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_APPLY_CONFIG:
		cmd_apply(m, id, sm->apply_config, t0);
		break;
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_START_SYSCALL_INVESTIGATION:
	case ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_GET_SYSCALL_INVESTIGATION: {
		struct probes *p = m->a->probes;
		char err[256] = "";
		int rc = 0;
		if (!p) {
			queue_result(m, id, 14, "syscall investigations are not set up", 0, 0, NULL);
			break;
		}
		if (sm->kind_case == ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_START_SYSCALL_INVESTIGATION)
			rc = probes_start(p, sm->start_syscall_investigation->duration_s, err, sizeof(err));
		if (rc) {
			queue_result(m, id, pb_code_from_probes(rc), err[0] ? err : "cannot start the investigation",
				     0, 0, NULL);
			break;
		}
		j = probes_json(p);
		if (!j || pb_syscall_investigation(j, &b))
			queue_result(m, id, 8, "agent out of memory", 0, 0, NULL);
		else
			queue_result(m, id, 0, NULL, (double)(loop_now_ms() - t0), 14, &b);
		break;
	}
	default:
		queue_result(m, id, 12, "this agent does not know that command", 0, 0, NULL);
		break;
	}
	cJSON_Delete(j);
	buf_free(&b);
}

/* ---- receiving ---- */

static void on_hello_ack(struct mgmt *m, struct mcall *c, const Oneshield__Mgmt__V1__HelloAck *ha)
{
	if (c->hello_acked) {
		call_abort(c, GRPC_STATUS_INVALID_ARGUMENT, "a second hello_ack");
		set_error(m, "the server sent a second hello_ack");
		return;
	}
	int rc = spool_ack(m->spool, ha->resume_after_spool_seq);
	struct spool_stats ss;
	spool_stats(m->spool, &ss);
	if (rc == -ERANGE) {
		/* The server speaks of seqs this spool never handed out: another
		 * spool's record. Send ours from the start; it will sort them out
		 * by spool_id. */
		log_warn("oneshield: %s says it has events up to %llu of this agent, beyond this spool's %llu",
			 CFG(m)->address, (unsigned long long)ha->resume_after_spool_seq,
			 (unsigned long long)(ss.next_seq - 1));
	}
	uint64_t after = ha->resume_after_spool_seq > ss.acked_seq && rc != -ERANGE ? ha->resume_after_spool_seq : 0;
	if (ss.acked_seq > m->sent_seq)
		m->sent_seq = ss.acked_seq; /* what the server claims to have: later Acks may cover it */
	if (spool_cursor_open(m->spool, after, &c->cur)) {
		call_abort(c, GRPC_STATUS_INTERNAL, "cannot read the spool");
		set_error(m, "cannot read the spool: %s", spool_error(m->spool));
		return;
	}
	c->hello_acked = true;
	m->state = CS_CONNECTED;
	m->connects++;
	m->attempt = 0;
	m->auth_refused = false;
	m->connected_unix = now_unix();
	snprintf(m->server_version, sizeof(m->server_version), "%s", ha->server_version ? ha->server_version : "");
	uint64_t rep = ha->report_interval_ms ? ha->report_interval_ms : CFG(m)->report_interval_ms;
	if (rep < 1000)
		rep = 1000;
	m->report_ms = rep;
	loop_timer_arm(m->report_timer, rep, rep);
	m->metrics_due = true;
	log_info("oneshield: connected to %s (%s); %llu spooled events to send", CFG(m)->address,
		 m->server_version[0] ? m->server_version : "server", (unsigned long long)ss.records);
}

static void handle_server_message(struct mgmt *m, struct mcall *c, const uint8_t *data, size_t len)
{
	Oneshield__Mgmt__V1__ServerMessage *sm = oneshield__mgmt__v1__server_message__unpack(NULL, len, data);
	if (!sm) {
		log_warn("oneshield: %s sent a message that is no ServerMessage (%zu bytes); reconnecting",
			 CFG(m)->address, len);
		set_error(m, "malformed ServerMessage (%zu bytes)", len);
		call_abort(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed ServerMessage");
		return;
	}
	bool is_cmd = sm->command_id && *sm->command_id;
	if (!c->hello_acked && sm->kind_case != ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_HELLO_ACK) {
		log_warn("oneshield: %s did not answer hello with hello_ack; reconnecting", CFG(m)->address);
		set_error(m, "the first ServerMessage was not hello_ack");
		call_abort(c, GRPC_STATUS_FAILED_PRECONDITION, "expected hello_ack");
	} else if (sm->kind_case == ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_HELLO_ACK) {
		on_hello_ack(m, c, sm->hello_ack);
	} else if (sm->kind_case == ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_ACK) {
		uint64_t seq = sm->ack->spool_seq;
		struct spool_stats ss;
		int rc = 0;
		m->acks++;
		spool_stats(m->spool, &ss);
		if (seq >= ss.next_seq) {
			rc = -ERANGE;
		} else if (seq > m->sent_seq) {
			/* Spooled but not sent yet (a server that acks ahead, or by
			 * another spool's record): forgetting them would lose events
			 * nobody received. Taken up to what was sent; the rest goes
			 * out, and a resent seq is a duplicate the server drops. */
			log_debug("oneshield: ack of %llu taken up to %llu, the last sent", (unsigned long long)seq,
				  (unsigned long long)m->sent_seq);
			seq = m->sent_seq;
		}
		if (!rc)
			rc = spool_ack(m->spool, seq);
		if (rc == -ERANGE) {
			log_warn("oneshield: %s acknowledged %llu, which this agent never sent; reconnecting",
				 CFG(m)->address, (unsigned long long)sm->ack->spool_seq);
			set_error(m, "ack of unsent spool_seq %llu", (unsigned long long)sm->ack->spool_seq);
			call_abort(c, GRPC_STATUS_INVALID_ARGUMENT, "ack beyond what was sent");
		} else if (rc) {
			set_error(m, "spool: %s", spool_error(m->spool));
		}
	} else if (is_cmd) {
		handle_command(m, sm);
	} else {
		log_debug("oneshield: ignoring a server message of kind %d without command_id", (int)sm->kind_case);
	}
	oneshield__mgmt__v1__server_message__free_unpacked(sm, NULL);
}

static void on_recv(struct mcall *c, int ok)
{
	struct mgmt *m = c->m;
	grpc_byte_buffer *bb = c->recv_buf;
	c->recv_buf = NULL;
	if (!ok || !bb || c->ended || m->stopped) {
		/* the server half-closed or the call failed: t_status follows */
		if (bb)
			grpc_byte_buffer_destroy(bb);
		return;
	}
	uint8_t *data = NULL;
	size_t len = 0;
	int rc = pb_read_message(bb, &data, &len);
	grpc_byte_buffer_destroy(bb);
	if (rc) {
		call_abort(c, GRPC_STATUS_INTERNAL, "cannot read a message");
		return;
	}
	m->bytes_received += len;
	handle_server_message(m, c, data, len);
	free(data);
	if (!c->ended && !start_recv(c, false))
		call_abort(c, GRPC_STATUS_INTERNAL, "cannot receive");
	pump_send(m);
}

/* ---- sending ---- */

static int next_event_message(struct mgmt *m, struct mcall *c, struct buf *out)
{
	struct spool_item it;
	int r = spool_cursor_next(c->cur, &it);
	if (r <= 0) {
		if (r < 0)
			set_error(m, "spool: %s", spool_error(m->spool));
		return r;
	}
	struct buf inner;
	buf_init(&inner);
	int rc;
	if (it.kind == SPOOL_ITEM_RECORD) {
		rc = wire_uint(&inner, 1, it.seq) || wire_bytes(&inner, 2, it.data, it.len) ? -ENOMEM : 0;
		if (!rc)
			rc = wire_bytes(out, 3, inner.data, inner.len);
		m->events_sent++;
		if (it.seq > m->sent_seq)
			m->sent_seq = it.seq;
	} else {
		const char *why = spool_lost_reason_name(it.reason);
		rc = wire_uint(&inner, 1, it.seq) || wire_uint(&inner, 2, it.lost_to) ||
				     wire_uint(&inner, 3, it.lost_to - it.seq + 1) || wire_bytes(&inner, 4, why, strlen(why))
			     ? -ENOMEM
			     : 0;
		if (!rc)
			rc = wire_bytes(out, 4, inner.data, inner.len);
		m->lost_sent += it.lost_to - it.seq + 1;
		if (it.lost_to > m->sent_seq)
			m->sent_seq = it.lost_to;
		log_warn("oneshield: spooled events %llu..%llu lost (%s); telling the server",
			 (unsigned long long)it.seq, (unsigned long long)it.lost_to, why);
	}
	buf_free(&inner);
	return rc ? rc : 1;
}

static void pump_send(struct mgmt *m)
{
	struct mcall *c = m->call;
	if (!c || c->ended || c->send_busy || c->half_closed)
		return;
	struct buf b;
	buf_init(&b);
	if (m->res_head && c->hello_acked) {
		struct result *r = m->res_head;
		m->res_head = r->next;
		if (!m->res_head)
			m->res_tail = &m->res_head;
		m->nresults--;
		if (!send_msg(c, &r->msg, false, true))
			call_abort(c, GRPC_STATUS_INTERNAL, "cannot send");
		buf_free(&r->msg);
		free(r);
		return;
	}
	if (!c->hello_acked)
		return;
	if (m->metrics_due && m->a->snapshot) {
		struct buf s;
		buf_init(&s);
		m->metrics_due = false;
		if (!pb_metrics(m->a->snapshot, "", now_unix_ns(), &s) && !wire_bytes(&b, 2, s.data, s.len)) {
			m->metrics_sent++;
			if (!send_msg(c, &b, false, true))
				call_abort(c, GRPC_STATUS_INTERNAL, "cannot send");
			buf_free(&s);
			buf_free(&b);
			return;
		}
		buf_free(&s);
		buf_reset(&b);
	}
	int r = next_event_message(m, c, &b);
	if (r > 0 && !send_msg(c, &b, false, false))
		call_abort(c, GRPC_STATUS_INTERNAL, "cannot send");
	else if (r == 0 && m->closing && !c->half_closed) {
		/* shutting down and everything is out: say so, the server ends the stream */
		grpc_op op;
		memset(&op, 0, sizeof(op));
		op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
		if (batch(c, &op, 1, &c->t_send)) {
			c->send_busy = true;
			c->half_closed = true;
		}
	}
	buf_free(&b);
}

static void on_send(struct mcall *c, int ok)
{
	c->send_busy = false;
	if (!ok) {
		call_abort(c, GRPC_STATUS_UNAVAILABLE, "send failed");
		return;
	}
	if (!c->ended && !c->m->stopped)
		pump_send(c->m);
}

static void dispatch(struct mgmt *m, struct tag *t, int ok)
{
	struct mcall *c = t->c;
	(void)m;
	switch (t->kind) {
	case T_SEND: on_send(c, ok); break;
	case T_RECV: on_recv(c, ok); break;
	case T_STATUS: on_status(c); break;
	}
	unref(c);
}

static void drain(void *arg, int fd, uint32_t events)
{
	struct mgmt *m = arg;
	uint64_t n;
	(void)events;
	ssize_t r = read(fd, &n, sizeof(n));
	(void)r;
	for (;;) {
		struct done d[32];
		pthread_mutex_lock(&m->lock);
		size_t len = m->qlen < 32 ? m->qlen : 32;
		memcpy(d, m->q, len * sizeof(*d));
		memmove(m->q, m->q + len, (m->qlen - len) * sizeof(*d));
		m->qlen -= len;
		pthread_mutex_unlock(&m->lock);
		if (!len)
			break;
		for (size_t i = 0; i < len; i++)
			dispatch(m, d[i].tag, d[i].ok);
	}
}

/* ---- the journal into the spool ---- */

static int spool_event(struct mgmt *m, const struct event *e)
{
	struct buf b;
	buf_init(&b);
	int rc = pb_event(e, &b);
	if (!rc)
		rc = spool_append(m->spool, SPOOL_REC_EVENT, b.data, b.len, NULL);
	buf_free(&b);
	if (!rc)
		m->spooled = true;
	return rc;
}

/* Loss before the spool goes in as an EVENTS_LOST_MESSAGE for the journal
 * seqs; it stays pending until it could be appended. */
static void note_lost(struct mgmt *m, uint64_t from, uint64_t to)
{
	if (!m->jlost_from)
		m->jlost_from = from;
	m->jlost_to = to;
	m->journal_lost += to - from + 1;
}

/* The journal seq up to which this agent process has handed events to a
 * spool. The plugin stays loaded for the process's life, so this outlives
 * a client restarted by a reload and keeps the new one from spooling the
 * same events again. (A reload that moves spool_dir starts the new spool at
 * the reload: the old events stay in the old spool.) */
static uint64_t journal_spooled;

static void spool_from_journal(struct mgmt *m)
{
	const struct event *e;
	struct event *marker;
	while (journal_next(m->a->journal, &m->jcur, &e, &marker) > 0) {
		if (marker) {
			note_lost(m, marker->lost_from, marker->lost_to);
			journal_spooled = marker->lost_to;
			event_free(marker);
			continue;
		}
		journal_spooled = e->seq;
		if (m->jlost_from) {
			struct event *lm = event_lost_marker(m->jlost_from, m->jlost_to);
			if (lm && !spool_event(m, lm))
				m->jlost_from = m->jlost_to = 0;
			event_free(lm);
		}
		if (m->jlost_from || spool_event(m, e)) {
			/* a pending loss marker goes first, so this one joins its range */
			m->spool_errors++;
			note_lost(m, e->seq, e->seq);
			set_error(m, "spool: %s", spool_error(m->spool));
		}
	}
}

static void on_event(void *arg, const struct event *e)
{
	(void)e;
	spool_from_journal(arg);
}

/* Before the loop sleeps: what was spooled in this iteration is synced
 * (one fdatasync for the batch) and sent while a stream is up; without
 * one, spool_tick syncs on its interval. */
static int prepare(void *arg)
{
	struct mgmt *m = arg;
	if (m->spooled && m->call && m->call->hello_acked) {
		m->spooled = false;
		if (spool_sync(m->spool))
			set_error(m, "spool: %s", spool_error(m->spool));
		pump_send(m);
	}
	return -1;
}

static void tick(void *arg)
{
	struct mgmt *m = arg;
	spool_tick(m->spool, loop_now_ms());
	pump_send(m);
}

static void report_tick(void *arg)
{
	struct mgmt *m = arg;
	m->metrics_due = true;
	pump_send(m);
}

/* ---- identity ---- */

static int load_agent_id(struct mgmt *m, const char *dir, char *err, size_t errlen)
{
	if (CFG(m)->agent_id) {
		snprintf(m->agent_id, sizeof(m->agent_id), "%s", CFG(m)->agent_id);
		return 0;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/agent-id", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		ssize_t n = read(fd, m->agent_id, sizeof(m->agent_id) - 1);
		close(fd);
		if (n > 0) {
			m->agent_id[n] = '\0';
			m->agent_id[strcspn(m->agent_id, "\r\n")] = '\0';
			if (m->agent_id[0])
				return 0;
		}
		snprintf(err, errlen, "oneshield: %s is empty or unreadable; remove it for a new id", path);
		return -EINVAL;
	}
	if (errno != ENOENT) {
		snprintf(err, errlen, "oneshield: %s: %s", path, strerror(errno));
		return -errno;
	}
	uint8_t r[16];
	if (getrandom(r, sizeof(r), 0) != sizeof(r)) {
		snprintf(err, errlen, "oneshield: getrandom: %s", strerror(errno));
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(m->agent_id + 2 * i, 3, "%02x", r[i]);
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	char line[64];
	int l = snprintf(line, sizeof(line), "%s\n", m->agent_id);
	if (fd < 0 || write(fd, line, (size_t)l) != l || fsync(fd) || close(fd) || rename(tmp, path)) {
		snprintf(err, errlen, "oneshield: cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		return -EIO;
	}
	log_info("oneshield: new agent id %s (kept in %s)", m->agent_id, path);
	return 0;
}

/* ---- lifecycle ---- */

/* The client without its connection: the spool fed from the journal, the
 * agent id, the loop's timers and the eventfd completions come through.
 * 0, or -EIO with err filled. */
static int mgmt_new(struct agent *a, struct mgmt **out, char *err, size_t errlen)
{
	const struct oneshield_config *cfg = &a->cfg->oneshield;
	struct mgmt *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "oneshield: out of memory");
		return -ENOMEM;
	}
	m->a = a;
	m->efd = -1;
	m->res_tail = &m->res_head;
	pthread_mutex_init(&m->lock, NULL);
	if (mkdir(cfg->spool_dir, 0700) && errno != EEXIST) {
		snprintf(err, errlen, "oneshield: spool_dir %s: %s", cfg->spool_dir, strerror(errno));
		goto fail;
	}
	if (load_agent_id(m, cfg->spool_dir, err, errlen))
		goto fail;
	char sdir[4200], serr[512];
	snprintf(sdir, sizeof(sdir), "%s/events", cfg->spool_dir);
	struct spool_opts so = {
		.max_bytes = cfg->spool_max_bytes,
		.segment_bytes = cfg->spool_max_bytes / 8 < SPOOL_DEFAULT_SEGMENT_BYTES ? cfg->spool_max_bytes / 8
										: SPOOL_DEFAULT_SEGMENT_BYTES,
		.fsync = SPOOL_FSYNC_INTERVAL,
	};
	if (spool_open(sdir, &so, &m->spool, serr, sizeof(serr))) {
		snprintf(err, errlen, "oneshield: spool: %s", serr);
		goto fail;
	}
	/* every event of this run, including those journaled before we started;
	 * a client restarted by SIGHUP goes on where the previous one stopped */
	journal_cursor_init(a->journal, &m->jcur, journal_spooled, 0);
	spool_from_journal(m);
	if (journal_add_listener(a->journal, on_event, m)) {
		snprintf(err, errlen, "oneshield: out of memory");
		goto fail;
	}
	m->listening = true;
	m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	m->retry_timer = loop_timer_new(a->loop, retry_fire, m);
	m->report_timer = loop_timer_new(a->loop, report_tick, m);
	m->tick_timer = loop_timer_new(a->loop, tick, m);
	if (m->efd < 0 || !m->retry_timer || !m->report_timer || !m->tick_timer ||
	    !(m->io = loop_io_add(a->loop, m->efd, EPOLLIN, drain, m)) ||
	    loop_timer_arm(m->tick_timer, SPOOL_DEFAULT_INTERVAL_MS, SPOOL_DEFAULT_INTERVAL_MS) ||
	    !(m->prepare_added = loop_add_prepare(a->loop, prepare, m) == 0)) {
		snprintf(err, errlen, "oneshield: cannot attach the client to the core loop");
		goto fail;
	}
	struct spool_stats ss;
	spool_stats(m->spool, &ss);
	m->sent_seq = ss.acked_seq;
	log_info("oneshield: reporting to %s as agent %s; spool %s holds %llu unacknowledged events", cfg->address,
		 m->agent_id, sdir, (unsigned long long)ss.records);
	*out = m;
	return 0;
fail:
	mgmt_plugin_stop(m);
	return -EIO;
}

int mgmt_plugin_start(struct agent *a, struct mgmt **out, char *err, size_t errlen)
{
	struct mgmt *m;
	*out = NULL;
	if (!a->cfg->oneshield.address) {
		snprintf(err, errlen, "oneshield: no address");
		return -EINVAL;
	}
	int rc = mgmt_new(a, &m, err, errlen);
	if (rc)
		return rc;
	grpc_init();
	m->cq = grpc_completion_queue_create_for_next(NULL);
	if (pthread_create(&m->pump, NULL, pump, m)) {
		snprintf(err, errlen, "oneshield: cannot attach the client to the core loop");
		mgmt_plugin_stop(m);
		return -EIO;
	}
	m->pump_started = true;
	connect_now(m);
	*out = m;
	return 0;
}

void mgmt_plugin_begin_shutdown(struct mgmt *m)
{
	if (!m)
		return;
	m->closing = true;
	loop_timer_disarm(m->retry_timer);
	spool_from_journal(m);
	if (spool_sync(m->spool))
		set_error(m, "spool: %s", spool_error(m->spool));
	pump_send(m);
}

/* Until the server has acknowledged everything (AGENT_STOP included) and
 * ended the stream after our half-close; main.c bounds the wait. */
bool mgmt_plugin_sending(const struct mgmt *m)
{
	if (!m || !m->call || !m->call->hello_acked || m->call->ended)
		return false;
	struct spool_stats ss;
	spool_stats(m->spool, &ss);
	return ss.acked_seq < ss.next_seq - 1 || !m->call->half_closed;
}

void mgmt_plugin_stop(struct mgmt *m)
{
	if (!m)
		return;
	m->stopped = true;
	m->state = CS_STOPPED;
	if (m->listening)
		journal_remove_listener(m->a->journal, on_event, m);
	if (m->prepare_added)
		loop_remove_prepare(m->a->loop, prepare, m);
	if (m->call)
		call_abort(m->call, GRPC_STATUS_CANCELLED, "agent stopping");
	if (m->ch)
		grpc_channel_destroy(m->ch);
	m->ch = NULL;
	if (m->cq) {
		grpc_completion_queue_shutdown(m->cq);
		if (m->pump_started)
			pthread_join(m->pump, NULL);
		/* completions not yet handed over: release their calls */
		drain(m, m->efd, 0);
		grpc_completion_queue_destroy(m->cq);
		grpc_shutdown();
	}
	loop_io_del(m->a->loop, m->io);
	if (m->efd >= 0)
		close(m->efd);
	loop_timer_free(m->a->loop, m->retry_timer);
	loop_timer_free(m->a->loop, m->report_timer);
	loop_timer_free(m->a->loop, m->tick_timer);
	for (struct apply_ctx *x = m->applies; x; x = x->next)
		x->m = NULL; /* the apply goes on; its result has nowhere to go */
	while (m->res_head) {
		struct result *r = m->res_head;
		m->res_head = r->next;
		buf_free(&r->msg);
		free(r);
	}
	if (m->spool) {
		int rc = spool_close(m->spool);
		if (rc)
			log_warn("oneshield: closing the spool: %s", strerror(-rc));
	}
	free(m->q);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* ---- status and metrics ---- */

static const char *conn_state_name(const struct mgmt *m)
{
	return m->auth_refused && m->state == CS_BACKOFF ? "unauthenticated" : state_names[m->state];
}

void mgmt_plugin_status_json(const struct mgmt *m, cJSON *status)
{
	cJSON *o = cJSON_AddObjectToObject(status, "oneshield");
	if (!o)
		return;
	if (!m) {
		cJSON_AddBoolToObject(o, "enabled", false);
		return;
	}
	struct spool_stats ss;
	spool_stats(m->spool, &ss);
	cJSON_AddBoolToObject(o, "enabled", true);
	cJSON_AddStringToObject(o, "address", CFG(m)->address);
	cJSON_AddStringToObject(o, "agent_id", m->agent_id);
	cJSON_AddStringToObject(o, "state", conn_state_name(m));
	cJSON_AddBoolToObject(o, "connected", m->state == CS_CONNECTED);
	if (m->state == CS_CONNECTED) {
		cJSON_AddNumberToObject(o, "connected_since", m->connected_unix);
		cJSON_AddStringToObject(o, "server_version", m->server_version);
	}
	if (m->state == CS_BACKOFF) {
		uint64_t now = loop_now_ms();
		cJSON_AddNumberToObject(o, "retry_in_ms", m->retry_at_ms > now ? (double)(m->retry_at_ms - now) : 0);
	}
	if (m->last_error[0]) {
		cJSON_AddStringToObject(o, "last_error", m->last_error);
		cJSON_AddNumberToObject(o, "last_error_at", m->last_error_unix);
	}
	cJSON_AddNumberToObject(o, "connects", (double)m->connects);
	cJSON_AddNumberToObject(o, "attempts", (double)m->attempts);
	cJSON_AddNumberToObject(o, "auth_failures", (double)m->auth_failures);
	cJSON_AddNumberToObject(o, "events_sent", (double)m->events_sent);
	cJSON_AddNumberToObject(o, "acks", (double)m->acks);
	cJSON_AddNumberToObject(o, "metrics_sent", (double)m->metrics_sent);
	cJSON_AddNumberToObject(o, "commands", (double)m->commands);
	cJSON *s = cJSON_AddObjectToObject(o, "spool");
	if (s) {
		cJSON_AddStringToObject(s, "id", spool_id(m->spool));
		cJSON_AddStringToObject(s, "dir", CFG(m)->spool_dir);
		cJSON_AddNumberToObject(s, "depth", (double)ss.records);
		cJSON_AddNumberToObject(s, "bytes", (double)ss.bytes);
		cJSON_AddNumberToObject(s, "max_bytes", (double)CFG(m)->spool_max_bytes);
		cJSON_AddNumberToObject(s, "last_seq", (double)(ss.next_seq - 1));
		cJSON_AddNumberToObject(s, "acked_seq", (double)ss.acked_seq);
		cJSON_AddNumberToObject(s, "events_dropped", (double)ss.dropped_records);
		cJSON_AddNumberToObject(s, "lost_reported", (double)m->lost_sent);
		cJSON_AddNumberToObject(s, "lost_before_spool", (double)m->journal_lost);
		cJSON_AddNumberToObject(s, "append_errors", (double)m->spool_errors);
	}
}

void mgmt_plugin_status_pb(const struct mgmt *m, Oneshield__Agent__V1__OneshieldStatus *o)
{
	if (!m)
		return;
	struct spool_stats ss;
	spool_stats(m->spool, &ss);
	o->enabled = true;
	o->address = CFG(m)->address;
	o->agent_id = (char *)m->agent_id;
	o->state = (char *)conn_state_name(m);
	o->connected = m->state == CS_CONNECTED;
	if (o->connected) {
		o->connected_since_unix_nano = (int64_t)(m->connected_unix * 1e9);
		o->server_version = (char *)m->server_version;
	}
	if (m->last_error[0]) {
		o->last_error = (char *)m->last_error;
		o->last_error_unix_nano = (int64_t)(m->last_error_unix * 1e9);
	}
	o->connects = m->connects;
	o->attempts = m->attempts;
	o->auth_failures = m->auth_failures;
	o->events_sent = m->events_sent;
	o->acks = m->acks;
	o->metrics_sent = m->metrics_sent;
	o->commands = m->commands;
	o->spool_id = (char *)spool_id(m->spool);
	o->spool_depth = ss.records;
	o->spool_bytes = ss.bytes;
	o->spool_max_bytes = CFG(m)->spool_max_bytes;
	o->spool_last_seq = ss.next_seq - 1;
	o->spool_acked_seq = ss.acked_seq;
	o->events_dropped = ss.dropped_records;
	o->lost_before_spool = m->journal_lost;
}

int mgmt_plugin_collect(const struct mgmt *m, struct metrics *out)
{
	if (!m)
		return 0;
	struct spool_stats ss;
	spool_stats(m->spool, &ss);
	static const struct {
		const char *name;
		enum metric_type type;
		const char *help;
	} fam[] = {
		{ "oneshield_agent_mgmt_connected", MT_GAUGE, "1 while the stream to One Shield is up" },
		{ "oneshield_agent_mgmt_connects_total", MT_COUNTER, "Streams to One Shield established" },
		{ "oneshield_agent_mgmt_connect_attempts_total", MT_COUNTER, "Connection attempts to One Shield" },
		{ "oneshield_agent_mgmt_auth_failures_total", MT_COUNTER, "Streams refused for the token" },
		{ "oneshield_agent_mgmt_events_sent_total", MT_COUNTER, "Spooled events sent (resends included)" },
		{ "oneshield_agent_mgmt_commands_total", MT_COUNTER, "Commands received from One Shield" },
		{ "oneshield_agent_mgmt_spool_events", MT_GAUGE, "Spooled events not yet acknowledged" },
		{ "oneshield_agent_mgmt_spool_bytes", MT_GAUGE, "Bytes of the spool's files" },
		{ "oneshield_agent_mgmt_events_dropped_total", MT_COUNTER,
		  "Spooled events given up before acknowledgement (cap, corruption, crash)" },
		{ "oneshield_agent_mgmt_events_lost_before_spool_total", MT_COUNTER,
		  "Journal events that could not be spooled" },
	};
	double v[] = { m->state == CS_CONNECTED, (double)m->connects, (double)m->attempts, (double)m->auth_failures,
		       (double)m->events_sent, (double)m->commands, (double)ss.records, (double)ss.bytes,
		       (double)ss.dropped_records, (double)m->journal_lost };
	for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
		int rc = metrics_declare(out, fam[i].name, fam[i].type, fam[i].help);
		if (!rc)
			rc = metrics_add(out, fam[i].name, v[i], NULL);
		if (rc)
			return rc;
	}
	return 0;
}

#ifdef ONESHIELD_FUZZ
/* ---- the fuzzing seam (mgmt.h; tests/fuzz/fuzz_mgmt.c) ----
 *
 * A fake stream stands in for the gRPC call: everything above it (hello,
 * the recv/send/status batches, their completions through complete() and
 * drain(), aborts, reconnects) is the production code. A send batch hands
 * its message to fz_sent and completes at once; a recv batch waits for
 * mgmt_fuzz_deliver; the status batch completes when the stream ends
 * (call_abort, or mgmt_fuzz_end_stream: the server's end). */

static void fake_batch(struct mcall *c, const grpc_op *ops, size_t n, struct tag *t)
{
	struct mgmt *m = c->m;
	if (c->fz_done) {
		complete(m, t, 0); /* as gRPC fails batches started on an ended call */
		return;
	}
	for (size_t i = 0; i < n; i++) {
		switch (ops[i].op) {
		case GRPC_OP_SEND_MESSAGE: {
			uint8_t *data;
			size_t len;
			if (pb_read_message(ops[i].data.send_message.send_message, &data, &len))
				abort();
			m->fz_sent(m->fz_arg, data, len);
			free(data);
			break;
		}
		case GRPC_OP_RECV_MESSAGE:
			c->fz_recv = true;
			return;
		case GRPC_OP_RECV_STATUS_ON_CLIENT:
			c->fz_status = true;
			return;
		default:
			break;
		}
	}
	complete(m, t, 1);
}

static void fake_end(struct mcall *c, grpc_status_code code, const char *why)
{
	if (c->fz_done)
		return;
	c->fz_done = true;
	c->status = code;
	grpc_slice_unref(c->details);
	c->details = grpc_slice_from_copied_string(why);
	if (c->fz_recv) {
		c->fz_recv = false;
		complete(c->m, &c->t_recv, code == GRPC_STATUS_OK); /* no message: the end */
	}
	if (c->fz_status) {
		c->fz_status = false;
		complete(c->m, &c->t_status, 1);
	}
}

int mgmt_fuzz_open(struct agent *a, mgmt_fuzz_sent_fn sent, void *arg, struct mgmt **out, char *err,
		   size_t errlen)
{
	int rc = mgmt_new(a, out, err, errlen);
	if (rc)
		return rc;
	(*out)->fz_sent = sent;
	(*out)->fz_arg = arg;
	connect_now(*out);
	drain(*out, (*out)->efd, 0);
	return 0;
}

int mgmt_fuzz_reconnect(struct mgmt *m)
{
	drain(m, m->efd, 0);
	if (!m->call) {
		/* what the retry timer would do, now */
		loop_timer_disarm(m->retry_timer);
		connect_now(m);
		drain(m, m->efd, 0);
	}
	return m->call && m->call->fz_recv ? 0 : -EPIPE;
}

int mgmt_fuzz_deliver(struct mgmt *m, const uint8_t *msg, size_t len)
{
	drain(m, m->efd, 0);
	struct mcall *c = m->call;
	if (!c || !c->fz_recv)
		return -EPIPE;
	grpc_slice s = grpc_slice_from_copied_buffer((const char *)msg, len);
	c->recv_buf = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	c->fz_recv = false;
	complete(m, &c->t_recv, 1);
	drain(m, m->efd, 0);
	return 0;
}

void mgmt_fuzz_end_stream(struct mgmt *m, int code)
{
	drain(m, m->efd, 0);
	if (m->call)
		fake_end(m->call, (grpc_status_code)code, "ended by the fuzzer");
	drain(m, m->efd, 0);
}

void mgmt_fuzz_flush(struct mgmt *m)
{
	drain(m, m->efd, 0);
}

struct spool *mgmt_fuzz_spool(const struct mgmt *m)
{
	return m->spool;
}

void mgmt_fuzz_close(struct mgmt *m)
{
	if (!m)
		return;
	drain(m, m->efd, 0);
	m->stopped = true;
	if (m->call)
		call_abort(m->call, GRPC_STATUS_CANCELLED, "agent stopping");
	drain(m, m->efd, 0);
	mgmt_plugin_stop(m);
}
#endif
