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

struct api_config {
	char *rest_listen;       /* "host:port", "[v6]:port"; default 127.0.0.1:9440; "" or "off" disables */
	char *grpc_listen;       /* default 127.0.0.1:9441; "" or "off" disables */
	size_t max_sse_clients;  /* default 64, 1..10000 */
	size_t max_subscribers;  /* gRPC Subscribe streams; default 256, 1..10000 */
	/* authentication (auth.h); issue 8 */
	bool auth;               /* default true: every call but /healthz (and /metrics) needs a bearer token */
	char *token_file;        /* default CONFIG_DEFAULT_TOKEN_FILE; generated when absent */
	bool metrics_auth;       /* default false: GET /metrics without a token */
	bool insecure;           /* default false: a non-loopback listener without auth refuses to start */
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

struct agent_config {
	char *path;              /* the file it was loaded from (or the name given to config_parse) */
	struct onepanel_config onepanel;
	struct api_config api;
	struct metrics_config metrics;
	struct events_config events;
	struct ebpf_config ebpf;
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
/* A valid listen address on 127.0.0.0/8 or ::1 (also ::ffff:127.x.y.z). */
bool config_listen_is_loopback(const char *s);

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
