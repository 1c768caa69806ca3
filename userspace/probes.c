/* Syscall investigations: the timer and the process set around sysprobe
 * (see probes.h for the contract). */
#include "probes.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "onepanel.h"
#include "sysprobe.h"

#define MAX_TARGETS 4096

enum state { ST_IDLE, ST_RUNNING, ST_FINISHED, ST_ALWAYS_ON };

struct probes {
	struct loop *loop;
	struct onepanel *op;
	struct ebpf_config eb;
	struct sysprobe *sp;
	struct loop_timer *timer;
	enum state state;
	char reason[256];         /* why the last start/load failed */
	double requested_s;
	double started_unix, ends_unix, ended_unix;
	uint64_t started_mono_ms, ended_mono_ms;
	bool listening;
};

static double now_unix(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_procs(void *arg, pid_t tgid, bool added)
{
	struct probes *p = arg;
	if (!p->sp)
		return;
	int rc = added ? sysprobe_add_target(p->sp, tgid) : sysprobe_remove_target(p->sp, tgid);
	if (rc && rc != -ENOENT)
		log_debug("probes: target %d: %s", tgid, strerror(-rc));
}

/* Load the kernel side once, with the current process set as targets. */
static int ensure_loaded(struct probes *p, char *err, size_t errlen)
{
	if (p->sp)
		return 0;
	if (strcmp(onepanel_mode(p->op), "ebpf") != 0) {
		snprintf(err, errlen, "syscall investigations need eBPF mode (the agent runs in procfs mode)");
		return -EOPNOTSUPP;
	}
	char why[200] = "";
	int rc = sysprobe_open(&p->sp, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "cannot load the syscall probes: %s", why[0] ? why : strerror(-rc));
		return rc;
	}
	if (!p->listening && onepanel_on_procs(p->op, on_procs, p) == 0)
		p->listening = true;
	pid_t pids[MAX_TARGETS];
	size_t n = onepanel_procs(p->op, pids, MAX_TARGETS);
	for (size_t i = 0; i < n; i++)
		on_procs(p, pids[i], true);
	return 0;
}

static void finish(struct probes *p)
{
	sysprobe_detach(p->sp);
	p->state = ST_FINISHED;
	p->ended_unix = now_unix();
	p->ended_mono_ms = loop_now_ms();
	log_info("syscall investigation finished after %.1f s",
		 (double)(p->ended_mono_ms - p->started_mono_ms) / 1000.0);
}

static void timer_fired(void *arg)
{
	struct probes *p = arg;
	if (p->state == ST_RUNNING)
		finish(p);
}

static void set_always_on(struct probes *p)
{
	char err[256];
	int rc = ensure_loaded(p, err, sizeof(err));
	if (!rc)
		rc = sysprobe_attach(p->sp);
	if (rc && rc != -EALREADY) {
		if (!p->sp || !err[0])
			snprintf(err, sizeof(err), "cannot attach the syscall probes: %s", strerror(-rc));
		snprintf(p->reason, sizeof(p->reason), "%s", err);
		log_warn("ebpf.syscall_probe_always_on: %s", err);
		return;
	}
	p->state = ST_ALWAYS_ON;
	p->started_unix = now_unix();
	p->started_mono_ms = loop_now_ms();
	p->reason[0] = '\0';
	log_info("syscall probes attached permanently (ebpf.syscall_probe_always_on)");
}

struct probes *probes_new(struct loop *l, struct onepanel *op, const struct ebpf_config *eb)
{
	struct probes *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->loop = l;
	p->op = op;
	p->eb = *eb;
	p->timer = loop_timer_new(l, timer_fired, p);
	if (!p->timer) {
		free(p);
		return NULL;
	}
	if (eb->syscall_probe_always_on)
		set_always_on(p);
	return p;
}

void probes_free(struct probes *p)
{
	if (!p)
		return;
	if (p->listening)
		onepanel_off_procs(p->op, on_procs, p);
	loop_timer_free(p->loop, p->timer);
	sysprobe_close(p->sp); /* detaches */
	free(p);
}

void probes_reconfigure(struct probes *p, const struct ebpf_config *eb)
{
	bool was = p->eb.syscall_probe_always_on;
	p->eb = *eb;
	if (eb->syscall_probe_always_on && !was) {
		loop_timer_disarm(p->timer);
		set_always_on(p);
	} else if (!eb->syscall_probe_always_on && was && p->state == ST_ALWAYS_ON) {
		finish(p);
	}
}

bool probes_running(const struct probes *p)
{
	return p->state == ST_RUNNING || p->state == ST_ALWAYS_ON;
}

int probes_start(struct probes *p, double duration_s, char *err, size_t errlen)
{
	double max_s = (double)p->eb.syscall_probe_max_ms / 1000.0;
	err[0] = '\0';
	if (!(duration_s >= 1 && duration_s <= max_s)) {
		snprintf(err, errlen, "duration_s must be between 1 and %.0f (ebpf.syscall_probe_max_duration)", max_s);
		return -EINVAL;
	}
	if (p->state == ST_ALWAYS_ON) {
		snprintf(err, errlen, "the syscall probes are always on (ebpf.syscall_probe_always_on)");
		return -EBUSY;
	}
	if (p->state == ST_RUNNING) {
		snprintf(err, errlen, "an investigation is running; it ends in %.1f s", p->ends_unix - now_unix());
		return -EBUSY;
	}
	if (!p->sp && strcmp(onepanel_mode(p->op), "ebpf") != 0) {
		snprintf(err, errlen, "syscall investigations need eBPF mode (the agent runs in procfs mode)");
		return -EOPNOTSUPP;
	}
	struct onepanel_state st;
	onepanel_get_state(p->op, &st);
	if (!st.running) {
		snprintf(err, errlen, "onepanel is not running: there is nothing to investigate");
		return -ESRCH;
	}
	int rc = ensure_loaded(p, err, errlen);
	if (rc)
		return rc;
	rc = sysprobe_attach(p->sp);
	if (rc) {
		snprintf(err, errlen, "cannot attach the syscall probes: %s", strerror(-rc));
		return rc;
	}
	uint64_t ms = (uint64_t)(duration_s * 1000.0 + 0.5);
	if (loop_timer_arm(p->timer, ms, 0)) {
		sysprobe_detach(p->sp);
		snprintf(err, errlen, "cannot arm the investigation timer");
		return -EIO;
	}
	p->state = ST_RUNNING;
	p->requested_s = duration_s;
	p->started_unix = now_unix();
	p->started_mono_ms = loop_now_ms();
	p->ends_unix = p->started_unix + duration_s;
	log_info("syscall investigation started for %.1f s (%zu processes)", duration_s,
		 sysprobe_target_count(p->sp));
	return 0;
}

static void add_time(cJSON *o, const char *key, double unix_s)
{
	char ts[40];
	time_t t = (time_t)unix_s;
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)((unix_s - (double)t) * 1000.0));
	cJSON_AddStringToObject(o, key, ts);
}

static bool unavailable(const struct probes *p)
{
	return !p->sp && strcmp(onepanel_mode(p->op), "ebpf") != 0;
}

const char *probes_state(const struct probes *p)
{
	static const char *const names[] = { "idle", "running", "finished", "always_on" };
	return unavailable(p) ? "unavailable" : names[p->state];
}

cJSON *probes_json(struct probes *p)
{
	cJSON *o = NULL;
	if (p->sp && p->state != ST_IDLE) {
		int err = 0;
		o = sysprobe_to_json(p->sp, &err);
	}
	if (!o) {
		o = cJSON_CreateObject();
		if (!o)
			return NULL;
		cJSON_AddItemToObject(o, "syscalls", cJSON_CreateArray());
	}
	cJSON_AddStringToObject(o, "state", probes_state(p));
	if (unavailable(p))
		cJSON_AddStringToObject(o, "reason", "syscall investigations need eBPF mode");
	else if (p->reason[0])
		cJSON_AddStringToObject(o, "reason", p->reason);
	cJSON_AddNumberToObject(o, "max_duration_s", (double)p->eb.syscall_probe_max_ms / 1000.0);
	if (p->state == ST_IDLE)
		return o;
	add_time(o, "started_at", p->started_unix);
	if (p->state == ST_RUNNING || p->state == ST_FINISHED) {
		cJSON_AddNumberToObject(o, "requested_s", p->requested_s);
		add_time(o, "ends_at", p->ends_unix);
	}
	uint64_t end = p->state == ST_FINISHED ? p->ended_mono_ms : loop_now_ms();
	cJSON_AddNumberToObject(o, "ran_s", (double)(end - p->started_mono_ms) / 1000.0);
	if (p->state == ST_FINISHED)
		add_time(o, "ended_at", p->ended_unix);
	if (p->sp)
		cJSON_AddNumberToObject(o, "targets", (double)sysprobe_target_count(p->sp));
	return o;
}

int probes_collect(struct probes *p, struct metrics *m)
{
	if (!p->sp)
		return 0;
	bool fresh = probes_running(p) ||
		     (p->state == ST_FINISHED && loop_now_ms() - p->ended_mono_ms < PROBES_FRESH_S * 1000ULL);
	metrics_declare(m, "oneshield_agent_syscall_investigation_running", MT_GAUGE,
			"1 while syscall tracepoints are attached (every syscall on the host is slower then).");
	metrics_add(m, "oneshield_agent_syscall_investigation_running", probes_running(p) ? 1 : 0, NULL);
	return fresh ? sysprobe_collect(p->sp, m) : 0;
}
