/* Unit tests for the configuration loader (userspace/config.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const char full_example[] =
	"onepanel:\n"							/* 1 */
	"  binary: /usr/sbin/nginx           # absolute executable path\n"
	"  name: nginx\n"
	"  pid_file: /run/nginx.pid\n"
	"  config_file: /etc/nginx/nginx.conf\n"			/* 5 */
	"  allowed_dirs: [/etc/nginx, //srv//www/, /]\n"
	"  validate_command: \"/usr/sbin/nginx -t -c {config}\"\n"
	"  reload_signal: HUP\n"
	"  reload_timeout: 5s\n"
	"  access_logs:\n"						/* 10 */
	"    - { path: /var/log/nginx/access.log, format: combined }\n"
	"    - { path: /var/log/nginx/api.log }\n"
	"    - path: /var/log/nginx/json.log\n"
	"      format: json\n"
	"  error_logs:\n"						/* 15 */
	"    - { path: /var/log/nginx/error.log }\n"
	"api:\n"
	"  rest_listen: 127.0.0.1:9440\n"
	"  grpc_listen: \"[::1]:9441\"\n"
	"  max_sse_clients: 64\n"					/* 20 */
	"  max_subscribers: 256\n"
	"metrics:\n"
	"  interval: 1s\n"
	"events:\n"
	"  journal_size: 4096\n";

static struct agent_config *parse_ok(const char *text)
{
	struct agent_config *c = NULL;
	char err[512] = "";
	int rc = config_parse(text, strlen(text), "t.yaml", &c, err, sizeof(err));

	if (rc)
		print_error("unexpected error %d: %s\n", rc, err);
	assert_int_equal(rc, 0);
	assert_non_null(c);
	return c;
}

static void test_full_example(void **state)
{
	struct agent_config *c = parse_ok(full_example);
	const struct onepanel_config *op = &c->onepanel;

	(void)state;
	assert_string_equal(c->path, "t.yaml");
	assert_true(op->configured);
	assert_string_equal(op->binary, "/usr/sbin/nginx");
	assert_string_equal(op->name, "nginx");
	assert_string_equal(op->pid_file, "/run/nginx.pid");
	assert_string_equal(op->config_file, "/etc/nginx/nginx.conf");
	assert_int_equal(op->n_allowed_dirs, 3);
	assert_string_equal(op->allowed_dirs[0], "/etc/nginx");
	assert_string_equal(op->allowed_dirs[1], "/srv/www");
	assert_string_equal(op->allowed_dirs[2], "/");
	assert_string_equal(op->validate_command, "/usr/sbin/nginx -t -c {config}");
	assert_int_equal(op->reload_signal, SIGHUP);
	assert_int_equal(op->reload_timeout_ms, 5000);
	assert_int_equal(op->n_access_logs, 3);
	assert_string_equal(op->access_logs[0].path, "/var/log/nginx/access.log");
	assert_string_equal(op->access_logs[0].format, "combined");
	assert_string_equal(op->access_logs[1].path, "/var/log/nginx/api.log");
	assert_string_equal(op->access_logs[1].format, "combined");
	assert_string_equal(op->access_logs[2].path, "/var/log/nginx/json.log");
	assert_string_equal(op->access_logs[2].format, "json");
	assert_int_equal(op->n_error_logs, 1);
	assert_string_equal(op->error_logs[0].path, "/var/log/nginx/error.log");
	assert_null(op->error_logs[0].format);
	assert_string_equal(c->api.rest_listen, "127.0.0.1:9440");
	assert_string_equal(c->api.grpc_listen, "[::1]:9441");
	assert_int_equal(c->api.max_sse_clients, 64);
	assert_int_equal(c->api.max_subscribers, 256);
	assert_true(c->api.auth);
	assert_string_equal(c->api.token_file, "/etc/oneshield-agent/token");
	assert_false(c->api.metrics_auth);
	assert_false(c->api.insecure);
	assert_null(c->api.rest_socket);
	assert_null(c->api.grpc_socket);
	assert_int_equal(c->api.socket_mode, 0600);
	assert_int_equal(c->metrics.interval_ms, 1000);
	assert_int_equal(c->events.journal_size, 4096);
	config_free(c);
}

static void check_defaults(const struct agent_config *c)
{
	const struct onepanel_config *op = &c->onepanel;

	assert_false(op->configured);
	assert_null(op->binary);
	assert_null(op->name);
	assert_null(op->pid_file);
	assert_null(op->config_file);
	assert_null(op->allowed_dirs);
	assert_int_equal(op->n_allowed_dirs, 0);
	assert_null(op->validate_command);
	assert_int_equal(op->reload_signal, SIGHUP);
	assert_int_equal(op->reload_timeout_ms, 5000);
	assert_int_equal(op->n_access_logs, 0);
	assert_int_equal(op->n_error_logs, 0);
	assert_string_equal(c->api.rest_listen, "127.0.0.1:9440");
	assert_string_equal(c->api.grpc_listen, "127.0.0.1:9441");
	assert_int_equal(c->api.max_sse_clients, 64);
	assert_int_equal(c->api.max_subscribers, 256);
	assert_true(c->api.auth);
	assert_string_equal(c->api.token_file, "/etc/oneshield-agent/token");
	assert_false(c->api.metrics_auth);
	assert_false(c->api.insecure);
	assert_null(c->api.rest_socket);
	assert_null(c->api.grpc_socket);
	assert_int_equal(c->api.socket_mode, 0600);
	assert_int_equal(c->metrics.interval_ms, 1000);
	assert_int_equal(c->events.journal_size, 4096);
}

static void test_defaults(void **state)
{
	static const char *const docs[] = {
		"{}\n",
		"api: {}\n",
		"# only empty sections\napi:\nmetrics:\nevents: ~\n",
	};
	struct agent_config *c;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(docs); i++) {
		c = parse_ok(docs[i]);
		check_defaults(c);
		config_free(c);
	}
	c = config_default();
	assert_non_null(c);
	check_defaults(c);
	config_free(c);
	config_free(NULL);
}

static void test_ebpf_section(void **state)
{
	struct agent_config *c;
	(void)state;
	c = parse_ok("api: {}\n");
	assert_true(c->ebpf.enabled);
	assert_true(c->ebpf.scheduler_delay);
	assert_int_equal(c->ebpf.syscall_probe_max_ms, 300000);
	assert_false(c->ebpf.syscall_probe_always_on);
	config_free(c);
	c = parse_ok("ebpf:\n  enabled: false\n  scheduler_delay: off\n  syscall_probe_max_duration: 1h\n"
		     "  syscall_probe_always_on: yes\n");
	assert_false(c->ebpf.enabled);
	assert_false(c->ebpf.scheduler_delay);
	assert_int_equal(c->ebpf.syscall_probe_max_ms, 3600000);
	assert_true(c->ebpf.syscall_probe_always_on);
	config_free(c);
}

static void test_oneshield_section(void **state)
{
	struct agent_config *c;
	(void)state;
	c = parse_ok("api: {}\n");
	assert_null(c->oneshield.address);
	assert_string_equal(c->oneshield.spool_dir, "/var/lib/oneshield-agent");
	assert_int_equal(c->oneshield.report_interval_ms, 15000);
	assert_int_equal(c->oneshield.spool_max_bytes, 64u << 20);
	assert_int_equal(c->oneshield.retry_max_ms, 60000);
	assert_int_equal(c->oneshield.keepalive_time_ms, 30000);
	assert_int_equal(c->oneshield.keepalive_timeout_ms, 10000);
	config_free(c);
	c = parse_ok("oneshield:\n  address: shield.example.net:443\n  token_file: /etc/t\n  agent_id: web-42\n"
		     "  labels: [region=eu-1, role=web.front]\n  report_interval: 30s\n  spool_dir: /var/spool/os\n"
		     "  spool_max_bytes: 1MiB\n  retry_max: 2m\n  keepalive_time: 1m\n  keepalive_timeout: 2s\n");
	assert_string_equal(c->oneshield.address, "shield.example.net:443");
	assert_string_equal(c->oneshield.token_file, "/etc/t");
	assert_string_equal(c->oneshield.agent_id, "web-42");
	assert_int_equal(c->oneshield.nlabels, 2);
	assert_string_equal(c->oneshield.labels[1], "role=web.front");
	assert_int_equal(c->oneshield.report_interval_ms, 30000);
	assert_string_equal(c->oneshield.spool_dir, "/var/spool/os");
	assert_int_equal(c->oneshield.spool_max_bytes, 1u << 20);
	assert_int_equal(c->oneshield.retry_max_ms, 120000);
	assert_int_equal(c->oneshield.keepalive_time_ms, 60000);
	assert_int_equal(c->oneshield.keepalive_timeout_ms, 2000);
	assert_false(c->oneshield.tls.enabled);
	config_free(c);
	c = parse_ok("oneshield:\n  address: h:1\n  tls:\n    ca_file: /ca.pem\n    server_name: shield\n");
	assert_true(c->oneshield.tls.enabled);
	assert_string_equal(c->oneshield.tls.ca_file, "/ca.pem");
	assert_string_equal(c->oneshield.tls.server_name, "shield");
	assert_null(c->oneshield.tls.cert_file);
	config_free(c);
	c = parse_ok("oneshield:\n  address: h:1\n  tls: { enabled: true }\n");
	assert_true(c->oneshield.tls.enabled);
	assert_null(c->oneshield.tls.ca_file);
	config_free(c);
	c = parse_ok("oneshield:\n  address: unix:/run/shield.sock\n");
	assert_string_equal(c->oneshield.address, "unix:/run/shield.sock");
	config_free(c);
}

static void test_api_limits(void **state)
{
	struct agent_config *c;
	(void)state;
	c = parse_ok("api: {}\n");
	assert_int_equal(c->api.limits.max_header_bytes, 16384);
	assert_int_equal(c->api.limits.max_body_bytes, 65536);
	assert_int_equal(c->api.limits.max_json_depth, 32);
	assert_int_equal(c->api.limits.max_connections_per_peer, 64);
	assert_int_equal(c->api.limits.applies_per_minute, 30);
	assert_int_equal(c->api.limits.grpc_max_message_bytes, 1u << 20);
	assert_int_equal(c->api.limits.max_streams_per_peer, 16);
	config_free(c);
	c = parse_ok("api:\n  limits:\n    max_header_bytes: 1KiB\n    max_body_bytes: 16MiB\n"
		     "    max_json_depth: 1000\n    max_connections_per_peer: 1\n    applies_per_minute: 10000\n"
		     "    grpc_max_message_bytes: 64MiB\n    max_streams_per_peer: 10000\n");
	assert_int_equal(c->api.limits.max_header_bytes, 1024);
	assert_int_equal(c->api.limits.max_body_bytes, 16u << 20);
	assert_int_equal(c->api.limits.max_json_depth, 1000);
	assert_int_equal(c->api.limits.max_connections_per_peer, 1);
	assert_int_equal(c->api.limits.applies_per_minute, 10000);
	assert_int_equal(c->api.limits.grpc_max_message_bytes, 64u << 20);
	assert_int_equal(c->api.limits.max_streams_per_peer, 10000);
	config_free(c);
	c = parse_ok("api:\n  limits:\n    max_streams_per_peer: 1\n");
	assert_int_equal(c->api.limits.max_streams_per_peer, 1);
	config_free(c);
}

static void test_security_section(void **state)
{
	struct agent_config *c;
	(void)state;
	c = parse_ok("api: {}\n");
	assert_true(c->security.drop_capabilities);
	config_free(c);
	c = parse_ok("security:\n  drop_capabilities: false\n");
	assert_false(c->security.drop_capabilities);
	config_free(c);
	c = config_default();
	assert_true(c->security.drop_capabilities);
	config_free(c);
}

static void test_onepanel_variants(void **state)
{
	struct agent_config *c;

	(void)state;
	c = parse_ok("onepanel:\n  name: nginx\n");
	assert_true(c->onepanel.configured);
	assert_string_equal(c->onepanel.name, "nginx");
	assert_null(c->onepanel.binary);
	config_free(c);

	c = parse_ok("onepanel: { pid_file: /run/x.pid, reload_signal: SIGUSR2, reload_timeout: 1.5s }\n");
	assert_true(c->onepanel.configured);
	assert_string_equal(c->onepanel.pid_file, "/run/x.pid");
	assert_int_equal(c->onepanel.reload_signal, SIGUSR2);
	assert_int_equal(c->onepanel.reload_timeout_ms, 1500);
	config_free(c);

	c = parse_ok("onepanel:\n  binary: /usr/sbin/nginx\n  reload_signal: 10\n"
		     "  allowed_dirs: []\n  access_logs:\n  error_logs: []\n"
		     "api:\n  rest_listen: off\n  grpc_listen: \"\"\n"
		     "  max_sse_clients: 10000\n  max_subscribers: 1\nmetrics:\n  interval: 1h\n"
		     "events:\n  journal_size: 16\n");
	assert_int_equal(c->onepanel.reload_signal, 10);
	assert_int_equal(c->onepanel.n_allowed_dirs, 0);
	assert_int_equal(c->onepanel.n_access_logs, 0);
	assert_null(c->api.rest_listen);
	assert_null(c->api.grpc_listen);
	assert_int_equal(c->api.max_sse_clients, 10000);
	assert_int_equal(c->api.max_subscribers, 1);
	assert_int_equal(c->metrics.interval_ms, 3600000);
	assert_int_equal(c->events.journal_size, 16);
	config_free(c);

	/* Anchors and aliases are plain YAML and allowed. */
	c = parse_ok("onepanel:\n  binary: &b /usr/sbin/nginx\n  config_file: *b\n"
		     "  access_logs: [ &l { path: /a, format: \"$remote_addr $status\" }, *l ]\n");
	assert_string_equal(c->onepanel.config_file, "/usr/sbin/nginx");
	assert_int_equal(c->onepanel.n_access_logs, 2);
	assert_string_equal(c->onepanel.access_logs[1].format, "$remote_addr $status");
	config_free(c);
}

/* ---- error paths ---- */

struct err_case {
	const char *name;
	const char *text;
	size_t line;		/* 0: "t.yaml: message" without a line */
	const char *msg;	/* substring of the message */
	int rc;			/* 0 means -EINVAL */
};

#define E(n, t, l, m) { .name = n, .text = t, .line = l, .msg = m }

static const struct err_case err_cases[] = {
	/* oneshield: */
	E("oneshield_address_no_port", "oneshield:\n  address: oneshield.example\n", 1,
	  "oneshield.address: \"oneshield.example\" is not host:port"),
	E("oneshield_address_port_0", "oneshield:\n  address: h:0\n", 1, "is not host:port"),
	E("oneshield_address_port_big", "oneshield:\n  address: h:70000\n", 1, "is not host:port"),
	E("oneshield_address_space", "oneshield:\n  address: \"a b:1\"\n", 1, "is not host:port"),
	E("oneshield_address_unix_relative", "oneshield:\n  address: unix:sock\n", 1,
	  "unix: needs an absolute path"),
	E("oneshield_label_no_eq", "oneshield:\n  address: h:1\n  labels: [region]\n", 1,
	  "oneshield.labels[0]: \"region\" is not key=value"),
	E("oneshield_label_empty_key", "oneshield:\n  address: h:1\n  labels: [a=b, =c]\n", 1,
	  "oneshield.labels[1]"),
	E("oneshield_label_bad_key", "oneshield:\n  address: h:1\n  labels: [\"a b=c\"]\n", 1,
	  "key may hold only letters"),
	E("oneshield_token_relative", "oneshield:\n  token_file: token\n", 2, "absolute"),
	E("oneshield_spool_small", "oneshield:\n  spool_max_bytes: 1KiB\n", 2, "spool_max_bytes"),
	E("oneshield_interval_small", "oneshield:\n  report_interval: 100ms\n", 2, "report_interval"),
	E("oneshield_keepalive_time_small", "oneshield:\n  keepalive_time: 500ms\n", 2,
	  "oneshield.keepalive_time: \"500ms\" is out of range (1s..1h)"),
	E("oneshield_keepalive_time_big", "oneshield:\n  keepalive_time: 2h\n", 2,
	  "oneshield.keepalive_time: \"2h\" is out of range (1s..1h)"),
	E("oneshield_keepalive_time_bad", "oneshield:\n  keepalive_time: soon\n", 2,
	  "oneshield.keepalive_time: invalid duration"),
	E("oneshield_keepalive_timeout_small", "oneshield:\n  keepalive_timeout: 0\n", 2,
	  "oneshield.keepalive_timeout: \"0\" is out of range (1s..5m)"),
	E("oneshield_keepalive_timeout_big", "oneshield:\n  keepalive_timeout: 6m\n", 2,
	  "oneshield.keepalive_timeout: \"6m\" is out of range (1s..5m)"),
	E("oneshield_keepalive_timeout_list", "oneshield:\n  keepalive_timeout: [1s]\n", 2,
	  "oneshield.keepalive_timeout: expected a scalar, got a list"),
	E("oneshield_tls_cert_without_key", "oneshield:\n  address: h:1\n  tls:\n    cert_file: /c.pem\n", 1,
	  "oneshield.tls: cert_file and key_file go together"),
	E("oneshield_tls_relative_ca", "oneshield:\n  tls:\n    ca_file: ca.pem\n", 3, "absolute"),
	E("oneshield_unknown_key", "oneshield:\n  adress: h:1\n", 2, "unknown key \"adress\" in oneshield"),
	/* unknown keys */
	E("unknown_top_key", "api: {}\nmetrics: {}\nonepanle:\n  binary: /x\n", 3,
	  "unknown key \"onepanle\" at top level"),
	E("unknown_onepanel_key", "onepanel:\n  binary: /x\n  binry: /y\n", 3,
	  "unknown key \"binry\" in onepanel"),
	E("unknown_api_key", "api:\n  rest: 1\n", 2, "unknown key \"rest\" in api"),
	E("unknown_log_key", "onepanel:\n  binary: /x\n  access_logs:\n    - path: /a\n      fmt: json\n",
	  5, "unknown key \"fmt\" in onepanel.access_logs[0]"),
	E("error_log_has_no_format", "onepanel:\n  binary: /x\n  error_logs:\n    - { path: /a }\n"
	  "    - { path: /b, format: json }\n", 5, "unknown key \"format\" in onepanel.error_logs[1]"),
	E("unknown_key_escaped", "\"a\\tb\": 1\n", 1, "unknown key \"a\\x09b\" at top level"),
	/* node types */
	E("mapping_for_scalar", "onepanel:\n  binary:\n    path: /x\n", 3,
	  "onepanel.binary: expected a scalar, got a mapping"),
	E("list_for_scalar", "metrics:\n  interval: [1s]\n", 2,
	  "metrics.interval: expected a scalar, got a list"),
	E("scalar_for_list", "onepanel:\n  binary: /x\n  allowed_dirs: /etc/nginx\n", 3,
	  "onepanel.allowed_dirs: expected a list, got a scalar"),
	E("mapping_for_list", "onepanel:\n  binary: /x\n  access_logs: { path: /a }\n", 3,
	  "onepanel.access_logs: expected a list, got a mapping"),
	E("scalar_for_log_entry", "onepanel:\n  binary: /x\n  access_logs:\n    - /var/log/a.log\n", 4,
	  "onepanel.access_logs[0]: expected a mapping, got a scalar"),
	E("list_for_section", "api:\n  - 1\n", 2, "api: expected a mapping, got a list"),
	E("scalar_for_section", "\nevents: 5\n", 2, "events: expected a mapping, got a scalar"),
	E("list_in_dirs", "onepanel:\n  binary: /x\n  allowed_dirs: [[/a]]\n", 3,
	  "onepanel.allowed_dirs[0]: expected a scalar, got a list"),
	E("non_scalar_key", "api:\n  ? [a]\n  : 1\n", 2, "api: keys must be scalars, got a list"),
	E("alias_cycle", "onepanel: &a\n  binary: /x\n  access_logs: *a\n", 1,
	  "onepanel.access_logs: expected a list, got a mapping"),
	/* duplicates */
	E("duplicate_top_key", "api: {}\nmetrics: {}\napi: {}\n", 3,
	  "duplicate key \"api\" at top level"),
	E("duplicate_onepanel_key", "onepanel:\n  binary: /x\n  name: a\n  binary: /y\n", 4,
	  "duplicate key \"binary\" in onepanel"),
	E("duplicate_quoted_key", "events:\n  journal_size: 16\n  \"journal_size\": 32\n", 3,
	  "duplicate key \"journal_size\" in events"),
	/* paths */
	E("relative_binary", "onepanel:\n  binary: usr/sbin/nginx\n", 2,
	  "onepanel.binary: \"usr/sbin/nginx\" is not an absolute path"),
	E("relative_pid_file", "onepanel:\n  name: nginx\n  pid_file: run/nginx.pid\n", 3,
	  "onepanel.pid_file: \"run/nginx.pid\" is not an absolute path"),
	E("relative_config_file", "onepanel:\n  name: nginx\n\n  config_file: nginx.conf\n", 4,
	  "onepanel.config_file: \"nginx.conf\" is not an absolute path"),
	E("relative_log_path", "onepanel:\n  name: nginx\n  access_logs:\n    - { path: /a }\n"
	  "    - { path: b.log }\n", 5, "onepanel.access_logs[1].path: \"b.log\" is not an absolute path"),
	E("empty_binary", "onepanel:\n  binary: \"\"\n", 2, "onepanel.binary: must not be empty"),
	/* a flow scalar folds CRs into a newline: refused, and the message stays one line */
	E("newline_in_log_path", "onepanel:\n  name: nginx\n  access_logs:\n    - { path: /a\r\rb.log }\n",
	  4, "onepanel.access_logs[0].path: \"/a\\x0ab.log\" contains a control character"),
	E("tab_in_pid_file", "onepanel:\n  name: nginx\n  pid_file: \"/run/a\\tb\"\n", 3,
	  "onepanel.pid_file: \"/run/a\\x09b\" contains a control character"),
	E("null_binary", "onepanel:\n  name: x\n  binary:\n", 3, "onepanel.binary: must not be empty"),
	E("empty_log_path", "onepanel:\n  name: x\n  error_logs: [ { path: '' } ]\n", 3,
	  "onepanel.error_logs[0].path: must not be empty"),
	E("missing_log_path", "onepanel:\n  name: x\n  access_logs:\n    - format: json\n", 4,
	  "onepanel.access_logs[0]: path is required"),
	E("empty_log_format", "onepanel:\n  name: x\n  access_logs:\n    - path: /a\n      format: \"\"\n",
	  5, "onepanel.access_logs[0].format: must not be empty"),
	E("nul_in_path", "onepanel:\n  binary: \"/usr/sbin/nginx\\0x\"\n", 2,
	  "onepanel.binary: value contains a NUL byte"),
	E("relative_allowed_dir", "onepanel:\n  name: x\n  allowed_dirs:\n    - /etc/nginx\n    - etc\n",
	  5, "onepanel.allowed_dirs[1]: \"etc\" is not an absolute path"),
	E("dotdot_allowed_dir", "onepanel:\n  name: x\n  allowed_dirs: [/etc/nginx/../shadow]\n", 3,
	  "onepanel.allowed_dirs[0]: \"/etc/nginx/../shadow\" must not contain \".\" or \"..\" components"),
	E("dot_allowed_dir", "onepanel:\n  name: x\n  allowed_dirs: [/etc/./nginx]\n", 3,
	  "must not contain \".\" or \"..\" components"),
	E("trailing_dotdot_allowed_dir", "onepanel:\n  name: x\n  allowed_dirs: [\"/etc/..\"]\n", 3,
	  "must not contain"),
	E("empty_allowed_dir", "onepanel:\n  name: x\n  allowed_dirs: [\"\"]\n", 3,
	  "onepanel.allowed_dirs[0]: must not be empty"),
	/* process name */
	E("name_too_long", "onepanel:\n  name: a-very-long-process-name\n", 2,
	  "onepanel.name: \"a-very-long-process-name\" is longer than 15 characters"),
	E("name_empty", "onepanel:\n  name: ''\n", 2, "onepanel.name: must not be empty"),
	/* onepanel needs a process */
	E("onepanel_without_process", "api: {}\nonepanel:\n  config_file: /etc/nginx/nginx.conf\n", 2,
	  "onepanel: one of binary, name or pid_file is required"),
	E("onepanel_null", "\n\nonepanel:\n", 3, "onepanel: one of binary, name or pid_file is required"),
	E("onepanel_empty_mapping", "onepanel: {}\n", 1, "one of binary, name or pid_file is required"),
	/* validate_command */
	E("validate_command_empty", "onepanel:\n  name: x\n  validate_command: \"\"\n", 3,
	  "onepanel.validate_command: must not be empty"),
	E("validate_command_blank", "onepanel:\n  name: x\n  validate_command: \"  \\t \"\n", 3,
	  "onepanel.validate_command: must not be empty"),
	E("validate_command_quote", "onepanel:\n  name: x\n  validate_command: nginx -t -c '{config}\n", 3,
	  "onepanel.validate_command: unterminated single quote"),
	E("validate_command_relative", "onepanel:\n  name: x\n  validate_command: nginx -t -c {config}\n", 3,
	  "onepanel.validate_command: the program \"nginx\" is not an absolute path (there is no PATH search)"),
	E("version_command_relative", "onepanel:\n  name: x\n  version_command: \"nginx -v\"\n", 3,
	  "onepanel.version_command: the program \"nginx\" is not an absolute path (there is no PATH search)"),
	E("version_command_empty", "onepanel:\n  name: x\n  version_command: \"\"\n", 3,
	  "onepanel.version_command: must not be empty"),
	E("validate_command_dquote", "onepanel:\n  name: x\n  validate_command: 'nginx -c \"x'\n", 3,
	  "onepanel.validate_command: unterminated double quote"),
	/* signals */
	E("signal_unknown", "onepanel:\n  name: x\n  reload_signal: FOO\n", 3,
	  "onepanel.reload_signal: unknown signal \"FOO\""),
	E("signal_zero", "onepanel:\n  name: x\n  reload_signal: 0\n", 3, "unknown signal \"0\""),
	E("signal_65", "onepanel:\n  name: x\n  reload_signal: 65\n", 3, "unknown signal \"65\""),
	E("signal_kill", "onepanel:\n  name: x\n  reload_signal: KILL\n", 3,
	  "onepanel.reload_signal: \"KILL\" cannot be used to reload"),
	/* durations */
	E("interval_abc", "api: {}\n\n\n\n\nmetrics:\n  interval: abc\n", 7,
	  "metrics.interval: invalid duration \"abc\" (use e.g. 500ms, 1s, 2m)"),
	E("interval_zero", "metrics:\n  interval: 0\n", 2, "metrics.interval: \"0\" is out of range (100ms..1h)"),
	E("interval_too_long", "metrics:\n  interval: 61m\n", 2, "metrics.interval: \"61m\" is out of range"),
	E("interval_negative", "metrics:\n  interval: -1s\n", 2, "invalid duration \"-1s\""),
	E("reload_timeout_short", "onepanel:\n  name: x\n  reload_timeout: 50ms\n", 3,
	  "onepanel.reload_timeout: \"50ms\" is out of range (100ms..10m)"),
	E("reload_timeout_long", "onepanel:\n  name: x\n  reload_timeout: 11m\n", 3,
	  "onepanel.reload_timeout: \"11m\" is out of range (100ms..10m)"),
	E("reload_timeout_unit", "onepanel:\n  name: x\n  reload_timeout: 5 s\n", 3,
	  "onepanel.reload_timeout: invalid duration \"5 s\""),
	/* listen addresses */
	E("port_zero", "api:\n  rest_listen: 127.0.0.1:0\n", 2,
	  "api.rest_listen: invalid listen address \"127.0.0.1:0\""),
	E("port_70000", "api:\n  grpc_listen: 127.0.0.1:70000\n", 2,
	  "api.grpc_listen: invalid listen address \"127.0.0.1:70000\""),
	E("listen_hostname", "api:\n  rest_listen: localhost:9440\n", 2,
	  "api.rest_listen: invalid listen address \"localhost:9440\""),
	E("listen_no_port", "api:\n  rest_listen: 127.0.0.1\n", 2, "invalid listen address"),
	E("listen_v6_unbracketed", "api:\n  rest_listen: \"::1:9440\"\n", 2, "invalid listen address"),
	/* numbers */
	E("journal_size_3", "events:\n  journal_size: 3\n", 2,
	  "events.journal_size: \"3\" is out of range (16..1048576)"),
	E("journal_size_big", "events:\n  journal_size: 1048577\n", 2, "is out of range (16..1048576)"),
	E("journal_size_abc", "events:\n  journal_size: 4k\n", 2, "events.journal_size: \"4k\" is not a number"),
	E("journal_size_huge", "events:\n  journal_size: 99999999999999999999999\n", 2, "is not a number"),
	E("sse_clients_zero", "api:\n  max_sse_clients: 0\n", 2,
	  "api.max_sse_clients: \"0\" is out of range (1..10000)"),
	E("subscribers_big", "api:\n  max_subscribers: 10001\n", 2,
	  "api.max_subscribers: \"10001\" is out of range (1..10000)"),
	E("sse_clients_negative", "api:\n  max_sse_clients: -5\n", 2, "api.max_sse_clients: \"-5\" is not a number"),
	/* api.tls, api.insecure */
	E("tls_relative_cert", "api:\n  tls:\n    cert_file: server.pem\n    key_file: /k\n", 3,
	  "api.tls.cert_file: \"server.pem\" is not an absolute path"),
	E("tls_empty_key", "api:\n  tls:\n    cert_file: /c\n    key_file: \"\"\n", 4,
	  "api.tls.key_file: must not be empty"),
	E("tls_cert_without_key", "api:\n  tls:\n    cert_file: /c\n", 2,
	  "api.tls: cert_file and key_file go together (key_file is missing)"),
	E("tls_key_without_cert", "api:\n  tls:\n    key_file: /k\n", 2,
	  "api.tls: cert_file and key_file go together (cert_file is missing)"),
	E("tls_ca_alone", "api:\n  tls:\n    client_ca_file: /ca\n", 2,
	  "api.tls.client_ca_file needs cert_file and key_file"),
	E("tls_crl_without_ca", "api:\n  tls: { cert_file: /c, key_file: /k, crl_file: /crl }\n", 2,
	  "api.tls.crl_file needs client_ca_file"),
	E("tls_crl_relative", "api:\n  tls: { cert_file: /c, key_file: /k, client_ca_file: /ca, crl_file: c.crl }\n", 2,
	  "api.tls.crl_file"),
	E("tls_unknown_key", "api:\n  tls:\n    ca_file: /ca\n", 3, "unknown key \"ca_file\" in api.tls"),
	E("tls_not_a_mapping", "api:\n  tls: on\n", 2, "api.tls: expected a mapping, got a scalar"),
	E("tls_duplicate", "api:\n  tls:\n    cert_file: /c\n    cert_file: /d\n", 4,
	  "duplicate key \"cert_file\" in api.tls"),
	E("insecure_word", "api:\n  insecure: please\n", 2, "api.insecure: \"please\" is not true or false"),
	E("rest_any_v4_plain", "api:\n  rest_listen: 0.0.0.0:9440\n", 1,
	  "api.rest_listen: 0.0.0.0:9440 is not a loopback address and api.tls is not configured"),
	E("grpc_any_v6_plain", "api:\n  grpc_listen: \"[::]:9441\"\n", 1,
	  "api.grpc_listen: [::]:9441 is not a loopback address and api.tls is not configured"),
	E("rest_lan_plain_insecure_false", "api:\n  rest_listen: 10.1.2.3:9440\n  insecure: false\n", 1,
	  "set api.tls (cert_file, key_file), or api.insecure: true"),
	E("grpc_mapped_lan_plain", "metrics: {}\napi:\n  grpc_listen: \"[::ffff:10.0.0.1]:9441\"\n", 2,
	  "api.grpc_listen"),
	/* api authentication (issue 8) */
	E("auth_word", "api:\n  auth: maybe\n", 2, "api.auth: \"maybe\" is not true or false"),
	E("token_file_relative", "api:\n  token_file: token\n", 2, "api.token_file: \"token\" is not an absolute path"),
	E("token_file_empty", "api:\n  token_file: \"\"\n", 2, "api.token_file: must not be empty"),
	E("metrics_auth_word", "api:\n  metrics_auth: 2\n", 2, "api.metrics_auth"),
	E("insecure_word_sure", "api:\n  insecure: sure\n", 2, "api.insecure"),
	E("rest_socket_relative", "api:\n  rest_socket: a.sock\n", 2, "api.rest_socket: \"a.sock\" is not an absolute"),
	E("grpc_socket_relative", "api:\n  grpc_socket: g.sock\n", 2, "api.grpc_socket"),
	E("socket_mode_not_octal", "api:\n  socket_mode: 0689\n", 2,
	  "api.socket_mode: \"0689\" is not a file mode (octal, e.g. 0600)"),
	E("socket_mode_too_big", "api:\n  socket_mode: 01777\n", 2, "api.socket_mode: \"01777\" is not a file mode"),
	E("socket_mode_word", "api:\n  socket_mode: rw\n", 2, "is not a file mode"),
	E("socket_mode_negative", "api:\n  socket_mode: -600\n", 2, "is not a file mode"),
	E("sockets_same_path", "api:\n  rest_socket: /run/a.sock\n  grpc_socket: /run/a.sock\n", 1,
	  "api: rest_socket and grpc_socket are the same path"),
	/* (with TLS, so that the missing auth is what is refused) */
	E("no_auth_rest_any", "api:\n  auth: false\n  rest_listen: 0.0.0.0:9440\n  tls: {cert_file: /c, key_file: /k}\n", 1,
	  "api: rest_listen \"0.0.0.0:9440\" is not a loopback address and api.auth is false"),
	E("no_auth_grpc_v6_any", "api:\n  auth: no\n  grpc_listen: \"[::]:9441\"\n  tls: {cert_file: /c, key_file: /k}\n", 1,
	  "api: grpc_listen \"[::]:9441\" is not a loopback address"),
	E("no_auth_host_ip", "api:\n  grpc_listen: 10.1.2.3:9441\n  auth: off\n  tls: {cert_file: /c, key_file: /k}\n", 1,
	  "set api.insecure: true if that is meant"),
	/* ebpf */
	E("ebpf_enabled_word", "ebpf:\n  enabled: maybe\n", 2, "ebpf.enabled"),
	E("ebpf_unknown_key", "ebpf:\n  kprobes: true\n", 2, "kprobes"),
	E("ebpf_probe_max_short", "ebpf:\n  syscall_probe_max_duration: 500ms\n", 2,
	  "ebpf.syscall_probe_max_duration: \"500ms\" is out of range"),
	E("ebpf_probe_max_long", "ebpf:\n  syscall_probe_max_duration: 25h\n", 2, "is out of range"),
	/* api.limits */
	E("limits_header_small", "api:\n  limits:\n    max_header_bytes: 1023\n", 3,
	  "api.limits.max_header_bytes: \"1023\" is out of range"),
	E("limits_header_big", "api:\n  limits:\n    max_header_bytes: 2MiB\n", 3, "is out of range"),
	E("limits_body_word", "api:\n  limits:\n    max_body_bytes: lots\n", 3, "api.limits.max_body_bytes"),
	E("limits_depth_1", "api:\n  limits:\n    max_json_depth: 1\n", 3,
	  "api.limits.max_json_depth: \"1\" is out of range (2..1000)"),
	E("limits_depth_big", "api:\n  limits:\n    max_json_depth: 1001\n", 3, "is out of range (2..1000)"),
	E("limits_peer_zero", "api:\n  limits:\n    max_connections_per_peer: 0\n", 3,
	  "api.limits.max_connections_per_peer: \"0\" is out of range"),
	E("limits_applies_zero", "api:\n  limits:\n    applies_per_minute: 0\n", 3,
	  "api.limits.applies_per_minute: \"0\" is out of range"),
	E("limits_grpc_small", "api:\n  limits:\n    grpc_max_message_bytes: 4095\n", 3,
	  "api.limits.grpc_max_message_bytes: \"4095\" is out of range"),
	E("limits_streams_zero", "api:\n  limits:\n    max_streams_per_peer: 0\n", 3,
	  "api.limits.max_streams_per_peer: \"0\" is out of range (1..10000)"),
	E("limits_streams_big", "api:\n  limits:\n    max_streams_per_peer: 10001\n", 3,
	  "api.limits.max_streams_per_peer: \"10001\" is out of range (1..10000)"),
	E("limits_streams_negative", "api:\n  limits:\n    max_streams_per_peer: -1\n", 3,
	  "api.limits.max_streams_per_peer: \"-1\" is not a number"),
	E("limits_streams_word", "api:\n  limits:\n    max_streams_per_peer: many\n", 3,
	  "api.limits.max_streams_per_peer: \"many\" is not a number"),
	E("limits_unknown", "api:\n  limits:\n    max_url_bytes: 10\n", 3, "max_url_bytes"),
	E("limits_not_mapping", "api:\n  limits: 5\n", 2, "api.limits"),
	/* security */
	E("security_drop_word", "security:\n  drop_capabilities: sometimes\n", 2, "security.drop_capabilities"),
	E("security_drop_list", "security:\n  drop_capabilities: [cap_kill]\n", 2, "security.drop_capabilities"),
	E("security_unknown_key", "security:\n  keep: [cap_sys_admin]\n", 2, "keep"),
	E("security_not_mapping", "security: true\n", 1, "security"),
	/* documents */
	E("empty_file", "", 1, "empty configuration"),
	E("comments_only", "# nothing here\n# at all\n", 1, "empty configuration"),
	E("explicit_null_document", "---\n~\n", 2, "empty configuration"),
	E("top_level_list", "\n- a\n- b\n", 2, "the top level must be a mapping, got a list"),
	E("top_level_scalar", "hello\n", 1, "the top level must be a mapping, got a scalar"),
	E("two_documents", "api: {}\n---\nmetrics: {}\n", 3, "only one YAML document is allowed"),
	/* YAML syntax */
	E("syntax_unclosed_flow", "api: {}\nonepanel: [a, b\nmetrics: {}\n", 3, "invalid YAML"),
	E("syntax_bad_indent", "onepanel:\n  binary: /x\n name: y\n", 3, "invalid YAML"),
	E("syntax_tab_indent", "onepanel:\n\tbinary: /x\n", 2, "invalid YAML"),
	E("syntax_unclosed_quote", "api:\n  rest_listen: \"127.0.0.1:1\n", 3, "invalid YAML"),
	E("syntax_undefined_alias", "api:\n  rest_listen: *nope\n", 2, "invalid YAML: found undefined alias"),
	E("syntax_bad_utf8", "api: {}\nmetrics:\n  interval: \"\xff\"\n", 3, "invalid YAML"),
	E("too_deep_flow", "api: {}\nmetrics: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n", 2,
	  "nesting deeper than 32 levels"),
	E("syntax_control_char", "api: {}\n\x01: 1\n", 2, "invalid YAML"),
};

static void run_err_case(const struct err_case *ec, const char *text, size_t len)
{
	struct agent_config *c = (struct agent_config *)0x1;
	char err[512], prefix[64];
	int rc;

	memset(err, 'X', sizeof(err));
	rc = config_parse(text, len, "t.yaml", &c, err, sizeof(err));
	if (rc != (ec->rc ? ec->rc : -EINVAL))
		print_error("%s: rc %d, err \"%s\"\n", ec->name, rc, rc ? err : "");
	assert_int_equal(rc, ec->rc ? ec->rc : -EINVAL);
	assert_null(c);
	if (ec->line)
		snprintf(prefix, sizeof(prefix), "t.yaml:%zu: ", ec->line);
	else
		snprintf(prefix, sizeof(prefix), "t.yaml: ");
	if (strncmp(err, prefix, strlen(prefix)) || !strstr(err, ec->msg))
		print_error("%s: got \"%s\", want prefix \"%s\" and \"%s\"\n", ec->name, err, prefix, ec->msg);
	assert_memory_equal(err, prefix, strlen(prefix));
	assert_non_null(strstr(err, ec->msg));
	/* Never more than one line. */
	assert_null(strchr(err, '\n'));
}

static void test_err_case(void **state)
{
	const struct err_case *ec = *state;

	run_err_case(ec, ec->text, strlen(ec->text));
}

static void test_err_too_big(void **state)
{
	static const struct err_case ec = { .name = "too_big", .msg = "larger than 1 MiB", .rc = -EFBIG };
	size_t len = 1024 * 1024 + 1;
	char *t = malloc(len + 1);

	(void)state;
	assert_non_null(t);
	memset(t, '#', len);
	t[len] = '\0';
	run_err_case(&ec, t, len);
	free(t);
}

static void test_err_nul_in_text(void **state)
{
	static const struct err_case ec = { .name = "nul_in_text", .line = 2, .msg = "invalid YAML" };
	static const char t[] = "api: {}\nmetrics: {\0}\n";

	(void)state;
	run_err_case(&ec, t, sizeof(t) - 1);
}

static void test_err_deep_nesting(void **state)
{
	static const struct err_case flow = { .name = "deep", .line = 1, .msg = "nesting deeper than 32 levels" };
	static const struct err_case block = { .name = "deep_block", .line = 33,
					       .msg = "nesting deeper than 32 levels" };
	static const char *const unit[] = { "[", "{", "- ", "? " };
	size_t len = 1024 * 1024, i, o, d;
	char *t = malloc(len + 1);

	(void)state;
	assert_non_null(t);
	/* A megabyte of each must fail fast: libyaml alone is quadratic in
	 * the depth of flow collections. */
	for (i = 0; i < ARRAY_SIZE(unit); i++) {
		size_t n = strlen(unit[i]);

		for (o = 0; o + n <= len; o += n)
			memcpy(t + o, unit[i], n);
		run_err_case(&flow, t, o);
	}
	/* "a:\n a:\n  a:\n...": one block mapping per line. */
	for (o = 0, d = 0; d < 100; d++) {
		memset(t + o, ' ', d);
		memcpy(t + o + d, "a:\n", 3);
		o += d + 3;
	}
	run_err_case(&block, t, o);
	free(t);
}

static void test_err_small_buffers(void **state)
{
	struct agent_config *c = NULL;
	char err[8];

	(void)state;
	/* Truncated, still terminated; NULL err is fine too. */
	assert_int_equal(config_parse("x: 1\n", 5, "t.yaml", &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.yaml:");
	assert_null(c);
	assert_int_equal(config_parse("x: 1\n", 5, "t.yaml", &c, NULL, 0), -EINVAL);
	assert_int_equal(config_parse("x: 1\n", 5, NULL, &c, err, 1), -EINVAL);
	assert_string_equal(err, "");
	assert_int_equal(config_parse("{}", 2, "t.yaml", NULL, NULL, 0), -EINVAL);
}

static void test_long_values_in_messages(void **state)
{
	struct agent_config *c = NULL;
	char err[256], *t;
	size_t n = 10000;

	(void)state;
	t = malloc(n + 32);
	assert_non_null(t);
	strcpy(t, "onepanel:\n  binary: ");
	memset(t + strlen(t), 'a', n);
	strcpy(t + 20 + n, "\n");
	assert_int_equal(config_parse(t, strlen(t), "t.yaml", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "t.yaml:2: onepanel.binary: \"aaaa"));
	assert_non_null(strstr(err, "\"... is not an absolute path"));
	free(t);
}

/* ---- config_load ---- */

static char tmpdir[64];

static int setup_tmpdir(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/test_config.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmpdir(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_load_ok(void **state)
{
	struct agent_config *c = NULL;
	char path[128], err[256] = "";

	(void)state;
	snprintf(path, sizeof(path), "%s/agent.yaml", tmpdir);
	write_file(path, full_example, strlen(full_example));
	assert_int_equal(config_load(path, &c, err, sizeof(err)), 0);
	assert_non_null(c);
	assert_string_equal(c->path, path);
	assert_string_equal(c->onepanel.binary, "/usr/sbin/nginx");
	config_free(c);
}

static void test_load_missing(void **state)
{
	struct agent_config *c = (struct agent_config *)0x1;
	char path[128], want[256], err[256] = "";

	(void)state;
	snprintf(path, sizeof(path), "%s/nope.yaml", tmpdir);
	assert_int_equal(config_load(path, &c, err, sizeof(err)), -ENOENT);
	assert_null(c);
	snprintf(want, sizeof(want), "%s: cannot open: %s", path, strerror(ENOENT));
	assert_string_equal(err, want);
}

static void test_load_directory(void **state)
{
	struct agent_config *c = (struct agent_config *)0x1;
	char want[256], err[256] = "";

	(void)state;
	assert_int_equal(config_load(tmpdir, &c, err, sizeof(err)), -EISDIR);
	assert_null(c);
	snprintf(want, sizeof(want), "%s: %s", tmpdir, strerror(EISDIR));
	assert_string_equal(err, want);
}

static void test_load_too_big(void **state)
{
	struct agent_config *c = (struct agent_config *)0x1;
	char path[128], err[256] = "";
	size_t len = 1024 * 1024;
	char *t = malloc(len + 1);

	(void)state;
	assert_non_null(t);
	memset(t, '\n', len + 1);
	memcpy(t, "api: {}\n", 8);
	snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
	/* Exactly 1 MiB is fine... */
	write_file(path, t, len);
	assert_int_equal(config_load(path, &c, err, sizeof(err)), 0);
	config_free(c);
	/* ...one byte more is not. */
	write_file(path, t, len + 1);
	assert_int_equal(config_load(path, &c, err, sizeof(err)), -EFBIG);
	assert_null(c);
	assert_non_null(strstr(err, ": larger than 1 MiB"));
	assert_memory_equal(err, path, strlen(path));
	free(t);
}

static void test_load_syntax_error(void **state)
{
	struct agent_config *c = (struct agent_config *)0x1;
	char path[128], want[256], err[256] = "";
	static const char text[] = "api:\n  rest_listen: 127.0.0.1:9440\n  max_sse_clients: lots\n";

	(void)state;
	snprintf(path, sizeof(path), "%s/bad.yaml", tmpdir);
	write_file(path, text, strlen(text));
	assert_int_equal(config_load(path, &c, err, sizeof(err)), -EINVAL);
	assert_null(c);
	snprintf(want, sizeof(want), "%s:3: api.max_sse_clients: \"lots\" is not a number", path);
	assert_string_equal(err, want);
}

static void test_load_fifo(void **state)
{
	struct agent_config *c = (struct agent_config *)0x1;
	char path[128], err[256] = "";

	(void)state;
	snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(path, 0600), 0);
	/* Must neither block nor read it. */
	assert_int_equal(config_load(path, &c, err, sizeof(err)), -EINVAL);
	assert_null(c);
	assert_non_null(strstr(err, ": not a regular file"));
}

/* ---- helpers ---- */

static void test_duration(void **state)
{
	static const struct {
		const char *s;
		uint64_t ms;
	} ok[] = {
		{ "500ms", 500 }, { "1s", 1000 }, { "1.5s", 1500 }, { "2m", 120000 },
		{ "1h", 3600000 }, { "5", 5000 }, { "0", 0 }, { "0.1s", 100 }, { "1.25m", 75000 },
		{ "0.001s", 1 }, { "0.5h", 1800000 }, { "007s", 7000 }, { "2.5", 2500 },
	};
	static const char *const bad[] = {
		"", "abc", "s", "1x", "1 s", " 1s", "1s ", "-1s", "+1s", "1.s", ".5s", "1..5s",
		"1.5ms", "0.0001s", "1e3ms", "1S", "1sec", "99999999999999999999999s",
		"18446744073709551615h", "1.0000000001s",
	};
	uint64_t ms;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(ok); i++) {
		ms = 12345;
		if (config_parse_duration_ms(ok[i].s, &ms))
			print_error("rejected \"%s\"\n", ok[i].s);
		assert_int_equal(config_parse_duration_ms(ok[i].s, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		if (!config_parse_duration_ms(bad[i], &ms))
			print_error("accepted \"%s\"\n", bad[i]);
		assert_int_equal(config_parse_duration_ms(bad[i], &ms), -EINVAL);
	}
	assert_int_equal(config_parse_duration_ms(NULL, &ms), -EINVAL);
}

static void test_signal(void **state)
{
	static const struct {
		const char *s;
		int sig;
	} ok[] = {
		{ "HUP", SIGHUP }, { "SIGHUP", SIGHUP }, { "hup", SIGHUP }, { "USR1", SIGUSR1 },
		{ "SIGUSR2", SIGUSR2 }, { "TERM", SIGTERM }, { "QUIT", SIGQUIT }, { "INT", SIGINT },
		{ "WINCH", SIGWINCH }, { "sigwinch", SIGWINCH }, { "1", 1 }, { "64", 64 }, { "15", 15 },
	};
	static const char *const bad[] = { "", "FOO", "SIG", "SIGFOO", "0", "65", "-1", "1x", "HUP ",
					   "99999999999999999999999" };
	size_t i;
	int sig;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(ok); i++) {
		sig = -1;
		assert_int_equal(config_parse_signal(ok[i].s, &sig), 0);
		assert_int_equal(sig, ok[i].sig);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(config_parse_signal(bad[i], &sig), -EINVAL);
	assert_int_equal(config_parse_signal(NULL, &sig), -EINVAL);
}

static void test_listen(void **state)
{
	static const struct {
		const char *s;
		const char *host;
		uint16_t port;
	} ok[] = {
		{ "127.0.0.1:9440", "127.0.0.1", 9440 }, { "0.0.0.0:1", "0.0.0.0", 1 },
		{ "10.1.2.3:65535", "10.1.2.3", 65535 }, { "[::1]:9441", "::1", 9441 },
		{ "[::]:80", "::", 80 }, { "[fe80::1:2]:8080", "fe80::1:2", 8080 },
		{ "[::ffff:127.0.0.1]:443", "::ffff:127.0.0.1", 443 },
	};
	static const char *const bad[] = {
		"", ":80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
		"127.0.0.1:70000", "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1:80x", "127.0.0.1:000080",
		"localhost:80", "1.2.3:80", "256.1.1.1:80", "::1:80", "[::1]", "[::1]80", "[::1:80",
		"[127.0.0.1]:80", "[]:80", "[::1%eth0]:80", " 127.0.0.1:80", "[::1]:",
	};
	char host[64];
	uint16_t port;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(ok); i++) {
		port = 0;
		host[0] = '\0';
		assert_int_equal(config_parse_listen(ok[i].s, host, sizeof(host), &port), 0);
		assert_string_equal(host, ok[i].host);
		assert_int_equal(port, ok[i].port);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		if (!config_parse_listen(bad[i], host, sizeof(host), &port))
			print_error("accepted \"%s\"\n", bad[i]);
		assert_int_equal(config_parse_listen(bad[i], host, sizeof(host), &port), -EINVAL);
	}
	/* Host buffer too small; NULL outputs just validate. */
	assert_int_equal(config_parse_listen("127.0.0.1:80", host, 9, &port), -EINVAL);
	assert_int_equal(config_parse_listen("127.0.0.1:80", host, 10, &port), 0);
	assert_int_equal(config_parse_listen("[::1]:80", NULL, 0, NULL), 0);
	assert_int_equal(config_parse_listen(NULL, host, sizeof(host), &port), -EINVAL);
}

static void test_api_tls(void **state)
{
	struct agent_config *c;

	(void)state;
	c = parse_ok("api:\n  rest_listen: 0.0.0.0:9440\n  grpc_listen: \"[::]:9441\"\n  tls:\n"
		     "    cert_file: /etc/oneshield-agent/tls/server.pem\n"
		     "    key_file: /etc/oneshield-agent/tls/server.key\n"
		     "    client_ca_file: /etc/oneshield-agent/tls/clients-ca.pem\n"
		     "    crl_file: /etc/oneshield-agent/tls/clients.crl\n");
	assert_string_equal(c->api.tls.crl_file, "/etc/oneshield-agent/tls/clients.crl");
	assert_string_equal(c->api.tls.cert_file, "/etc/oneshield-agent/tls/server.pem");
	assert_string_equal(c->api.tls.key_file, "/etc/oneshield-agent/tls/server.key");
	assert_string_equal(c->api.tls.client_ca_file, "/etc/oneshield-agent/tls/clients-ca.pem");
	assert_false(c->api.insecure);
	config_free(c);

	/* TLS without client certificates; loopback needs nothing */
	c = parse_ok("api:\n  tls: { cert_file: /c.pem, key_file: /k.pem }\n");
	assert_string_equal(c->api.tls.cert_file, "/c.pem");
	assert_null(c->api.tls.client_ca_file);
	assert_null(c->api.tls.crl_file);
	config_free(c);
	c = parse_ok("api:\n  rest_listen: 127.1.2.3:1\n  grpc_listen: \"[::1]:2\"\n  tls: {}\n");
	assert_null(c->api.tls.cert_file);
	config_free(c);

	/* plaintext elsewhere only when meant */
	c = parse_ok("api:\n  rest_listen: 0.0.0.0:9440\n  insecure: true\n");
	assert_true(c->api.insecure);
	assert_null(c->api.tls.cert_file);
	config_free(c);
}

static void test_listen_is_loopback(void **state)
{
	static const char *const yes[] = {
		"127.0.0.1:9440", "127.255.255.254:1", "[::1]:9441", "[::ffff:127.0.0.1]:443", "localhost:9440",
	};
	static const char *const no[] = {
		"0.0.0.0:9440", "[::]:9441", "10.0.0.1:80", "128.0.0.1:80", "[::2]:80", "[::ffff:10.0.0.1]:80",
		"[fe80::1]:80", "localhostx:80", "127.0.0.1", "", NULL,
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!config_listen_is_loopback(yes[i]))
			print_error("not loopback: %s\n", yes[i]);
		assert_true(config_listen_is_loopback(yes[i]));
	}
	for (i = 0; i < ARRAY_SIZE(no); i++) {
		if (config_listen_is_loopback(no[i]))
			print_error("loopback: %s\n", no[i] ? no[i] : "(null)");
		assert_false(config_listen_is_loopback(no[i]));
	}
}

static void assert_argv(char **argv, const char *const *want)
{
	size_t i;

	assert_non_null(argv);
	for (i = 0; want[i]; i++) {
		assert_non_null(argv[i]);
		assert_string_equal(argv[i], want[i]);
	}
	assert_null(argv[i]);
}

static void test_split_command(void **state)
{
	static const char evil[] = "/tmp/my conf/x; rm -rf / $(id) `id` 'q' \"d\" {config}";
	char **argv;

	(void)state;
	assert_int_equal(config_split_command("/usr/sbin/nginx -t -c {config}", "/etc/nginx/nginx.conf",
					      &argv), 0);
	assert_argv(argv, (const char *const[]){ "/usr/sbin/nginx", "-t", "-c", "/etc/nginx/nginx.conf",
						 NULL });
	config_free_argv(argv);

	/* A hostile config path stays one literal argument, never re-split. */
	assert_int_equal(config_split_command("  nginx\t-t  -c {config}  ", evil, &argv), 0);
	assert_argv(argv, (const char *const[]){ "nginx", "-t", "-c", evil, NULL });
	config_free_argv(argv);

	/* Substitution inside words, several times, and in quotes. */
	assert_int_equal(config_split_command("check --conf={config} '{config}.bak' x{config}{config}",
					      "/a b", &argv), 0);
	assert_argv(argv, (const char *const[]){ "check", "--conf=/a b", "/a b.bak", "x/a b/a b", NULL });
	config_free_argv(argv);

	/* Quotes join words; backslashes escape. */
	assert_int_equal(config_split_command("sh -c 'echo \"hi there\"; exit 1' \"a\\\"b\\\\c\\d\" e\\ f"
					      " '' \"\" g'h'\"i\"", NULL, &argv), 0);
	assert_argv(argv, (const char *const[]){ "sh", "-c", "echo \"hi there\"; exit 1", "a\"b\\c\\d",
						 "e f", "", "", "ghi", NULL });
	config_free_argv(argv);

	/* NULL config path leaves the token alone. */
	assert_int_equal(config_split_command("x {config}", NULL, &argv), 0);
	assert_argv(argv, (const char *const[]){ "x", "{config}", NULL });
	config_free_argv(argv);

	/* Many words (growth of the array). */
	assert_int_equal(config_split_command("a b c d e f g h i j k l m n o p q r s t u v w x y z", "", &argv),
			 0);
	assert_string_equal(argv[25], "z");
	assert_null(argv[26]);
	config_free_argv(argv);

	argv = (char **)0x1;
	assert_int_equal(config_split_command("nginx -c 'unterminated", "/x", &argv), -EINVAL);
	assert_null(argv);
	argv = (char **)0x1;
	assert_int_equal(config_split_command("nginx -c \"unterminated\\\"", "/x", &argv), -EINVAL);
	assert_null(argv);
	assert_int_equal(config_split_command("nginx \\", "/x", &argv), -EINVAL);
	assert_int_equal(config_split_command("", "/x", &argv), -EINVAL);
	assert_int_equal(config_split_command(" \t\n", "/x", &argv), -EINVAL);
	assert_int_equal(config_split_command(NULL, "/x", &argv), -EINVAL);
	assert_int_equal(config_split_command("x", "/x", NULL), -EINVAL);
	config_free_argv(NULL);
}

static void test_example_file(void **state)
{
	static const char suffix[] = "/tests/unit/data";
	struct agent_config *c = NULL;
	char err[512] = "", path[1024];
	size_t n = strlen(TEST_DATA_DIR);
	int rc;

	(void)state;
	/* etc/agent.yaml of this tree must load; skipped when it is not there. */
	if (n < strlen(suffix) || strcmp(TEST_DATA_DIR + n - strlen(suffix), suffix))
		skip();
	snprintf(path, sizeof(path), "%.*s/etc/agent.yaml", (int)(n - strlen(suffix)), TEST_DATA_DIR);
	rc = config_load(path, &c, err, sizeof(err));
	if (rc == -ENOENT)
		skip();
	if (rc)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	assert_true(c->onepanel.configured);
	assert_string_equal(c->onepanel.binary, "/usr/sbin/nginx");
	config_free(c);
}

/* api authentication keys (issue 8): values, and what api.insecure allows */
static void test_api_auth_keys(void **state)
{
	struct agent_config *c;

	(void)state;
	c = parse_ok("api:\n  auth: true\n  token_file: /srv/t/token\n  metrics_auth: yes\n"
		     "  rest_socket: /run/oa/rest.sock\n  grpc_socket: /run/oa/grpc.sock\n  socket_mode: 660\n");
	assert_true(c->api.auth);
	assert_true(c->api.metrics_auth);
	assert_string_equal(c->api.token_file, "/srv/t/token");
	assert_string_equal(c->api.rest_socket, "/run/oa/rest.sock");
	assert_string_equal(c->api.grpc_socket, "/run/oa/grpc.sock");
	assert_int_equal(c->api.socket_mode, 0660);
	config_free(c);
	/* without auth: loopback is fine, the network only with insecure */
	c = parse_ok("api:\n  auth: false\n  rest_listen: 127.0.0.2:1\n  grpc_listen: \"[::1]:2\"\n");
	assert_false(c->api.auth);
	config_free(c);
	c = parse_ok("api:\n  auth: false\n  insecure: true\n  rest_listen: 0.0.0.0:1\n");
	assert_true(c->api.insecure);
	config_free(c);
	c = parse_ok("api:\n  rest_listen: 0.0.0.0:1\n  grpc_listen: \"[::]:2\"\n  tls: {cert_file: /c, key_file: /k}\n");
	config_free(c);
	assert_true(config_listen_is_loopback("127.0.0.1:1"));
	assert_true(config_listen_is_loopback("127.255.0.9:80"));
	assert_true(config_listen_is_loopback("[::1]:80"));
	assert_true(config_listen_is_loopback("[::ffff:127.0.0.1]:80"));
	assert_false(config_listen_is_loopback("0.0.0.0:80"));
	assert_false(config_listen_is_loopback("128.0.0.1:80"));
	assert_false(config_listen_is_loopback("[::]:80"));
	assert_false(config_listen_is_loopback("[::ffff:10.0.0.1]:80"));
	assert_false(config_listen_is_loopback("nonsense"));
	assert_false(config_listen_is_loopback(NULL));
}

static void test_bytes_and_urls(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(config_parse_bytes("65536", &v), 0);
	assert_true(v == 65536);
	assert_int_equal(config_parse_bytes("64KiB", &v), 0);
	assert_true(v == 65536);
	assert_int_equal(config_parse_bytes("4M", &v), 0);
	assert_true(v == 4u << 20);
	assert_int_equal(config_parse_bytes("1GiB", &v), 0);
	assert_true(v == 1u << 30);
	assert_int_equal(config_parse_bytes("", &v), -EINVAL);
	assert_int_equal(config_parse_bytes("4 MiB", &v), -EINVAL);
	assert_int_equal(config_parse_bytes("-1", &v), -EINVAL);
	assert_int_equal(config_parse_bytes("4TiB", &v), -EINVAL);
	assert_int_equal(config_parse_bytes("99999999999999999999", &v), -EINVAL);
	assert_int_equal(config_parse_bytes("18446744073709551615G", &v), -EINVAL);
	char host[64], path[64];
	uint16_t port;
	assert_int_equal(config_parse_http_url("http://127.0.0.1:8080/healthz", host, sizeof(host), &port, path,
					       sizeof(path)), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8080);
	assert_string_equal(path, "/healthz");
	assert_int_equal(config_parse_http_url("http://localhost:81", host, sizeof(host), &port, path, sizeof(path)),
			 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(path, "/");
	assert_int_equal(config_parse_http_url("http://[::1]:9/x", host, sizeof(host), &port, path, sizeof(path)), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(config_parse_http_url("https://127.0.0.1:1/", host, sizeof(host), &port, path, sizeof(path)),
			 -EINVAL);
	assert_int_equal(config_parse_http_url("http://example.com:80/", host, sizeof(host), &port, path,
					       sizeof(path)), -EINVAL);
	assert_int_equal(config_parse_http_url("http://127.0.0.1/", host, sizeof(host), &port, path, sizeof(path)),
			 -EINVAL);
	assert_int_equal(config_parse_http_url("http://127.0.0.1:80/a b", host, sizeof(host), &port, path,
					       sizeof(path)), -EINVAL);
	assert_int_equal(config_parse_http_url("http://127.0.0.1:80/a\r\nX: y", host, sizeof(host), &port, path,
					       sizeof(path)), -EINVAL);
	struct agent_config *c = NULL;
	char err[256];
	const char *doc = "onepanel:\n  binary: /bin/true\n  max_file_size: 1KiB\n  max_files: 3\n"
			  "  health_url: http://127.0.0.1:8080/ok\n";
	assert_int_equal(config_parse(doc, strlen(doc), "t.yaml", &c, err, sizeof(err)), 0);
	assert_true(c->onepanel.max_file_bytes == 1024);
	assert_int_equal(c->onepanel.max_files, 3);
	assert_true(c->onepanel.max_total_bytes == 16u << 20);
	assert_string_equal(c->onepanel.health_url, "http://127.0.0.1:8080/ok");
	config_free(c);
	doc = "onepanel:\n  binary: /bin/true\n  validate_fail_on_warn: yes\n";
	assert_int_equal(config_parse(doc, strlen(doc), "t.yaml", &c, err, sizeof(err)), 0);
	assert_true(c->onepanel.validate_fail_on_warn);
	config_free(c);
	doc = "onepanel:\n  binary: /bin/true\n  validate_fail_on_warn: maybe\n";
	assert_int_equal(config_parse(doc, strlen(doc), "t.yaml", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "t.yaml:3: onepanel.validate_fail_on_warn"));
	doc = "onepanel:\n  binary: /bin/true\n  health_url: ftp://x\n";
	assert_int_equal(config_parse(doc, strlen(doc), "t.yaml", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "t.yaml:3: onepanel.health_url"));
	doc = "onepanel:\n  binary: /bin/true\n  max_file_size: lots\n";
	assert_int_equal(config_parse(doc, strlen(doc), "t.yaml", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "t.yaml:3: onepanel.max_file_size"));
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_full_example),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_onepanel_variants),
		cmocka_unit_test(test_ebpf_section),
		cmocka_unit_test(test_oneshield_section),
		cmocka_unit_test(test_security_section),
		cmocka_unit_test(test_api_limits),
		cmocka_unit_test(test_err_too_big),
		cmocka_unit_test(test_err_nul_in_text),
		cmocka_unit_test(test_err_deep_nesting),
		cmocka_unit_test(test_err_small_buffers),
		cmocka_unit_test(test_long_values_in_messages),
		cmocka_unit_test_setup_teardown(test_load_ok, setup_tmpdir, teardown_tmpdir),
		cmocka_unit_test_setup_teardown(test_load_missing, setup_tmpdir, teardown_tmpdir),
		cmocka_unit_test_setup_teardown(test_load_directory, setup_tmpdir, teardown_tmpdir),
		cmocka_unit_test_setup_teardown(test_load_too_big, setup_tmpdir, teardown_tmpdir),
		cmocka_unit_test_setup_teardown(test_load_syntax_error, setup_tmpdir, teardown_tmpdir),
		cmocka_unit_test_setup_teardown(test_load_fifo, setup_tmpdir, teardown_tmpdir),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_signal),
		cmocka_unit_test(test_listen),
		cmocka_unit_test(test_api_tls),
		cmocka_unit_test(test_listen_is_loopback),
		cmocka_unit_test(test_split_command),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_bytes_and_urls),
		cmocka_unit_test(test_api_auth_keys),
	};
	/* One named test per error case. */
	struct CMUnitTest tests[ARRAY_SIZE(fixed) + ARRAY_SIZE(err_cases)];
	size_t i, n = 0;

	for (i = 0; i < ARRAY_SIZE(fixed); i++)
		tests[n++] = fixed[i];
	for (i = 0; i < ARRAY_SIZE(err_cases); i++) {
		tests[n++] = (struct CMUnitTest){
			.name = err_cases[i].name,
			.test_func = test_err_case,
			.initial_state = (void *)&err_cases[i],
		};
	}
	return _cmocka_run_group_tests("config", tests, n, NULL, NULL);
}
