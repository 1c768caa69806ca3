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
struct api_limits;
struct rest;
struct tls_creds;

/* listen: "host:port" (numeric host) or NULL; sock_path: a unix socket to
 * serve too (or NULL), created with sock_mode, where the file's permissions
 * are the credential (no token asked; the peer's uid is recorded); removed
 * by rest_stop. tls: serve HTTPS only on the TCP listener, with client
 * certificates required when it has a client CA; NULL for plain HTTP; it
 * must stay valid until rest_stop. lim (copied) bounds each request and
 * peer. 0 or -errno with err filled. */
int rest_start(struct agent *a, const char *listen, const char *sock_path, unsigned sock_mode, size_t max_sse,
	       const struct tls_creds *tls, const struct api_limits *lim, struct rest **out, char *err,
	       size_t errlen);
/* Streams deliver what is left (e.g. AGENT_STOP_MESSAGE) and then end. */
void rest_begin_shutdown(struct rest *r);
size_t rest_sse_clients(const struct rest *r);
void rest_stop(struct rest *r);                       /* accepts NULL */
unsigned short rest_port(const struct rest *r);  /* the TCP listener's; 0 without */
/* Serve a connected stream socket as if accepted from 127.0.0.1 (the HTTP
 * fuzz target feeds requests through a socketpair). Takes fd, also on
 * failure; 0 or -ECONNREFUSED. */
int rest_add_connection(struct rest *r, int fd);

#endif
