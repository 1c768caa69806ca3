/* REST API (libmicrohttpd + cJSON), driven from the core loop.
 *
 * libmicrohttpd runs without its own threads: its epoll fd sits in the core
 * loop and MHD_run is called when it is readable or its timeout expires, so
 * handlers run on the loop's thread and read agent state directly.
 * Event streams (SSE) are journal cursors: a connection with nothing to send
 * is suspended (no busy loop) and resumed by the journal listener when a
 * matching event arrives, or by the heartbeat timer, which also notices peers
 * that went away. */
#ifndef OS_REST_H
#define OS_REST_H

#include <stddef.h>

struct agent;
struct rest;

/* listen: "host:port" (numeric host) or NULL; sock_path: a unix socket to
 * serve too (or NULL), created with sock_mode, where the file's permissions
 * are the credential (no token asked; the peer's uid is recorded); removed
 * by rest_stop. 0 or -errno with err filled. */
int rest_start(struct agent *a, const char *listen, const char *sock_path, unsigned sock_mode, size_t max_sse,
	       struct rest **out, char *err, size_t errlen);
/* Streams deliver what is left (e.g. AGENT_STOP_MESSAGE) and then end. */
void rest_begin_shutdown(struct rest *r);
size_t rest_sse_clients(const struct rest *r);
void rest_stop(struct rest *r);                       /* accepts NULL */
unsigned short rest_port(const struct rest *r);  /* the TCP listener's; 0 without */

#endif
