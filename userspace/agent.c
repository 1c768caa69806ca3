#include "agent.h"
#include "mgmt.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "onepanel.h"
#include "opversion.h"
#include "probes.h"
#include "logwatch.h"
#include "procfs.h"
#include "privs.h"
#include "rest.h"
#include "grpc_server.h"

static void iso_time(double unix_s, char *out, size_t len)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

cJSON *agent_status_json(const struct agent *a)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	char ts[40], host[256] = "";
	gethostname(host, sizeof(host) - 1);
	cJSON_AddStringToObject(o, "version", OS_VERSION);
	cJSON_AddStringToObject(o, "hostname", host);
	cJSON_AddNumberToObject(o, "pid", getpid());
	iso_time(a->started_unix, ts, sizeof(ts));
	cJSON_AddStringToObject(o, "started_at", ts);
	cJSON_AddNumberToObject(o, "uptime_seconds", (double)(loop_now_ms() - a->started_mono_ms) / 1000.0);
	struct onepanel_state st;
	onepanel_get_state(a->onepanel, &st);
	cJSON_AddStringToObject(o, "mode", st.mode);
	if (st.mode_reason[0])
		cJSON_AddStringToObject(o, "mode_reason", st.mode_reason);
	cJSON_AddStringToObject(o, "config_path", a->cfg->path ? a->cfg->path : "");
	cJSON *eb = cJSON_AddObjectToObject(o, "ebpf");
	cJSON_AddStringToObject(eb, "process_events", st.process_events);
	cJSON_AddStringToObject(eb, "process_events_transport", st.process_events_transport);
	cJSON_AddStringToObject(eb, "scheduler_delay", st.scheduler_delay);
	if (st.scheduler_delay_reason[0])
		cJSON_AddStringToObject(eb, "scheduler_delay_reason", st.scheduler_delay_reason);
	if (a->probes)
		cJSON_AddStringToObject(eb, "syscall_investigation", probes_state(a->probes));

	cJSON *op = cJSON_AddObjectToObject(o, "onepanel");
	cJSON_AddBoolToObject(op, "configured", st.configured);
	cJSON_AddStringToObject(op, "state", !st.configured ? "not_configured" : st.running ? "running" : "stopped");
	if (st.running) {
		cJSON_AddNumberToObject(op, "pid", st.pid);
		cJSON_AddStringToObject(op, "exe", st.exe);
		iso_time(st.start_time, ts, sizeof(ts));
		cJSON_AddStringToObject(op, "started_at", ts);
	}
	if (st.configured) {
		iso_time(st.since, ts, sizeof(ts));
		cJSON_AddStringToObject(op, "since", ts);
		cJSON_AddNumberToObject(op, "restarts", (double)st.restarts);
		cJSON_AddStringToObject(op, "tracking", st.tracking);
		if (st.workers >= 0)
			cJSON_AddNumberToObject(op, "workers", (double)st.workers);
		if (a->cfg->onepanel.binary)
			cJSON_AddStringToObject(op, "binary", a->cfg->onepanel.binary);
		if (a->cfg->onepanel.config_file)
			cJSON_AddStringToObject(op, "config_file", a->cfg->onepanel.config_file);
		opversion_status_json(a->opversion, op);
	}
	if (st.has_last_exit) {
		cJSON *le = cJSON_AddObjectToObject(op, "last_exit");
		if (st.last_exit_signal)
			cJSON_AddNumberToObject(le, "signal", st.last_exit_signal);
		else
			cJSON_AddNumberToObject(le, "exit_code", st.last_exit_code);
	}

	if (a->logs) {
		cJSON *lj = logwatch_status_json(a->logs);
		if (lj)
			cJSON_AddItemToObject(op, "logs", lj);
	}

	cJSON *ev = cJSON_AddObjectToObject(o, "events");
	cJSON_AddNumberToObject(ev, "first_seq", (double)journal_first_seq(a->journal));
	cJSON_AddNumberToObject(ev, "last_seq", (double)journal_last_seq(a->journal));
	cJSON_AddNumberToObject(ev, "capacity", (double)journal_capacity(a->journal));
	cJSON_AddNumberToObject(ev, "lost_by_subscribers", (double)a->events_lost_subscribers);

	cJSON *m = cJSON_AddObjectToObject(o, "metrics");
	cJSON_AddNumberToObject(m, "interval_seconds", (double)a->cfg->metrics.interval_ms / 1000.0);
	cJSON_AddNumberToObject(m, "collections", (double)a->collections);
	cJSON_AddNumberToObject(m, "last_collect_seconds", a->last_collect_seconds);
	cJSON_AddNumberToObject(m, "series", a->snapshot ? (double)metrics_sample_count(a->snapshot) : 0);

	/* read back from the kernel, not remembered: what the agent holds now */
	struct privs_state ps;
	if (privs_read(&ps) == 0) {
		char num[16];
		cJSON *sec = cJSON_AddObjectToObject(o, "security");
		cJSON_AddBoolToObject(sec, "drop_capabilities", a->cfg->security.drop_capabilities);
		cJSON *caps = cJSON_AddArrayToObject(sec, "capabilities");
		cJSON *bnd = cJSON_AddArrayToObject(sec, "bounding_set");
		for (int cap = 0; cap < 64; cap++) {
			if (ps.effective & PRIVS_BIT(cap))
				cJSON_AddItemToArray(caps, cJSON_CreateString(privs_cap_name(cap, num, sizeof(num))));
			if (ps.bounding & PRIVS_BIT(cap))
				cJSON_AddItemToArray(bnd, cJSON_CreateString(privs_cap_name(cap, num, sizeof(num))));
		}
		cJSON_AddBoolToObject(sec, "no_new_privs", ps.no_new_privs);
	}

	cJSON *api = cJSON_AddObjectToObject(o, "api");
	cJSON_AddStringToObject(api, "rest_listen", a->cfg->api.rest_listen ? a->cfg->api.rest_listen : "off");
	cJSON_AddStringToObject(api, "grpc_listen", a->cfg->api.grpc_listen ? a->cfg->api.grpc_listen : "off");
	cJSON_AddNumberToObject(api, "grpc_streams", (double)grpc_api_streams(a->grpc));
	cJSON_AddNumberToObject(api, "grpc_subscribers", (double)grpc_api_subscribers(a->grpc));
	mgmt_status_json(a->mgmt, o);
	if (a->cfg->api.rest_socket)
		cJSON_AddStringToObject(api, "rest_socket", a->cfg->api.rest_socket);
	if (a->cfg->api.grpc_socket)
		cJSON_AddStringToObject(api, "grpc_socket", a->cfg->api.grpc_socket);
	if (a->auth) {
		cJSON *au = cJSON_AddObjectToObject(api, "auth");
		cJSON_AddBoolToObject(au, "enabled", a->auth->enabled);
		if (a->auth->enabled) {
			cJSON_AddStringToObject(au, "token_file", a->cfg->api.token_file);
			cJSON_AddNumberToObject(au, "tokens", a->auth->tokens ? (double)a->auth->tokens->n : 0);
		} else {
			cJSON_AddStringToObject(au, "warning", "API authentication is OFF (api.auth: false): any local "
					       "user can use this API, config apply included");
		}
		cJSON_AddBoolToObject(au, "metrics_auth", a->auth->metrics_auth);
		cJSON_AddNumberToObject(au, "refused", (double)a->auth->failures);
		cJSON_AddNumberToObject(au, "throttled", (double)a->auth->throttled);
	}
	return o;
}

static void collect_self(struct agent *a, struct metrics *m)
{
	struct proc_info pi;
	metrics_declare(m, "oneshield_agent_info", MT_GAUGE, "Agent version and mode; always 1.");
	metrics_add(m, "oneshield_agent_info", 1, "version", OS_VERSION, "mode", a->mode, NULL);
	metrics_declare(m, "oneshield_agent_start_time_seconds", MT_GAUGE, "Start time of the agent, unix seconds.");
	metrics_add(m, "oneshield_agent_start_time_seconds", a->started_unix, NULL);
	if (procfs_read_proc("/proc", getpid(), &pi) == 0) {
		metrics_declare(m, "oneshield_agent_cpu_seconds_total", MT_COUNTER, "CPU time used by the agent by mode.");
		metrics_add(m, "oneshield_agent_cpu_seconds_total", pi.cpu_user_seconds, "mode", "user", NULL);
		metrics_add(m, "oneshield_agent_cpu_seconds_total", pi.cpu_system_seconds, "mode", "system", NULL);
		metrics_declare(m, "oneshield_agent_resident_memory_bytes", MT_GAUGE, "Resident set size of the agent.");
		metrics_add(m, "oneshield_agent_resident_memory_bytes", (double)pi.rss_bytes, NULL);
		if (pi.open_fds >= 0) {
			metrics_declare(m, "oneshield_agent_open_fds", MT_GAUGE, "Open file descriptors of the agent.");
			metrics_add(m, "oneshield_agent_open_fds", (double)pi.open_fds, NULL);
		}
	}
	metrics_declare(m, "oneshield_agent_events_total", MT_COUNTER, "Events journaled, by type.");
	for (int t = 1; t < EV__COUNT; t++)
		metrics_add(m, "oneshield_agent_events_total",
			    (double)journal_count_by_type(a->journal, (enum event_type)t), "type",
			    event_type_name((enum event_type)t), NULL);
	metrics_declare(m, "oneshield_agent_events_lost_total", MT_COUNTER,
			"Events skipped by stream subscribers that fell behind the journal.");
	metrics_add(m, "oneshield_agent_events_lost_total", (double)a->events_lost_subscribers, NULL);
	metrics_declare(m, "oneshield_agent_event_stream_clients", MT_GAUGE, "Open REST event streams (SSE).");
	metrics_add(m, "oneshield_agent_event_stream_clients", (double)rest_sse_clients(a->rest), NULL);
	metrics_declare(m, "oneshield_agent_config_reloads_total", MT_COUNTER, "Agent config reloads by result.");
	metrics_add(m, "oneshield_agent_config_reloads_total", (double)a->config_reloads, "result", "success", NULL);
	metrics_add(m, "oneshield_agent_config_reloads_total", (double)a->config_reload_failures, "result", "failure",
		    NULL);
	if (a->auth) {
		metrics_declare(m, "oneshield_agent_auth_refused_total", MT_COUNTER,
				"API calls refused for authentication, by reason.");
		metrics_add(m, "oneshield_agent_auth_refused_total", (double)a->auth->failures, "reason", "token", NULL);
		metrics_add(m, "oneshield_agent_auth_refused_total", (double)a->auth->throttled, "reason", "backoff",
			    NULL);
	}
	metrics_declare(m, "oneshield_agent_collect_duration_seconds", MT_GAUGE,
			"Time the previous metric collection took.");
	metrics_add(m, "oneshield_agent_collect_duration_seconds", a->last_collect_seconds, NULL);
}

int agent_collect(struct agent *a)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct metrics *m = metrics_new();
	if (!m)
		return -1;
	procfs_collect_host(m, "/proc");
	onepanel_collect(a->onepanel, m);
	if (a->probes)
		probes_collect(a->probes, m);
	if (a->logs)
		logwatch_collect(a->logs, m);
	opversion_collect(a->opversion, m);
	collect_self(a, m);
	mgmt_collect(a->mgmt, m);
	metrics_free(a->snapshot);
	a->snapshot = m;
	a->collections++;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	a->last_collect_seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	return 0;
}
