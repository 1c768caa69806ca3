/* The push to One Shield: the agent as a client of the management plane
 * (proto/oneshield/mgmt/v1/mgmt.proto, ManagementPlane.Connect).
 *
 * When oneshield.address is configured the agent keeps one stream open to
 * the server for as long as it can: Hello, then its events (from the spool,
 * in spool_seq order, each until acknowledged), a MetricsSnapshot every
 * report interval, and the answers to the server's commands, which run
 * through the same code as the Agent service's RPCs (config apply with all
 * its checks, status, config listing, syscall investigations).
 *
 * Delivery: every journaled event is appended to an on-disk spool
 * (spool.h) as it is journaled (a journal listener), before anything is
 * sent; it leaves the spool only when the server acknowledges it (an Ack
 * counts up to what this client sent, or the HelloAck claimed). Outages
 * and agent restarts lose nothing below the spool's cap; past the cap the
 * oldest are dropped, counted, and announced to the server as EventsLost.
 * Loss before the spool (the journal outran it, or an append failed) is
 * spooled as an EVENTS_LOST_MESSAGE event naming the journal seqs.
 *
 * Connection: a new channel per attempt (so the agent's own backoff, not
 * gRPC's, decides when to retry): exponential from 500 ms to
 * oneshield.retry_max with "equal jitter" (a uniform wait in [d/2, d]); a
 * stream that got its HelloAck resets it. A server that refuses the token
 * (UNAUTHENTICATED / PERMISSION_DENIED) gets one clear log line and retries
 * at five times retry_max (at most an hour). The token file is read at every
 * attempt, so a rotated token is picked up without a reload.
 *
 * Threads: the calls' completion queue has a thread of its own blocked in
 * grpc_completion_queue_next, which hands completions to the core loop
 * through a locked queue and an eventfd; everything else (the spool, the
 * agent's state, commands) is on the core loop's thread, which never blocks
 * on the network.
 *
 * Built into the gRPC plugin (grpc_server.h) with the server as
 * mgmt_plugin_*; the agent calls the mgmt_* below, which grpc_plugin.c
 * forwards (loading the plugin when needed). */
#ifndef OS_MGMT_H
#define OS_MGMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;
struct mgmt;
struct metrics;
struct cJSON;

/* Opens the spool (spool_dir/events), the agent id, and starts connecting.
 * 0 or -errno with err filled ("oneshield: ..."). */
int mgmt_start(struct agent *a, struct mgmt **out, char *err, size_t errlen);
/* The agent is stopping: AGENT_STOP is in the spool; send what can be sent. */
void mgmt_begin_shutdown(struct mgmt *m);
/* Connected, with spooled events not yet sent: worth waiting for at shutdown. */
bool mgmt_sending(const struct mgmt *m);
/* Cancels the stream, closes the spool, joins the thread. Accepts NULL. */
void mgmt_stop(struct mgmt *m);
/* "oneshield" object of /v1/status. */
void mgmt_status_json(const struct mgmt *m, struct cJSON *status);
/* oneshield_agent_mgmt_* families. */
int mgmt_collect(const struct mgmt *m, struct metrics *out);

/* The plugin's side (mgmt.c), reached through struct grpc_plugin_ops. */
int mgmt_plugin_start(struct agent *a, struct mgmt **out, char *err, size_t errlen);
void mgmt_plugin_begin_shutdown(struct mgmt *m);
bool mgmt_plugin_sending(const struct mgmt *m);
void mgmt_plugin_stop(struct mgmt *m);
void mgmt_plugin_status_json(const struct mgmt *m, struct cJSON *status);
int mgmt_plugin_collect(const struct mgmt *m, struct metrics *out);
/* GetStatus's oneshield (pbconv.c); the strings point into m. */
struct Oneshield__Agent__V1__OneshieldStatus;
void mgmt_plugin_status_pb(const struct mgmt *m, struct Oneshield__Agent__V1__OneshieldStatus *o);

#ifdef ONESHIELD_FUZZ
/* The fuzzing seam, compiled only into fuzz targets (the Makefile's
 * $(BUILD)/fuzz/% rule defines ONESHIELD_FUZZ): a client with everything of
 * mgmt_plugin_start (spool fed from the journal, timers on a->loop) but no
 * gRPC. Its stream is a fake: each message the agent sends is handed to
 * sent (borrowed, valid during the call), each message of the server is
 * fed with mgmt_fuzz_deliver, and completions run on the caller's thread. */
struct spool;
typedef void (*mgmt_fuzz_sent_fn)(void *arg, const uint8_t *msg, size_t len);
/* Opens the client and its first stream (Hello is sent). 0 or -errno. */
int mgmt_fuzz_open(struct agent *a, mgmt_fuzz_sent_fn sent, void *arg, struct mgmt **out, char *err,
		   size_t errlen);
/* After the stream ended: the next attempt now (as the retry timer would
 * later). 0 when a stream is up, or -EPIPE (the client is shutting down). */
int mgmt_fuzz_reconnect(struct mgmt *m);
/* The server sends msg on the stream: 0, or -EPIPE when it ended. */
int mgmt_fuzz_deliver(struct mgmt *m, const uint8_t *msg, size_t len);
/* The server ends the stream with this gRPC status code. */
void mgmt_fuzz_end_stream(struct mgmt *m, int code);
/* Handles completions queued by code the loop ran (an apply finishing). */
void mgmt_fuzz_flush(struct mgmt *m);
struct spool *mgmt_fuzz_spool(const struct mgmt *m);
/* Ends the stream and frees the client (mgmt_plugin_stop). */
void mgmt_fuzz_close(struct mgmt *m);
#endif

#endif
