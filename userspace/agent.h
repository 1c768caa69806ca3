/* The agent's state, owned by the core loop's thread.
 *
 * main.c builds it, the modules borrow it: REST (and later gRPC requests
 * relayed to the loop) read it only from the loop's thread, so nothing here
 * is locked. The metric snapshot is rebuilt whole at every interval and
 * swapped in, so readers always see one complete collection. */
#ifndef OS_AGENT_H
#define OS_AGENT_H

#include <stdbool.h>
#include <stdint.h>

struct agent_config;
struct cJSON;
struct journal;
struct loop;
struct metrics;
struct onepanel;
struct rest;
struct grpc_api;
struct cfgapply;
struct probes;
struct logwatch;
struct mgmt;
struct tls_creds;
struct auth;

struct agent {
	struct agent_config *cfg;
	const char *config_path;  /* as given on the command line */
	struct loop *loop;
	struct journal *journal;
	struct onepanel *onepanel;
	struct rest *rest;
	struct grpc_api *grpc;
	struct cfgapply *cfgapply;
	struct probes *probes;    /* syscall investigations */
	struct logwatch *logs;    /* onepanel's access and error logs */
	struct opversion *opversion; /* onepanel's version (onepanel.version_command) */
	struct mgmt *mgmt;        /* the push to One Shield, when configured */
	struct auth *auth;        /* API tokens and the peer limiter (auth.h) */
	struct metrics *snapshot; /* last complete collection, never NULL once started */
	/* api.tls as read at start or the last SIGHUP (NULL: plaintext); a
	 * new one bumps tls_gen, which the gRPC plugin watches (grpc_server.c). */
	struct tls_creds *tls;
	unsigned tls_gen;
	const char *mode;         /* "procfs" (no eBPF) or "ebpf" */
	double started_unix;
	uint64_t started_mono_ms;
	uint64_t collections;
	double last_collect_seconds;
	uint64_t events_lost_subscribers; /* events skipped by slow stream readers */
	uint64_t config_reloads, config_reload_failures;
	bool stopping;
};

/* GET /v1/status body (and the gRPC Status later). */
struct cJSON *agent_status_json(const struct agent *a);
/* Build a fresh snapshot (host, onepanel, agent) and swap it in. */
int agent_collect(struct agent *a);

#endif
