/* Agent state to protobuf bytes (oneshield.agent.v1 messages).
 *
 * Shared by the gRPC server and, later, the One Shield client. Each function
 * appends one serialized message to out and returns 0 or -ENOMEM. The
 * intermediate protobuf-c structs live in an arena freed before returning:
 * a metrics snapshot is hundreds of small messages, and one free beats
 * hundreds. */
#ifndef OS_PBCONV_H
#define OS_PBCONV_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct agent;
struct event;
struct metrics;
struct cJSON;

int pb_event(const struct event *e, struct buf *out);
int pb_status(const struct agent *a, struct buf *out);
/* From the JSON documents the REST API serves (cfgapply.c builds them), so
 * both APIs say the same thing. */
int pb_config_listing(const struct cJSON *j, struct buf *out);
int pb_config_file(const struct cJSON *j, struct buf *out);
int pb_apply_result(const struct cJSON *j, struct buf *out);
/* A SyscallInvestigation from probes_json() (GET /v1/probes/syscalls). */
int pb_syscall_investigation(const struct cJSON *j, struct buf *out);

int pb_metrics(const struct metrics *m, const char *prefix, int64_t time_unix_nano, struct buf *out);

/* An ApplyConfigRequest as the request config apply takes (peer: who asks,
 * for the audit log). 0 or -ENOMEM; limits are checked by the caller
 * (cfgapply_req_check). */
struct Oneshield__Agent__V1__ApplyConfigRequest;
struct cfgapply_req;
int pb_apply_request(const struct Oneshield__Agent__V1__ApplyConfigRequest *req, const char *peer,
		     struct cfgapply_req **out);
/* gRPC status code numbers: of an HTTP status the REST API answers with,
 * and of probes_start's return value (agent.proto documents both). */
int pb_code_from_http(int http);
int pb_code_from_probes(int rc);

/* A received gRPC message's bytes, copied into malloc'd *data (never NULL
 * on success, even for 0 bytes): 0, -EINVAL (an unreadable buffer, e.g.
 * one compressed with an unknown algorithm) or -ENOMEM. */
struct grpc_byte_buffer;
int pb_read_message(struct grpc_byte_buffer *bb, uint8_t **data, size_t *len);

#endif
