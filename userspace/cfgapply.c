/* Config apply state machine; the flow is drawn in cfgapply.h.
 *
 * Nothing blocks the loop: the validator is a child process watched by
 * spawn, the reload verification is a 50 ms timer bounded by
 * reload_timeout. The file work (backup, atomic writes, restore) is local
 * I/O done in place. Whatever happens after the first write, the previous
 * files are put back unless the apply is reported "applied", and the
 * outcome says whether that restore itself failed. */
#include "cfgapply.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cfgfs.h"
#include "errlog.h"
#include "config.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "onepanel.h"
#include "sha256.h"
#include "spawn.h"

#define VERIFY_TICK_MS 50
#define SETTLE_MS 1000           /* no workers to watch: quiet this long = reloaded */
#define MAX_VALIDATOR_OUTPUT (64 * 1024)
#define MAX_LOG_SCAN (1 << 20)   /* bytes of new error-log text examined per tick */
#define MAX_SEQS 16
#define MAX_LOGS 16

enum phase { P_IDLE, P_VALIDATING, P_VERIFYING, P_ROLLBACK };

/* api.limits.applies_per_minute: start times (ms) of the applies of the
 * last minute, oldest first, in a ring as long as the largest limit. */
#define RATE_WINDOW_MS 60000
#define RATE_MAX 10000

struct cfgapply {
	struct agent *a;
	uint64_t rate_ms[RATE_MAX];
	size_t rate_head, rate_n;
	enum phase phase;
	struct cfgapply_req *req;
	struct cfgfs_txn *txn;
	char id[33];
	uint64_t seqs[MAX_SEQS];
	size_t nseqs;
	struct spawn *sp;
	/* validator outcome */
	bool v_ran, v_ok, v_timed_out, v_exec_failed;
	int v_status, v_errno;
	char *v_output;
	/* verification */
	struct loop_timer *timer;
	uint64_t deadline, settle_until;
	pid_t pid;
	uint64_t start_ticks;
	int64_t forks0;
	bool watch_workers;
	off_t log_off[MAX_LOGS];
	char fail_reason[512];
	bool reloaded;
	uint64_t t0;
	/* microseconds spent in each phase, for the result and the benchmark */
	uint64_t us_prepare, us_validate, us_reload, us_restore, mark;
	/* health_url probe during verification */
	int hfd;
	struct loop_io *hio;
	enum { H_NONE, H_CONNECTING, H_READING, H_OK, H_FAIL } hstate;
	char hbuf[256];
	size_t hlen;
	char hwhy[160];
	/* onepanel when the apply began: if it dies meanwhile, this is no
	 * "not running, not reloaded" success */
	bool was_running;
	pid_t start_pid;
	uint64_t start_start_ticks;
	cfgapply_done_fn done;
	void *arg;
};

/* ---- requests ---- */

void cfgapply_req_free(struct cfgapply_req *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nfiles; i++) {
		free(r->files[i].path);
		free(r->files[i].data);
	}
	free(r->files);
	free(r);
}

void cfgapply_limits(const struct agent *a, struct cfgfs_limits *lim)
{
	const struct onepanel_config *oc = &a->cfg->onepanel;
	cfgfs_limits_default(lim);
	if (oc->max_file_bytes)
		lim->max_file_bytes = oc->max_file_bytes;
	if (oc->max_total_bytes)
		lim->max_total_bytes = oc->max_total_bytes;
	if (oc->max_files)
		lim->max_files = oc->max_files;
}

int cfgapply_req_check(const struct cfgapply_req *r, const struct cfgfs_limits *limp, char *err, size_t errlen)
{
	struct cfgfs_limits lim = *limp;
	if (r->nfiles == 0) {
		snprintf(err, errlen, "no files given");
		return -EINVAL;
	}
	if (r->nfiles > lim.max_files) {
		snprintf(err, errlen, "too many files: %zu (max %zu)", r->nfiles, lim.max_files);
		return -EFBIG;
	}
	size_t total = 0;
	for (size_t i = 0; i < r->nfiles; i++) {
		const struct cfgapply_file *f = &r->files[i];
		if (!f->path || !*f->path) {
			snprintf(err, errlen, "files[%zu]: path is empty", i);
			return -EINVAL;
		}
		if (f->len > lim.max_file_bytes) {
			snprintf(err, errlen, "files[%zu] (%.200s): %zu bytes (max %zu)", i, f->path, f->len,
				 lim.max_file_bytes);
			return -EFBIG;
		}
		total += f->len;
		if (total > lim.max_total_bytes) {
			snprintf(err, errlen, "files total more than %zu bytes", lim.max_total_bytes);
			return -EFBIG;
		}
		for (size_t k = 0; k < i; k++)
			if (strcmp(r->files[k].path, f->path) == 0) {
				snprintf(err, errlen, "path %.200s given twice", f->path);
				return -EINVAL;
			}
	}
	return 0;
}

int cfgapply_parse_json(const char *body, size_t len, const struct cfgfs_limits *limp, struct cfgapply_req **out,
			char *err, size_t errlen)
{
	struct cfgfs_limits lim = *limp;
	*out = NULL;
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, false);
	if (j && end) {
		/* one JSON value and nothing after it but whitespace */
		for (const char *p = end; p < body + len; p++)
			if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
				cJSON_Delete(j);
				j = NULL;
				break;
			}
	}
	if (!j) {
		snprintf(err, errlen, "request body is not one valid JSON value");
		return -EINVAL;
	}
	int rc = -EINVAL;
	struct cfgapply_req *r = calloc(1, sizeof(*r));
	if (!r) {
		cJSON_Delete(j);
		return -ENOMEM;
	}
	r->reload = true;
	if (!cJSON_IsObject(j)) {
		snprintf(err, errlen, "request body must be a JSON object");
		goto out;
	}
	cJSON *it;
	cJSON_ArrayForEach(it, j)
	{
		if (strcmp(it->string, "files") && strcmp(it->string, "dry_run") && strcmp(it->string, "reload")) {
			snprintf(err, errlen, "unknown field \"%.64s\" (allowed: files, dry_run, reload)", it->string);
			goto out;
		}
	}
	cJSON *dry = cJSON_GetObjectItemCaseSensitive(j, "dry_run");
	cJSON *rel = cJSON_GetObjectItemCaseSensitive(j, "reload");
	if ((dry && !cJSON_IsBool(dry)) || (rel && !cJSON_IsBool(rel))) {
		snprintf(err, errlen, "dry_run and reload must be true or false");
		goto out;
	}
	r->dry_run = dry && cJSON_IsTrue(dry);
	r->reload = !rel || cJSON_IsTrue(rel);
	cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
	if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) == 0) {
		snprintf(err, errlen, "files must be a non-empty array");
		goto out;
	}
	size_t n = (size_t)cJSON_GetArraySize(files);
	if (n > lim.max_files) { /* before allocating for them */
		snprintf(err, errlen, "too many files: %zu (max %zu)", n, lim.max_files);
		rc = -EFBIG;
		goto out;
	}
	r->files = calloc(n, sizeof(*r->files));
	if (!r->files) {
		rc = -ENOMEM;
		goto out;
	}
	size_t i = 0;
	cJSON_ArrayForEach(it, files)
	{
		struct cfgapply_file *f = &r->files[i];
		r->nfiles = ++i;
		if (!cJSON_IsObject(it)) {
			snprintf(err, errlen, "files[%zu] must be an object", i - 1);
			goto out;
		}
		cJSON *k;
		cJSON_ArrayForEach(k, it)
		{
			if (strcmp(k->string, "path") && strcmp(k->string, "content") &&
			    strcmp(k->string, "content_base64") && strcmp(k->string, "delete")) {
				snprintf(err, errlen, "files[%zu]: unknown field \"%.64s\"", i - 1, k->string);
				goto out;
			}
		}
		cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
		cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
		cJSON *b = cJSON_GetObjectItemCaseSensitive(it, "content_base64");
		cJSON *d = cJSON_GetObjectItemCaseSensitive(it, "delete");
		if (!cJSON_IsString(p) || !(f->path = strdup(p->valuestring))) {
			snprintf(err, errlen, "files[%zu].path must be a string", i - 1);
			goto out;
		}
		if ((c && !cJSON_IsString(c)) || (b && !cJSON_IsString(b)) || (d && !cJSON_IsBool(d))) {
			snprintf(err, errlen, "files[%zu]: content and content_base64 are strings, delete is a boolean",
				 i - 1);
			goto out;
		}
		int kinds = !!c + !!b + (d && cJSON_IsTrue(d));
		if (kinds != 1) {
			snprintf(err, errlen, "files[%zu] (%.200s): give exactly one of content, content_base64, delete: true",
				 i - 1, f->path);
			goto out;
		}
		if (d && cJSON_IsTrue(d)) {
			f->del = true;
			continue;
		}
		if (c) {
			f->len = strlen(c->valuestring);
			f->data = malloc(f->len ? f->len : 1);
			if (!f->data) {
				rc = -ENOMEM;
				goto out;
			}
			memcpy(f->data, c->valuestring, f->len);
		} else if (cfgfs_base64_decode(b->valuestring, strlen(b->valuestring), &f->data, &f->len)) {
			snprintf(err, errlen, "files[%zu] (%.200s): content_base64 is not valid base64", i - 1, f->path);
			goto out;
		}
	}
	if ((rc = cfgapply_req_check(r, &lim, err, errlen)))
		goto out;
	*out = r;
	r = NULL;
	rc = 0;
out:
	cfgapply_req_free(r);
	cJSON_Delete(j);
	return rc;
}

/* ---- helpers ---- */

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Add the time since the last mark to *acc and move the mark. */
static void lap(struct cfgapply *ca, uint64_t *acc)
{
	uint64_t t = now_us();
	*acc += t - ca->mark;
	ca->mark = t;
}

struct cfgapply *cfgapply_new(struct agent *a)
{
	struct cfgapply *ca = calloc(1, sizeof(*ca));
	if (ca) {
		ca->a = a;
		ca->hfd = -1;
	}
	return ca;
}

/* ---- health_url: one non-blocking HTTP/1.0 GET at a time ---- */

static void health_close(struct cfgapply *ca)
{
	loop_io_del(ca->a->loop, ca->hio);
	ca->hio = NULL;
	if (ca->hfd >= 0)
		close(ca->hfd);
	ca->hfd = -1;
}

static void health_fail(struct cfgapply *ca, const char *why)
{
	health_close(ca);
	ca->hstate = H_FAIL;
	snprintf(ca->hwhy, sizeof(ca->hwhy), "%s", why);
}

static void health_io(void *arg, int fd, uint32_t events)
{
	struct cfgapply *ca = arg;
	(void)events;
	if (ca->hstate == H_CONNECTING) {
		int e = 0;
		socklen_t l = sizeof(e);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e) {
			health_fail(ca, strerror(e ? e : errno));
			return;
		}
		char host[128], path[256], req[512];
		uint16_t port;
		config_parse_http_url(ca->a->cfg->onepanel.health_url, host, sizeof(host), &port, path, sizeof(path));
		int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s:%u\r\nUser-Agent: oneshield-agent\r\n\r\n",
				 path, host, port);
		/* a few hundred bytes into an empty socket buffer: one write */
		if (n < 0 || write(fd, req, (size_t)n) != n) {
			health_fail(ca, "cannot send the request");
			return;
		}
		ca->hstate = H_READING;
		ca->hlen = 0;
		loop_io_mod(ca->a->loop, ca->hio, EPOLLIN);
		return;
	}
	ssize_t n = read(fd, ca->hbuf + ca->hlen, sizeof(ca->hbuf) - 1 - ca->hlen);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		ca->hlen += (size_t)n;
	ca->hbuf[ca->hlen] = '\0';
	if (n > 0 && !strstr(ca->hbuf, "\r\n") && ca->hlen < sizeof(ca->hbuf) - 1)
		return; /* status line not complete yet */
	int code = 0;
	if (sscanf(ca->hbuf, "HTTP/%*d.%*d %d", &code) != 1) {
		health_fail(ca, "no HTTP status line in the answer");
		return;
	}
	health_close(ca);
	if (code >= 200 && code < 300) {
		ca->hstate = H_OK;
	} else {
		ca->hstate = H_FAIL;
		snprintf(ca->hwhy, sizeof(ca->hwhy), "answered %d", code);
	}
}

static void health_start(struct cfgapply *ca)
{
	char host[128], path[256];
	uint16_t port;
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	if (config_parse_http_url(ca->a->cfg->onepanel.health_url, host, sizeof(host), &port, path, sizeof(path))) {
		health_fail(ca, "invalid health_url");
		return;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		sl = sizeof(*a4);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		sl = sizeof(*a6);
	} else {
		health_fail(ca, "invalid health_url host");
		return;
	}
	ca->hfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ca->hfd < 0) {
		health_fail(ca, strerror(errno));
		return;
	}
	if (connect(ca->hfd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
		health_fail(ca, strerror(errno));
		return;
	}
	ca->hstate = H_CONNECTING;
	ca->hio = loop_io_add(ca->a->loop, ca->hfd, EPOLLOUT, health_io, ca);
	if (!ca->hio)
		health_fail(ca, "cannot watch the connection");
}

bool cfgapply_busy(const struct cfgapply *ca)
{
	return ca && ca->phase != P_IDLE;
}

static void new_id(char out[33])
{
	uint8_t r[16];
	if (getrandom(r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
		uint64_t t = loop_now_ms() ^ (uint64_t)getpid() << 32;
		memcpy(r, &t, sizeof(t));
		memcpy(r + 8, &t, sizeof(t));
	}
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static struct event *ev_new(struct cfgapply *ca, enum event_type t, enum event_level l, const char *msg)
{
	struct event *e = event_new(t, l, "%s", msg);
	if (e)
		event_set_correlation(e, ca->id);
	return e;
}

static void ev_emit(struct cfgapply *ca, struct event *e)
{
	if (!e)
		return;
	uint64_t seq = journal_append(ca->a->journal, e);
	if (seq && ca->nseqs < MAX_SEQS)
		ca->seqs[ca->nseqs++] = seq;
}

static void emit_simple(struct cfgapply *ca, enum event_type t, enum event_level l, const char *msg)
{
	ev_emit(ca, ev_new(ca, t, l, msg));
}

static void health_close(struct cfgapply *ca);

static void reset(struct cfgapply *ca)
{
	onepanel_on_fork(ca->a->onepanel, NULL, NULL);
	health_close(ca);
	cfgfs_txn_free(ca->txn);
	ca->txn = NULL;
	cfgapply_req_free(ca->req);
	ca->req = NULL;
	free(ca->v_output);
	ca->v_output = NULL;
	loop_timer_free(ca->a->loop, ca->timer);
	ca->timer = NULL;
	ca->sp = NULL;
	ca->phase = P_IDLE;
}

static cJSON *result_json(struct cfgapply *ca, const char *status, const char *message)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "correlation_id", ca->id);
	cJSON_AddStringToObject(o, "status", status);
	cJSON_AddStringToObject(o, "message", message);
	cJSON_AddBoolToObject(o, "dry_run", ca->req && ca->req->dry_run);
	cJSON_AddBoolToObject(o, "reloaded", ca->reloaded);
	if (ca->v_ran) {
		cJSON *v = cJSON_AddObjectToObject(o, "validator");
		if (ca->v_exec_failed) {
			char m[160];
			snprintf(m, sizeof(m), "could not run the validator: %s", strerror(ca->v_errno));
			cJSON_AddStringToObject(v, "error", m);
		} else if (WIFSIGNALED(ca->v_status)) {
			cJSON_AddNumberToObject(v, "signal", WTERMSIG(ca->v_status));
		} else if (WIFEXITED(ca->v_status)) {
			cJSON_AddNumberToObject(v, "exit_code", WEXITSTATUS(ca->v_status));
		}
		cJSON_AddBoolToObject(v, "timed_out", ca->v_timed_out);
		cJSON_AddStringToObject(v, "output", ca->v_output ? ca->v_output : "");
	}
	cJSON *files = cJSON_AddArrayToObject(o, "files");
	for (size_t i = 0; ca->txn && i < cfgfs_txn_count(ca->txn); i++) {
		cJSON *f = cJSON_CreateObject();
		enum cfgfs_op op = cfgfs_txn_op(ca->txn, i);
		cJSON_AddStringToObject(f, "path", cfgfs_txn_path(ca->txn, i));
		cJSON_AddStringToObject(f, "action", op == CFGFS_OP_DELETE ? "delete" : "write");
		cJSON_AddBoolToObject(f, "existed", cfgfs_txn_existed(ca->txn, i));
		cJSON_AddStringToObject(f, "sha256_before", cfgfs_txn_sha_before(ca->txn, i));
		cJSON_AddStringToObject(f, "sha256_after", cfgfs_txn_sha_after(ca->txn, i));
		cJSON_AddItemToArray(files, f);
	}
	cJSON *evs = cJSON_AddArrayToObject(o, "events");
	for (size_t i = 0; i < ca->nseqs; i++)
		cJSON_AddItemToArray(evs, cJSON_CreateNumber((double)ca->seqs[i]));
	cJSON_AddNumberToObject(o, "duration_ms", (double)(loop_now_ms() - ca->t0));
	/* the agent's own work vs. waiting for the validator and the reload */
	cJSON *t = cJSON_AddObjectToObject(o, "timings_ms");
	cJSON_AddNumberToObject(t, "prepare", (double)ca->us_prepare / 1000.0);
	cJSON_AddNumberToObject(t, "validate", (double)ca->us_validate / 1000.0);
	cJSON_AddNumberToObject(t, "reload", (double)ca->us_reload / 1000.0);
	cJSON_AddNumberToObject(t, "restore", (double)ca->us_restore / 1000.0);
	return o;
}

static void audit(struct cfgapply *ca, const char *status)
{
	char files[1024] = "";
	size_t n = 0;
	for (size_t i = 0; ca->txn && i < cfgfs_txn_count(ca->txn) && n < sizeof(files) - 1; i++) {
		int w = snprintf(files + n, sizeof(files) - n, "%s%s %.12s->%.12s", i ? ", " : "",
				 cfgfs_txn_path(ca->txn, i), cfgfs_txn_sha_before(ca->txn, i),
				 cfgfs_txn_sha_after(ca->txn, i));
		if (w < 0)
			break;
		n += (size_t)w;
	}
	log_info("audit: config apply %s from %s%s: %s; files: %s", ca->id, ca->req ? ca->req->peer : "?",
		 ca->req && ca->req->dry_run ? " (dry run)" : "", status, files);
}

/* Finish: report through the callback (async) or return (sync). */
static void finish(struct cfgapply *ca, const char *status, int code, const char *message, cJSON **sync_out,
		   int *sync_code)
{
	audit(ca, status);
	cJSON *res = result_json(ca, status, message);
	cfgapply_done_fn fn = ca->done;
	void *arg = ca->arg;
	reset(ca);
	if (sync_out) {
		*sync_out = res;
		*sync_code = code;
	} else if (fn) {
		fn(arg, res, code);
	} else {
		cJSON_Delete(res);
	}
}

/* Put the old files back; false if that failed (then nothing more can be
 * promised: rollback_failed). */
static bool restore(struct cfgapply *ca)
{
	ca->mark = now_us();
	int r = ca->txn ? cfgfs_txn_restore(ca->txn) : 0;
	lap(ca, &ca->us_restore);
	if (r == 0)
		return true;
	log_error("config apply %s: restoring the previous files failed: %s", ca->id, cfgfs_txn_error(ca->txn));
	return false;
}

static void fail_apply(struct cfgapply *ca, const char *status, int code, const char *reason, cJSON **so,
		       int *sc)
{
	bool restored = restore(ca);
	struct event *e = ev_new(ca, EV_CONFIG_APPLY_FAILURE, EL_ERROR, reason);
	if (e) {
		event_set_field(e, "status", "%s", restored ? status : "rollback_failed");
		if (ca->v_output && *ca->v_output)
			event_set_field(e, "validator_output", "%.2000s", ca->v_output);
		if (!restored)
			event_set_field(e, "restore_error", "%s", cfgfs_txn_error(ca->txn));
	}
	ev_emit(ca, e);
	if (restored)
		finish(ca, status, code, reason, so, sc);
	else
		finish(ca, "rollback_failed", 500, "the new files were refused and the previous ones could not be restored",
		       so, sc);
}

/* ---- reload verification ---- */

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* An error-log line is judged by the parser the log metrics use
 * (errlog.h): timestamped at crit or above. Other text (a validator's
 * "nginx: [emerg] ..." on stderr) by its level mark; both by a Go-style
 * panic's first line. */
static bool critical_line(const char *line, size_t n)
{
	static const char *const marks[] = { "[emerg]", "[alert]", "[crit]" };
	struct errlog_line el;
	if (errlog_parse_line(line, n, &el) == 0)
		return el.level >= ERL_CRIT;
	for (size_t i = 0; i < 3; i++)
		if (memmem(line, n, marks[i], strlen(marks[i])))
			return true;
	return n >= 6 && memcmp(line, "panic:", 6) == 0;
}

/* Did an error log gain a critical line since the offsets were taken?
 * Copies the first such line to out. Offsets advance past what was read. */
static bool scan_logs(struct cfgapply *ca, char *out, size_t outlen)
{
	const struct onepanel_config *oc = &ca->a->cfg->onepanel;
	bool found = false;
	for (size_t i = 0; i < oc->n_error_logs && i < MAX_LOGS && !found; i++) {
		int fd = open(oc->error_logs[i].path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_size < ca->log_off[i])
			ca->log_off[i] = 0; /* rotated or truncated */
		char *buf = malloc(MAX_LOG_SCAN);
		ssize_t n = buf ? pread(fd, buf, MAX_LOG_SCAN, ca->log_off[i]) : -1;
		close(fd);
		if (n > 0) {
			/* only whole lines; a partial last line is read again later */
			size_t end = (size_t)n;
			while (end > 0 && buf[end - 1] != '\n')
				end--;
			if (end == 0 && (size_t)n == MAX_LOG_SCAN)
				end = (size_t)n;
			for (size_t s = 0; s < end && !found;) {
				char *nl = memchr(buf + s, '\n', end - s);
				size_t len = nl ? (size_t)(nl - (buf + s)) : end - s;
				if (critical_line(buf + s, len)) {
					snprintf(out, outlen, "%.*s", (int)(len > 400 ? 400 : len), buf + s);
					found = true;
				}
				s += len + 1;
			}
			ca->log_off[i] += (off_t)end;
		}
		free(buf);
	}
	return found;
}

static void verify_tick(void *arg);

/* Signal onepanel and start watching it. false when it could not be signalled. */
static bool signal_and_watch(struct cfgapply *ca)
{
	struct onepanel *op = ca->a->onepanel;
	const struct onepanel_config *oc = &ca->a->cfg->onepanel;
	struct onepanel_state st;
	onepanel_get_state(op, &st);
	ca->pid = st.pid;
	ca->start_ticks = onepanel_start_ticks(op);
	ca->forks0 = onepanel_forks(op);
	int64_t kids = onepanel_children(op);
	ca->watch_workers = ca->forks0 >= 0 && kids > 0;
	for (size_t i = 0; i < oc->n_error_logs && i < MAX_LOGS; i++)
		ca->log_off[i] = file_size(oc->error_logs[i].path);
	health_close(ca);
	ca->hstate = H_NONE;
	int r = onepanel_signal(op, oc->reload_signal);
	if (r) {
		snprintf(ca->fail_reason, sizeof(ca->fail_reason), "cannot signal onepanel (pid %d): %s", ca->pid,
			 strerror(-r));
		return false;
	}
	uint64_t now = loop_now_ms();
	ca->deadline = now + oc->reload_timeout_ms;
	ca->settle_until = now + (SETTLE_MS < oc->reload_timeout_ms ? SETTLE_MS : oc->reload_timeout_ms / 2);
	if (!ca->timer && !(ca->timer = loop_timer_new(ca->a->loop, verify_tick, ca)))
		return false;
	loop_timer_arm(ca->timer, VERIFY_TICK_MS, VERIFY_TICK_MS);
	/* a new worker is the usual "reloaded": check at once, not next tick */
	onepanel_on_fork(op, verify_tick, ca);
	return true;
}

/* 1 reloaded, -1 failed (reason in fail_reason), 0 not yet. */
static int verify_state(struct cfgapply *ca)
{
	struct onepanel *op = ca->a->onepanel;
	struct onepanel_state st;
	onepanel_get_state(op, &st);
	if (!st.running || st.pid != ca->pid || onepanel_start_ticks(op) != ca->start_ticks) {
		snprintf(ca->fail_reason, sizeof(ca->fail_reason), "onepanel (pid %d) stopped during the reload",
			 ca->pid);
		return -1;
	}
	char line[512];
	/* During a rollback with workers to watch, log lines do not decide: the
	 * failed reload may still be logging (nginx retries bind() for ~2.5 s
	 * before it handles the rollback's signal); a new generation does. */
	bool logs_decide = !(ca->phase == P_ROLLBACK && ca->watch_workers);
	if (logs_decide && scan_logs(ca, line, sizeof(line))) {
		snprintf(ca->fail_reason, sizeof(ca->fail_reason), "onepanel logged: %.450s", line);
		return -1;
	}
	uint64_t now = loop_now_ms();
	bool reloaded = ca->watch_workers ? onepanel_forks(op) > ca->forks0 : now >= ca->settle_until;
	if (reloaded && ca->a->cfg->onepanel.health_url) {
		/* then health_url must answer 2xx; a refusal is retried until
		 * the deadline (the server may still be starting workers) */
		if (ca->hstate == H_OK)
			return 1;
		if (ca->hstate == H_NONE || ca->hstate == H_FAIL)
			health_start(ca);
	} else if (reloaded) {
		return 1;
	}
	if (now >= ca->deadline) {
		if (reloaded)
			snprintf(ca->fail_reason, sizeof(ca->fail_reason), "health_url %.200s: %s",
				 ca->a->cfg->onepanel.health_url, ca->hstate == H_FAIL ? ca->hwhy : "no answer");
		else
			snprintf(ca->fail_reason, sizeof(ca->fail_reason),
				 "no new generation of workers within reload_timeout (%llu ms)",
				 (unsigned long long)ca->a->cfg->onepanel.reload_timeout_ms);
		health_close(ca);
		return -1;
	}
	return 0;
}

static void rollback_done(struct cfgapply *ca, bool ok, const char *why)
{
	char msg[700];
	if (ok) {
		emit_simple(ca, EV_CONFIG_ROLLBACK_SUCCESS, EL_WARNING,
			    "previous configuration restored and onepanel reloaded with it");
		snprintf(msg, sizeof(msg), "reload failed (%s); previous configuration restored", ca->fail_reason);
		struct event *e = ev_new(ca, EV_CONFIG_APPLY_FAILURE, EL_ERROR, msg);
		if (e)
			event_set_field(e, "status", "reload_failed_rolled_back");
		ev_emit(ca, e);
		finish(ca, "reload_failed_rolled_back", 422, msg, NULL, NULL);
	} else {
		struct event *e = ev_new(ca, EV_CONFIG_ROLLBACK_FAILURE, EL_CRITICAL, why);
		ev_emit(ca, e);
		snprintf(msg, sizeof(msg), "reload failed (%s) and the rollback failed too: %s", ca->fail_reason, why);
		e = ev_new(ca, EV_CONFIG_APPLY_FAILURE, EL_CRITICAL, msg);
		if (e)
			event_set_field(e, "status", "rollback_failed");
		ev_emit(ca, e);
		finish(ca, "rollback_failed", 500, msg, NULL, NULL);
	}
}

static void reload_failed(struct cfgapply *ca)
{
	loop_timer_disarm(ca->timer);
	struct event *e = ev_new(ca, EV_ONEPANEL_RELOAD_FAILED, EL_ERROR, ca->fail_reason);
	if (e)
		e->pid = ca->pid;
	ev_emit(ca, e);
	if (!restore(ca)) {
		rollback_done(ca, false, "the previous files could not be restored");
		return;
	}
	struct onepanel_state st;
	onepanel_get_state(ca->a->onepanel, &st);
	if (!st.running) {
		/* Files are back; there is no process to reload. */
		emit_simple(ca, EV_CONFIG_ROLLBACK_SUCCESS, EL_WARNING,
			    "previous configuration restored; onepanel is not running, so not reloaded");
		char msg[700];
		snprintf(msg, sizeof(msg), "reload failed (%s); previous files restored; onepanel is not running",
			 ca->fail_reason);
		struct event *f = ev_new(ca, EV_CONFIG_APPLY_FAILURE, EL_ERROR, msg);
		if (f)
			event_set_field(f, "status", "reload_failed_rolled_back");
		ev_emit(ca, f);
		finish(ca, "reload_failed_rolled_back", 422, msg, NULL, NULL);
		return;
	}
	char first[512];
	snprintf(first, sizeof(first), "%s", ca->fail_reason);
	ca->phase = P_ROLLBACK;
	ca->mark = now_us();
	if (!signal_and_watch(ca)) {
		rollback_done(ca, false, ca->fail_reason);
		return;
	}
	snprintf(ca->fail_reason, sizeof(ca->fail_reason), "%s", first);
}

static void verify_tick(void *arg)
{
	struct cfgapply *ca = arg;
	if (ca->phase != P_VERIFYING && ca->phase != P_ROLLBACK)
		return;
	char first[512];
	snprintf(first, sizeof(first), "%s", ca->fail_reason);
	int v = verify_state(ca);
	if (v == 0)
		return;
	lap(ca, &ca->us_reload);
	if (ca->phase == P_VERIFYING) {
		if (v > 0) {
			loop_timer_disarm(ca->timer);
			ca->reloaded = true;
			struct event *e = ev_new(ca, EV_ONEPANEL_RELOAD_SUCCESS, EL_INFO, "onepanel reloaded");
			if (e)
				e->pid = ca->pid;
			ev_emit(ca, e);
			emit_simple(ca, EV_CONFIG_APPLY_SUCCESS, EL_INFO, "configuration applied");
			finish(ca, "applied", 200, "configuration applied and onepanel reloaded", NULL, NULL);
		} else {
			reload_failed(ca);
		}
		return;
	}
	/* P_ROLLBACK */
	loop_timer_disarm(ca->timer);
	char why[512];
	snprintf(why, sizeof(why), "%s", ca->fail_reason);
	snprintf(ca->fail_reason, sizeof(ca->fail_reason), "%s", first);
	rollback_done(ca, v > 0, why);
}

/* ---- after the validator ---- */

static void after_validate(struct cfgapply *ca, cJSON **so, int *sc)
{
	struct cfgapply_req *req = ca->req;
	if (!ca->v_ok) {
		char reason[400];
		if (ca->v_timed_out)
			snprintf(reason, sizeof(reason), "validator timed out after %llu ms",
				 (unsigned long long)ca->a->cfg->onepanel.validate_timeout_ms);
		else if (ca->v_exec_failed)
			snprintf(reason, sizeof(reason), "validator %.200s could not be run: %s",
				 ca->a->cfg->onepanel.validate_command, strerror(ca->v_errno));
		else
			snprintf(reason, sizeof(reason), "validator rejected the configuration");
		fail_apply(ca, "invalid", 422, reason, so, sc);
		return;
	}
	if (req->dry_run) {
		if (!restore(ca)) {
			finish(ca, "rollback_failed", 500, "dry run: the previous files could not be restored", so, sc);
			return;
		}
		finish(ca, "dry_run_ok", 200, "configuration is valid; previous files restored, nothing reloaded", so,
		       sc);
		return;
	}
	struct onepanel_state st;
	onepanel_get_state(ca->a->onepanel, &st);
	if (req->reload && ca->was_running &&
	    (!st.running || st.pid != ca->start_pid ||
	     onepanel_start_ticks(ca->a->onepanel) != ca->start_start_ticks)) {
		char reason[200];
		snprintf(reason, sizeof(reason), "onepanel (pid %d) stopped during the apply", ca->start_pid);
		ev_emit(ca, ev_new(ca, EV_ONEPANEL_RELOAD_FAILED, EL_ERROR, reason));
		fail_apply(ca, "reload_failed_rolled_back", 422, reason, so, sc);
		return;
	}
	if (!req->reload || !st.running) {
		const char *why = !req->reload ? "configuration written and validated; not reloaded (reload: false)"
					       : "configuration written and validated; onepanel is not running, so "
						 "it was not reloaded";
		emit_simple(ca, EV_CONFIG_APPLY_SUCCESS, EL_INFO, why);
		finish(ca, "applied", 200, why, so, sc);
		return;
	}
	ca->phase = P_VERIFYING;
	ca->mark = now_us();
	if (!signal_and_watch(ca)) {
		char reason[600];
		snprintf(reason, sizeof(reason), "%s", ca->fail_reason);
		struct event *e = ev_new(ca, EV_ONEPANEL_RELOAD_FAILED, EL_ERROR, reason);
		ev_emit(ca, e);
		fail_apply(ca, "reload_failed_rolled_back", 422, reason, so, sc);
	}
}

static bool critical_output(const char *out, bool warn_too)
{
	for (const char *p = out; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		if (critical_line(p, n) || (warn_too && memmem(p, n, "[warn]", 6)))
			return true;
		p += n + (nl ? 1 : 0);
	}
	return false;
}

static void validator_done(void *arg, struct spawn_result *r)
{
	struct cfgapply *ca = arg;
	lap(ca, &ca->us_validate);
	ca->sp = NULL;
	ca->v_ran = true;
	ca->v_status = r->status;
	ca->v_timed_out = r->timed_out;
	ca->v_exec_failed = r->exec_failed;
	ca->v_errno = r->exec_errno;
	ca->v_output = r->output;
	r->output = NULL;
	ca->v_ok = spawn_result_ok(r) &&
		   !critical_output(ca->v_output, ca->a->cfg->onepanel.validate_fail_on_warn);
	after_validate(ca, NULL, NULL);
}

/* ---- start ---- */

static int code_for(int err)
{
	switch (err) {
	case -EINVAL: return 400;
	case -EFBIG: return 413;
	case -ENOMEM: return 500;
	default: return 403;
	}
}

/* true when limit applies started in the last RATE_WINDOW_MS (*retry_ms:
 * until the oldest leaves the window); otherwise this one is counted. */
static bool rate_limited(struct cfgapply *ca, size_t limit, uint64_t *retry_ms)
{
	uint64_t now = loop_now_ms();
	while (ca->rate_n && now - ca->rate_ms[ca->rate_head] >= RATE_WINDOW_MS) {
		ca->rate_head = (ca->rate_head + 1) % RATE_MAX;
		ca->rate_n--;
	}
	if (limit > RATE_MAX)
		limit = RATE_MAX;
	if (ca->rate_n >= limit) {
		/* the oldest that must leave for one more to fit */
		size_t i = (ca->rate_head + ca->rate_n - limit) % RATE_MAX;
		*retry_ms = RATE_WINDOW_MS - (now - ca->rate_ms[i]);
		return true;
	}
	ca->rate_ms[(ca->rate_head + ca->rate_n) % RATE_MAX] = now;
	ca->rate_n++;
	return false;
}

int cfgapply_start(struct cfgapply *ca, struct cfgapply_req *req, cfgapply_done_fn fn, void *arg, cJSON **result,
		   int *http_status)
{
	const struct onepanel_config *oc = &ca->a->cfg->onepanel;
	char err[600];
	if (ca->phase != P_IDLE) {
		char id[33];
		new_id(id);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "correlation_id", id);
		cJSON_AddStringToObject(o, "status", "busy");
		cJSON_AddStringToObject(o, "message", "another config apply is running; nothing was changed");
		log_info("audit: config apply %s from %s: busy (refused)", id, req->peer);
		cfgapply_req_free(req);
		*result = o;
		*http_status = 409;
		return 1;
	}
	uint64_t retry_ms = 0;
	if (rate_limited(ca, ca->a->cfg->api.limits.applies_per_minute, &retry_ms)) {
		char id[33];
		size_t limit = ca->a->cfg->api.limits.applies_per_minute;
		unsigned retry_s = (unsigned)((retry_ms + 999) / 1000);
		new_id(id);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "correlation_id", id);
		cJSON_AddStringToObject(o, "status", "rate_limited");
		snprintf(err, sizeof(err),
			 "%zu config applies in the last minute (api.limits.applies_per_minute); retry in %u s; nothing was "
			 "changed", limit, retry_s);
		cJSON_AddStringToObject(o, "message", err);
		cJSON_AddNumberToObject(o, "retry_after_s", retry_s);
		log_info("audit: config apply %s from %s: rate_limited (refused)", id, req->peer);
		cfgapply_req_free(req);
		*result = o;
		*http_status = 429;
		return 1;
	}
	memset(ca->seqs, 0, sizeof(ca->seqs));
	ca->nseqs = 0;
	ca->req = req;
	ca->done = fn;
	ca->arg = arg;
	ca->reloaded = false;
	ca->v_ran = ca->v_ok = false;
	ca->t0 = loop_now_ms();
	ca->mark = now_us();
	{
		struct onepanel_state st0;
		onepanel_get_state(ca->a->onepanel, &st0);
		ca->was_running = st0.running;
		ca->start_pid = st0.pid;
		ca->start_start_ticks = onepanel_start_ticks(ca->a->onepanel);
	}
	ca->us_prepare = ca->us_validate = ca->us_reload = ca->us_restore = 0;
	new_id(ca->id);

	if (!oc->configured || !oc->n_allowed_dirs) {
		finish(ca, "rejected", 403, "no onepanel.allowed_dirs configured: the agent manages no files", result,
		       http_status);
		return 1;
	}
	/* 1. Every path checked before anything is touched. */
	char (*resolved)[PATH_MAX] = calloc(req->nfiles, PATH_MAX);
	if (!resolved) {
		finish(ca, "rejected", 500, "out of memory", result, http_status);
		return 1;
	}
	for (size_t i = 0; i < req->nfiles; i++) {
		bool exists;
		int r = cfgfs_check_path(oc->allowed_dirs, oc->n_allowed_dirs, req->files[i].path, resolved[i],
					 PATH_MAX, &exists, err, sizeof(err));
		if (!r && req->files[i].del && !exists) {
			snprintf(err, sizeof(err), "%.400s: cannot delete a file that does not exist",
				 req->files[i].path);
			r = -ENOENT;
		}
		if (r) {
			free(resolved);
			int code = r == -ENOENT && !req->files[i].del ? 403 : code_for(r);
			/* ".." is an attempt to leave the allowed dirs, not a typo */
			const char *pth = req->files[i].path;
			if (r == -EINVAL && (strstr(pth, "/../") || strncmp(pth, "../", 3) == 0 ||
					     (strlen(pth) >= 3 && strcmp(pth + strlen(pth) - 3, "/..") == 0) ||
					     strcmp(pth, "..") == 0))
				code = 403;
			finish(ca, code == 400 ? "malformed" : code == 413 ? "too_large" : "rejected", code, err, result,
			       http_status);
			return 1;
		}
		for (size_t k = 0; k < i; k++)
			if (strcmp(resolved[k], resolved[i]) == 0) {
				snprintf(err, sizeof(err), "%.400s: the same file is named twice", req->files[i].path);
				free(resolved);
				finish(ca, "malformed", 400, err, result, http_status);
				return 1;
			}
	}
	/* 2. Back up, then write. */
	ca->txn = cfgfs_txn_new(0);
	int r = ca->txn ? 0 : -ENOMEM;
	for (size_t i = 0; !r && i < req->nfiles; i++)
		r = cfgfs_txn_backup(ca->txn, resolved[i]);
	if (r) {
		snprintf(err, sizeof(err), "cannot back up the current files: %s",
			 ca->txn ? cfgfs_txn_error(ca->txn) : strerror(-r));
		free(resolved);
		cfgfs_txn_free(ca->txn);
		ca->txn = NULL;
		finish(ca, "write_failed", 500, err, result, http_status);
		return 1;
	}
	for (size_t i = 0; !r && i < req->nfiles; i++)
		r = req->files[i].del ? cfgfs_txn_delete(ca->txn, resolved[i])
				      : cfgfs_txn_write(ca->txn, resolved[i], req->files[i].data, req->files[i].len);
	free(resolved);
	if (r) {
		snprintf(err, sizeof(err), "writing the new files failed (%s); previous files restored",
			 cfgfs_txn_error(ca->txn));
		fail_apply(ca, "write_failed", r == -ENOSPC || r == -EDQUOT ? 507 : 500, err, result, http_status);
		return 1;
	}
	/* 3. Validate. */
	lap(ca, &ca->us_prepare);
	if (!oc->validate_command) {
		ca->v_ok = true;
		after_validate(ca, result, http_status);
		return ca->phase == P_IDLE;
	}
	char **argv = NULL;
	r = config_split_command(oc->validate_command, oc->config_file, &argv);
	if (!r)
		r = spawn_start(ca->a->loop, argv, oc->validate_timeout_ms, MAX_VALIDATOR_OUTPUT, validator_done, ca,
				&ca->sp);
	config_free_argv(argv);
	if (r) {
		ca->v_ran = true;
		ca->v_exec_failed = true;
		ca->v_errno = -r;
		after_validate(ca, result, http_status);
		return 1;
	}
	ca->phase = P_VALIDATING;
	return 0;
}

void cfgapply_abort(struct cfgapply *ca)
{
	if (!ca || ca->phase == P_IDLE)
		return;
	spawn_cancel(ca->sp);
	ca->sp = NULL;
	fail_apply(ca, "aborted", 503, "the agent is shutting down; previous files restored", NULL, NULL);
}

void cfgapply_free(struct cfgapply *ca)
{
	if (!ca)
		return;
	if (ca->phase != P_IDLE) {
		spawn_cancel(ca->sp);
		restore(ca);
		ca->done = NULL;
	}
	reset(ca);
	free(ca);
}

/* ---- reading ---- */

struct cJSON *cfgapply_list_json(struct agent *a, int *http_status)
{
	const struct onepanel_config *oc = &a->cfg->onepanel;
	struct cfgfs_entry *e = NULL;
	size_t n = 0;
	bool trunc = false;
	*http_status = 200;
	struct cfgfs_limits lim;
	cfgapply_limits(a, &lim);
	if (oc->n_allowed_dirs && cfgfs_list(oc->allowed_dirs, oc->n_allowed_dirs, &lim, &e, &n, &trunc)) {
		*http_status = 500;
		return NULL;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(o, "files");
	for (size_t i = 0; i < n; i++) {
		cJSON *f = cJSON_CreateObject();
		char ns[32];
		cJSON_AddStringToObject(f, "path", e[i].path);
		cJSON_AddNumberToObject(f, "size", (double)e[i].size);
		char mode[8];
		snprintf(mode, sizeof(mode), "%04o", e[i].mode);
		cJSON_AddStringToObject(f, "mode", mode);
		snprintf(ns, sizeof(ns), "%lld", (long long)e[i].mtime_ns);
		cJSON_AddRawToObject(f, "mtime_unix_nano", ns);
		cJSON_AddStringToObject(f, "sha256", e[i].sha256);
		if (e[i].too_large)
			cJSON_AddBoolToObject(f, "too_large", true);
		cJSON_AddItemToArray(arr, f);
	}
	cJSON_AddBoolToObject(o, "truncated", trunc);
	cfgfs_list_free(e, n);
	return o;
}

/* Text that a JSON string can carry as is: well-formed UTF-8 (no overlong
 * forms, surrogates or values past U+10FFFF) without NUL bytes. */
static bool valid_utf8(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint32_t cp, min;
		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

struct cJSON *cfgapply_file_json(struct agent *a, const char *path, int *http_status)
{
	const struct onepanel_config *oc = &a->cfg->onepanel;
	char resolved[PATH_MAX], err[600];
	bool exists = false;
	cJSON *o = cJSON_CreateObject();
	int r = path ? cfgfs_check_path(oc->allowed_dirs, oc->n_allowed_dirs, path, resolved, sizeof(resolved), &exists,
					err, sizeof(err))
		     : -EINVAL;
	if (!path)
		snprintf(err, sizeof(err), "query parameter path is required");
	if (!oc->n_allowed_dirs && path) {
		r = -EACCES;
		snprintf(err, sizeof(err), "no onepanel.allowed_dirs configured");
	}
	if (!r && !exists) {
		r = -ENOENT;
		snprintf(err, sizeof(err), "%.400s: no such file", path);
	}
	uint8_t *data = NULL;
	size_t len = 0;
	struct cfgfs_limits lim;
	cfgapply_limits(a, &lim);
	if (!r && (r = cfgfs_read(resolved, lim.max_file_bytes, &data, &len)))
		snprintf(err, sizeof(err), "%.400s: %s", path, strerror(-r));
	if (r) {
		*http_status = r == -EINVAL ? 400 : r == -ENOENT ? 404 : r == -EFBIG ? 413 : 403;
		cJSON_AddStringToObject(o, "error", err);
		cJSON_AddNumberToObject(o, "status", *http_status);
		return o;
	}
	char hex[65];
	sha256_hex(data, len, hex);
	cJSON_AddStringToObject(o, "path", resolved);
	cJSON_AddNumberToObject(o, "size", (double)len);
	cJSON_AddStringToObject(o, "sha256", hex);
	if (valid_utf8(data, len)) {
		cJSON_AddStringToObject(o, "content", (const char *)data);
	} else {
		size_t bl;
		char *b64 = cfgfs_base64_encode(data, len, &bl);
		cJSON_AddStringToObject(o, "content_base64", b64 ? b64 : "");
		free(b64);
	}
	free(data);
	*http_status = 200;
	return o;
}
