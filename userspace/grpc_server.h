/* gRPC API (gRPC C core + protobuf-c): oneshield.agent.v1.Agent and server
 * reflection.
 *
 * Threads: gRPC's completion queue needs a thread blocked in
 * grpc_completion_queue_next; that "pump" thread hands each completion
 * (tag, success) to the core loop through a locked queue and an eventfd.
 * Decoding requests, reading agent state, answering, freeing calls: all on
 * the core loop's thread. One exception, for throughput: a Subscribe
 * stream's next message is sent by the pump thread itself as soon as the
 * previous one completes, from events the core loop serialized for it or
 * from the journal under the journal's lock (grpc_server.c says how the two
 * threads share a stream); the core loop keeps everything else, EVENTS_LOST
 * accounting included.
 *
 * Streams are journal cursors with at most one send in flight per call: a
 * subscriber that stops reading holds no queue of ours; when it reads again
 * it gets an EVENTS_LOST_MESSAGE with the exact count it missed. */
#ifndef OS_GRPC_SERVER_H
#define OS_GRPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct agent;
struct grpc_api;
struct mgmt;
struct metrics;
struct cJSON;

/* The gRPC side (this file's implementation, pbconv.c, reflection.c and the
 * generated protobuf code) is built as a plugin, oneshield-agent-grpc.so,
 * loaded only when api.grpc_listen is set: gRPC's C core and its libraries
 * (abseil, re2, OpenSSL, libstdc++) cost ~8 MiB of resident pages just by
 * being loaded, which a REST-only agent should not pay. grpc_plugin.c in
 * the agent binary finds and loads it and forwards the calls below; without
 * a plugin loaded they report 0 streams and do nothing. */
#define GRPC_PLUGIN_ABI 2
struct grpc_plugin_ops {
	int abi;
	int (*start)(struct agent *a, const char *listen, size_t max_subscribers, struct grpc_api **out, char *err,
		     size_t errlen);
	void (*begin_shutdown)(struct grpc_api *g);
	size_t (*streams)(const struct grpc_api *g);
	size_t (*subscribers)(const struct grpc_api *g);
	int (*port)(const struct grpc_api *g);
	void (*stop)(struct grpc_api *g);
	/* the One Shield client (mgmt.h) */
	int (*mgmt_start)(struct agent *a, struct mgmt **out, char *err, size_t errlen);
	void (*mgmt_begin_shutdown)(struct mgmt *m);
	bool (*mgmt_sending)(const struct mgmt *m);
	void (*mgmt_stop)(struct mgmt *m);
	void (*mgmt_status_json)(const struct mgmt *m, struct cJSON *status);
	int (*mgmt_collect)(const struct mgmt *m, struct metrics *out);
};
extern const struct grpc_plugin_ops oneshield_grpc_plugin;

/* listen: "host:port". 0 or -errno with err filled. */
int grpc_api_start(struct agent *a, const char *listen, size_t max_subscribers, struct grpc_api **out, char *err,
		   size_t errlen);
/* Streams deliver what is left (AGENT_STOP_MESSAGE) and end with status OK. */
void grpc_api_begin_shutdown(struct grpc_api *g);
size_t grpc_api_streams(const struct grpc_api *g);
size_t grpc_api_subscribers(const struct grpc_api *g);
/* Cancels what is still open, stops the server and joins its thread. */
void grpc_api_stop(struct grpc_api *g);  /* accepts NULL */
int grpc_api_port(const struct grpc_api *g);

#endif
