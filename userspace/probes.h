/* Syscall investigations of onepanel: on demand, bounded, then detached.
 *
 * An investigation attaches the syscall tracepoints (sysprobe.h) for
 * onepanel's processes (the master and its workers, followed as they come
 * and go), and detaches by itself after the requested duration, at most
 * ebpf.syscall_probe_max_duration. While attached, every syscall of every
 * process on the host takes the kernel's slow path (see PLATFORM.md and
 * make bench-ebpf), which is why nothing is attached otherwise, unless the
 * operator sets ebpf.syscall_probe_always_on.
 *
 * A second start while one runs is refused (-EBUSY, HTTP 409) with the time
 * left: extending silently would let one caller keep the host slow for
 * another. Starting needs eBPF mode and a running onepanel (-ESRCH: tracing
 * nobody would only slow the host down).
 *
 * Results stay readable after the end (GET /v1/probes/syscalls) until the
 * next start; /metrics carries them while running and for FRESH_S seconds
 * after. The kernel side is loaded at the first start and kept (its maps
 * are ~172 KiB per CPU), so a later start is one attach.
 *
 * Owned by the core loop; nothing here blocks longer than a few bpf()
 * calls. */
#ifndef OS_PROBES_H
#define OS_PROBES_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;
struct ebpf_config;
struct loop;
struct metrics;
struct onepanel;

#define PROBES_FRESH_S 300

struct probes;

/* eb is copied. With syscall_probe_always_on (and eBPF mode) it attaches
 * now; failures are logged and shown in the status. */
struct probes *probes_new(struct loop *l, struct onepanel *op, const struct ebpf_config *eb);
void probes_free(struct probes *p); /* accepts NULL; detaches */
/* Agent config reload: new maximum, always-on switched on or off. */
void probes_reconfigure(struct probes *p, const struct ebpf_config *eb);

/* Start an investigation of duration_s seconds (1..max). 0 on success;
 * -EINVAL (duration), -EBUSY (one runs, or always on), -ESRCH (onepanel not
 * running), -EOPNOTSUPP (procfs mode), -errno from loading; err says it in
 * one sentence. */
int probes_start(struct probes *p, double duration_s, char *err, size_t errlen);
/* {"state": "idle"|"running"|"finished"|"always_on"|"unavailable", "reason"?,
 *  "mode"?, "max_duration_s", "requested_s"?, "started_at"?, "ends_at"?,
 *  "ended_at"?, "ran_s"?, "targets"?, "syscalls": [...], "drops": N} */
struct cJSON *probes_json(struct probes *p);
/* The "state" of probes_json() alone, without reading the kernel's maps
 * (for /v1/status and GetStatus). Static storage. */
const char *probes_state(const struct probes *p);
/* Adds the investigation's families while running and FRESH_S after. */
int probes_collect(struct probes *p, struct metrics *m);
bool probes_running(const struct probes *p);

#endif
