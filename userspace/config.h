/* The agent's own configuration (YAML, libyaml).
 *
 * config_load builds a complete, validated struct agent_config or nothing:
 * any unknown key, wrong type or impossible value fails the whole load with
 * "file:line: message" (1-based line of the offending key or value) in err.
 * That makes SIGHUP reload a plain swap: build the new one, keep the old one
 * on failure. The struct owns every string and array in it; config_free
 * releases all of it (accepts NULL). Absent keys take the defaults below. */
#ifndef OS_CONFIG_H
#define OS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH "/etc/oneshield-agent/agent.yaml"
#define CONFIG_DEFAULT_TOKEN_FILE "/etc/oneshield-agent/token"

struct log_spec {
	char *path;   /* absolute */
	char *format; /* access logs: "combined" (default), "common", "json", a log_format string, or an
	               * escape=json log_format ('{"status":"$status",...}'); NULL for error logs */
	bool from_start;   /* read the file present at start from its beginning (default: from its end) */
	size_t max_line;   /* longer lines are counted as truncated; default 64 KiB, 256..16 MiB */
	char **patterns;   /* error logs: extra substrings ('*' wildcard) that make a record; may be NULL */
	size_t npatterns;
};

struct onepanel_config {
	bool configured;         /* the onepanel: section is present and names a process */
	char *binary;            /* absolute executable path that identifies the process, or NULL */
	char *name;              /* process name (comm, <= 15 chars) when no binary is given, or NULL */
	char *pid_file;          /* optional; used first when present */
	char *config_file;       /* absolute path or NULL */
	char **allowed_dirs;     /* absolute, normalised (no trailing '/', no "." or ".." parts) */
	size_t n_allowed_dirs;
	char *validate_command;  /* may contain {config}; NULL when absent */
	char *version_command;   /* prints onepanel's version (opversion.h); may contain {config}; NULL: off */
	int reload_signal;       /* signal number; default SIGHUP. Names: HUP, SIGHUP, USR1, USR2, ... or a number */
	uint64_t reload_timeout_ms; /* default 5000; 100ms..10min */
	uint64_t validate_timeout_ms; /* default 30000; 100ms..10min */
	/* config apply limits: per file (default 4 MiB), all files (16 MiB), count (256) */
	size_t max_file_bytes;
	size_t max_total_bytes;
	size_t max_files;
	/* a [warn] line in the validator's output fails it too (default false) */
	bool validate_fail_on_warn;
	/* optional http://host:port/path that must answer 2xx after a reload */
	char *health_url;
	struct log_spec *access_logs;
	size_t n_access_logs;
	struct log_spec *error_logs;
	size_t n_error_logs;
};

/* api.limits: bounds on what one request or peer may use (issue 8 §4). A
 * request over one gets a JSON error and changes nothing. */
struct api_limits {
	size_t max_header_bytes;      /* REST: names + values of the request's headers; default 16 KiB,
	                               * 1 KiB..1 MiB; 431 beyond */
	size_t max_body_bytes;        /* REST bodies but a config apply's (sized from onepanel.max_*);
	                               * default 64 KiB, 1 KiB..16 MiB; 413 beyond */
	size_t max_json_depth;        /* nesting of a REST JSON body; default 32, 2..1000; 400 beyond */
	size_t max_connections_per_peer; /* REST connections from one address; default 64, 1..10000;
	                                  * more are closed at accept */
	size_t applies_per_minute;    /* config applies started (REST and gRPC) in any 60 s; default 30,
	                               * 1..10000; 429 / RESOURCE_EXHAUSTED beyond */
	size_t grpc_max_message_bytes;/* gRPC request size; default 1 MiB, 4 KiB..64 MiB; RESOURCE_EXHAUSTED */
	size_t max_streams_per_peer;  /* long-lived streams one peer (IP address; "unix" for every
	                               * unix-socket client) holds at once, counted apart for REST SSE
	                               * and gRPC Subscribe + StreamMetrics; default 16, 1..10000;
	                               * 429 / RESOURCE_EXHAUSTED (API_PEER_STREAMS_FMT) beyond */
};

/* The refusal of a stream over api.limits.max_streams_per_peer, the same
 * words in REST and gRPC: the peer's address, the limit. */
#define API_PEER_STREAMS_FMT "too many streams from %s (at most %zu per peer: api.limits.max_streams_per_peer)"

struct api_config {
	char *rest_listen;       /* "host:port", "[v6]:port"; default 127.0.0.1:9440; "" or "off" disables */
	char *grpc_listen;       /* default 127.0.0.1:9441; "" or "off" disables */
	size_t max_sse_clients;  /* default 64, 1..10000 */
	size_t max_subscribers;  /* gRPC Subscribe streams; default 256, 1..10000 */
	/* TLS for both REST and gRPC (absolute paths to PEM files, read by
	 * tls.c at start and on SIGHUP). cert_file and key_file go together;
	 * client_ca_file (needs them) makes client certificates required;
	 * crl_file (needs client_ca_file): revoked client certificates. */
	struct api_tls_config {
		char *cert_file;
		char *key_file;
		char *client_ca_file;
		char *crl_file;
	} tls;
	/* A non-loopback listener without TLS, or without auth, is refused
	 * unless this says it is meant (default false). */
	bool insecure;
	struct api_limits limits;
	/* authentication (auth.h); issue 8 */
	bool auth;               /* default true: every call but /healthz (and /metrics) needs a bearer token */
	char *token_file;        /* default CONFIG_DEFAULT_TOKEN_FILE; generated when absent */
	bool metrics_auth;       /* default false: GET /metrics without a token */
	char *rest_socket;       /* unix socket for REST, or NULL; its file mode is the credential */
	char *grpc_socket;       /* unix socket for gRPC, or NULL */
	unsigned socket_mode;    /* default 0600 */
};

struct metrics_config {
	uint64_t interval_ms;    /* default 1000; 100ms..1h. Durations: "1s", "500ms", "2m", "1h" or an integer of seconds */
};

struct events_config {
	size_t journal_size;     /* default 4096, 16..1048576 */
};

/* eBPF: process events (tracepoints, always on), scheduler delay of
 * onepanel (every context switch of the host), syscall investigations (on
 * demand). Environment ONESHIELD_FORCE_PROCFS=1 overrides enabled. */
struct ebpf_config {
	bool enabled;                 /* default true; false = procfs mode */
	bool scheduler_delay;         /* default true */
	uint64_t syscall_probe_max_ms;/* longest investigation; default 300 s; 1s..24h */
	bool syscall_probe_always_on; /* default false: attach only during an investigation */
};

/* The push to One Shield (mgmt.proto's ManagementPlane.Connect); off
 * unless address is set. */
struct oneshield_config {
	char *address;            /* "host:port" (a DNS name is fine) or "unix:/path"; NULL = off */
	char *token_file;         /* bearer token sent as "authorization: Bearer ..."; NULL = none */
	char *agent_id;           /* NULL: generated once and kept in spool_dir/agent-id */
	char **labels;            /* "key=value" entries, sent in Hello.labels */
	size_t nlabels;
	uint64_t report_interval_ms; /* metrics snapshot period; default 15 s; 1s..1h */
	char *spool_dir;          /* default /var/lib/oneshield-agent */
	size_t spool_max_bytes;   /* default 64 MiB; 64 KiB..64 GiB */
	uint64_t retry_max_ms;    /* longest wait between connection attempts; default 60 s; 100ms..1h */
	uint64_t keepalive_time_ms;    /* HTTP/2 PING after this long without a frame; default 30 s; 1s..1h */
	uint64_t keepalive_timeout_ms; /* no PING ack within this: connection dead; default 10 s; 1s..5m */
	struct oneshield_tls_config {
		bool enabled;     /* set by any key below, or "enabled: true" (system roots) */
		char *ca_file;    /* PEM roots to verify the server with; NULL: the system's */
		char *server_name;/* name the certificate must carry; NULL: the address's host */
		char *cert_file;  /* client certificate (mTLS), with key_file */
		char *key_file;
	} tls;
};

/* Least privilege (privs.h). Read at start only: a dropped capability
 * cannot come back, so a SIGHUP change takes effect at the next start. */
struct security_config {
	bool drop_capabilities;       /* default true; false keeps every capability (debugging) */
};

struct agent_config {
	char *path;              /* the file it was loaded from (or the name given to config_parse) */
	struct onepanel_config onepanel;
	struct api_config api;
	struct metrics_config metrics;
	struct events_config events;
	struct ebpf_config ebpf;
	struct oneshield_config oneshield;
	struct security_config security;
};

/* 0 on success (*out set); -errno / -EINVAL with err filled ("file:line: message"). */
int config_load(const char *path, struct agent_config **out, char *err, size_t errlen);
/* Same on an in-memory document; name is used in messages and as ->path. */
int config_parse(const char *text, size_t len, const char *name, struct agent_config **out, char *err, size_t errlen);
/* A config with all defaults and no onepanel (for running with no file). */
struct agent_config *config_default(void);
void config_free(struct agent_config *c);

/* Helpers also used elsewhere: 0 or -EINVAL. */
int config_parse_duration_ms(const char *s, uint64_t *out_ms);
/* "http://127.0.0.1:8080/healthz" (numeric host or localhost) -> parts. */
int config_parse_http_url(const char *s, char *host, size_t hostlen, uint16_t *port, char *path, size_t pathlen);
/* "65536", "64KiB", "4MiB", "1G" -> bytes. */
int config_parse_bytes(const char *s, uint64_t *out);
int config_parse_signal(const char *s, int *out_sig);
/* Split "host:port" / "[v6]:port"; host must be a numeric address. */
int config_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port);
/* A listen address on 127.0.0.0/8, ::1 (or ::ffff:127.x) or "localhost";
 * 0.0.0.0 and :: are not loopback. false for an unparsable address. */
bool config_listen_is_loopback(const char *listen);

/* Split a command line (onepanel.validate_command) into a NULL-terminated
 * argv for execv; it is never given to a shell. Words are separated by
 * whitespace; '...' is literal, "..." is literal except for \" and \\, and
 * a backslash outside quotes escapes the next character. Every "{config}"
 * in a word is replaced by config_path (left as is when config_path is
 * NULL), so a path with spaces or shell metacharacters stays one argument.
 * 0, -EINVAL (empty command, unterminated quote, trailing backslash) or
 * -ENOMEM; *argv_out is NULL on error. Free with config_free_argv. */
int config_split_command(const char *cmd, const char *config_path, char ***argv_out);
void config_free_argv(char **argv); /* accepts NULL */

#endif
