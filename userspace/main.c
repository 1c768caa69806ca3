/* oneshield-agent: entry point, signals, and the agent's own config reload.
 *
 * Start-up order matters to users: the config is checked first (a refused
 * config exits non-zero before anything listens), then the listeners, then
 * AGENT_START_MESSAGE, and only then is onepanel looked for, so its FOUND
 * event follows AGENT_START in the journal. Shutdown mirrors it:
 * AGENT_STOP_MESSAGE is journaled, streams get it and end, then everything is
 * torn down. Signals arrive through a signalfd in the core loop; no work is
 * done in signal context. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>

#include "agent.h"
#include "auth.h"
#include "config.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "onepanel.h"
#include "opversion.h"
#include "rest.h"
#include "testgen.h"
#include "tls.h"
#include "cfgapply.h"
#include "probes.h"
#include "logwatch.h"
#include "grpc_server.h"
#include "mgmt.h"
#include "privs.h"

#define DRAIN_MS 2000

/* Every flag getopt_long takes below and every variable of the
 * environment the agent reads (tests/e2e/test_agent.py checks both against
 * the source, and the man page against this text). */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: oneshield-agent [-c FILE] [-t] [-v]\n"
		"       oneshield-agent --version | --help\n"
		"\n"
		"  -c, --config FILE   agent configuration (default %s;\n"
		"                      when that default is absent, built-in defaults are used;\n"
		"                      a file named with -c must exist)\n"
		"  -t, --test          check the configuration and exit: 0 when valid, else 1\n"
		"                      with the problem printed as file:line: message\n"
		"  -v, --verbose       debug logging\n"
		"      --version       print the version and exit\n"
		"  -h, --help          this text\n"
		"\n"
		"Signals: TERM/INT shut down cleanly (exit 0); HUP reloads the configuration\n"
		"(the running one stays if the new one is invalid).\n"
		"\n"
		"Environment:\n"
		"  ONESHIELD_FORCE_PROCFS=1       procfs mode, as ebpf.enabled: false\n"
		"  ONESHIELD_NO_PROC_CONNECTOR=1  procfs mode rescans /proc instead of using the\n"
		"                                 netlink proc connector (diagnostics, tests)\n"
		"  ONESHIELD_GRPC_PLUGIN=PATH     the gRPC plugin to load (a root-owned file that\n"
		"                                 no one else can write) instead of the search\n"
		"  ONESHIELD_TEST_EVENTS=1        enables POST /v1/test/events (tests, benchmarks)\n"
		"  JOURNAL_STREAM                 set by systemd: log lines carry journal priorities\n"
		"\n"
		"Privileges: started as root, the agent keeps only CAP_CHOWN, CAP_DAC_OVERRIDE,\n"
		"CAP_FOWNER, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_SYS_PTRACE, CAP_PERFMON and\n"
		"CAP_BPF once its programs, sockets and files are open, and sets no_new_privs\n"
		"(security.drop_capabilities: false keeps everything, for debugging).\n"
		"\n"
		"Exit status: 0 clean shutdown, valid configuration (-t), --version, --help;\n"
		"1 configuration refused or start-up failed; 2 bad command line.\n",
		CONFIG_DEFAULT_PATH);
}

static struct agent A;
static int exit_code;

static void collect_tick(void *arg)
{
	agent_collect(arg);
}

static struct loop_timer *collect_timer;

static void emit(enum event_type t, enum event_level lvl, const char *msg, const char *key, const char *val)
{
	struct event *e = event_new(t, lvl, "%s", msg);
	if (!e)
		return;
	e->pid = getpid();
	if (key)
		event_set_field(e, key, "%s", val);
	journal_append(A.journal, e);
}

/* The token set a config asks for (NULL with api.auth: false). A token
 * file that is absent is generated, and its path logged (never the token). */
static int load_tokens(const struct agent_config *c, struct auth_tokens **out, char *err, size_t errlen)
{
	bool created = false;
	*out = NULL;
	if (!c->api.auth)
		return 0;
	int r = auth_tokens_load(c->api.token_file, true, out, &created, err, errlen);
	if (!r && created)
		log_info("generated a new API token in %s (id %s); clients send \"Authorization: Bearer $(cat %s)\"",
			 c->api.token_file, (*out)->t[0].id, c->api.token_file);
	return r;
}

/* Commit point of the auth part of a config (start, reload). */
static void apply_auth(const struct agent_config *c, struct auth_tokens *tokens)
{
	auth_tokens_free(A.auth->tokens);
	A.auth->tokens = tokens;
	A.auth->enabled = c->api.auth;
	A.auth->metrics_auth = c->api.metrics_auth;
	if (!c->api.auth)
		log_warn("API AUTHENTICATION IS OFF (api.auth: false): every local user can read the agent's state "
			 "and push onepanel configuration as root");
	else
		log_info("API authentication: %zu bearer token(s) from %s", tokens ? tokens->n : 0,
			 c->api.token_file);
}

static int start_rest(const struct agent_config *c, const struct tls_creds *tls, struct rest **out)
{
	char err[256];
	*out = NULL;
	if (!c->api.rest_listen && !c->api.rest_socket)
		return 0;
	int r = rest_start(&A, c->api.rest_listen, c->api.rest_socket, c->api.socket_mode, c->api.max_sse_clients, tls,
			   &c->api.limits, out, err, sizeof(err));
	if (r) {
		log_error("rest: %s", err);
		return r;
	}
	if (c->api.rest_listen)
		log_info("REST API listening on %s://%s%s", tls ? "https" : "http", c->api.rest_listen,
			 tls && tls->ca_pem ? " (client certificates required)" : "");
	if (c->api.rest_socket)
		log_info("REST API listening on unix socket %s (mode %04o; no token asked there)", c->api.rest_socket,
			 c->api.socket_mode);
	return r;
}

static void log_tls(const struct agent_config *c, const struct tls_creds *tls)
{
	if (tls)
		log_info("tls: serving %s (%s)%s%s%s%s", c->api.tls.cert_file, tls->subject,
			 tls->ca_pem ? "; client certificates from " : "",
			 tls->ca_pem ? c->api.tls.client_ca_file : "", tls->ncrls ? ", revoked ones in " : "",
			 tls->ncrls ? c->api.tls.crl_file : "");
}

static int start_grpc(const struct agent_config *c, struct grpc_api **out)
{
	char err[256];
	*out = NULL;
	if (!c->api.grpc_listen && !c->api.grpc_socket)
		return 0;
	int r = grpc_api_start(&A, c->api.grpc_listen, c->api.max_subscribers, out, err, sizeof(err));
	if (r) {
		log_error("grpc: %s", err);
		return r;
	}
	if (c->api.grpc_listen)
		log_info("gRPC API listening on %s (port %d)%s", c->api.grpc_listen, grpc_api_port(*out),
			 !A.tls ? "" : A.tls->ca_pem ? ", TLS, client certificates required" : ", TLS");
	if (c->api.grpc_socket)
		log_info("gRPC API listening on unix socket %s (mode %04o; no token asked there)", c->api.grpc_socket,
			 c->api.socket_mode);
	return r;
}

/* Keep only privs.h's set once everything that needs more is open: the BPF
 * programs, the proc connector, the log files, the REST listener. It runs
 * before the gRPC plugin starts its threads, since capabilities belong to a
 * thread. Fails closed: 0, or -1 when the agent would still hold a
 * capability outside the kept set or no_new_privs is not set. A bounding set
 * that cannot shrink (no CAP_SETPCAP: not root) is only a warning. */
static int drop_privileges(const struct agent_config *c)
{
	char err[256], kept[512], bnd[512];
	struct privs_state st;
	if (!c->security.drop_capabilities) {
		log_warn("capabilities: all kept (security.drop_capabilities is false)");
		return 0;
	}
	int rc = privs_drop(PRIVS_KEEP, &st, err, sizeof(err));
	if ((st.permitted & ~PRIVS_KEEP) || (st.effective & ~PRIVS_KEEP) || st.ambient || !st.no_new_privs) {
		privs_format(PRIVS_KEEP, kept, sizeof(kept));
		log_error("capabilities: cannot drop them (%s); refusing to run with more than %s", err, kept);
		return -1;
	}
	privs_format(st.effective, kept, sizeof(kept));
	privs_format(st.bounding, bnd, sizeof(bnd));
	if (rc)
		log_warn("capabilities: %s", err);
	log_info("capabilities: kept %s; bounding set %s; no_new_privs", kept, bnd);
	return 0;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int start_mgmt(void)
{
	char err[512];
	A.mgmt = NULL;
	if (!A.cfg->oneshield.address)
		return 0;
	int r = mgmt_start(&A, &A.mgmt, err, sizeof(err));
	if (r)
		log_error("%s", err);
	return r;
}

static bool same_oneshield(const struct oneshield_config *a, const struct oneshield_config *b)
{
	if (!same_str(a->address, b->address) || !same_str(a->token_file, b->token_file) ||
	    !same_str(a->agent_id, b->agent_id) || !same_str(a->spool_dir, b->spool_dir) ||
	    a->report_interval_ms != b->report_interval_ms || a->spool_max_bytes != b->spool_max_bytes ||
	    a->keepalive_time_ms != b->keepalive_time_ms || a->keepalive_timeout_ms != b->keepalive_timeout_ms ||
	    a->retry_max_ms != b->retry_max_ms || a->nlabels != b->nlabels || a->tls.enabled != b->tls.enabled ||
	    !same_str(a->tls.ca_file, b->tls.ca_file) || !same_str(a->tls.server_name, b->tls.server_name) ||
	    !same_str(a->tls.cert_file, b->tls.cert_file) || !same_str(a->tls.key_file, b->tls.key_file))
		return false;
	for (size_t i = 0; i < a->nlabels; i++)
		if (strcmp(a->labels[i], b->labels[i]))
			return false;
	return true;
}

/* SIGHUP: build the new config whole; swap only if it is valid and every
 * part that must change could be changed. */
static void reload_config(void)
{
	char err[512];
	struct agent_config *nc = NULL;
	const char *path = A.config_path;
	if (!path) {
		log_warn("SIGHUP: running on built-in defaults (no config file); nothing to reload");
		return;
	}
	if (config_load(path, &nc, err, sizeof(err))) {
		log_error("config reload failed, keeping the running configuration: %s", err);
		A.config_reload_failures++;
		emit(EV_AGENT_CONFIG_RELOAD_FAILED, EL_ERROR, "agent config reload failed; running config kept", "error",
		     err);
		return;
	}
	/* The TLS files are read again whatever the config says: a renewed
	 * certificate under the same name is the usual reason for a SIGHUP. */
	struct tls_creds *nt = NULL;
	struct auth_tokens *tokens = NULL;
	if (tls_creds_load(&nc->api.tls, &nt, err, sizeof(err)) || load_tokens(nc, &tokens, err, sizeof(err))) {
		tls_creds_free(nt);
		log_error("config reload failed, keeping the running configuration: %s", err);
		A.config_reload_failures++;
		emit(EV_AGENT_CONFIG_RELOAD_FAILED, EL_ERROR, "agent config reload failed; running config kept", "error",
		     err);
		config_free(nc);
		return;
	}
	bool tls_changed = !tls_creds_equal(nt, A.tls);
	/* libmicrohttpd cannot swap its credentials: new ones mean a new
	 * daemon, which ends the open connections (event streams included).
	 * A new crl_file alone does not: REST checks each request against the
	 * agent's current CRLs (A.tls). */
	bool keys_changed = !tls_creds_equal_keys(nt, A.tls);
	if (!same_str(nc->api.rest_listen, A.cfg->api.rest_listen) ||
	    !same_str(nc->api.rest_socket, A.cfg->api.rest_socket) || nc->api.socket_mode != A.cfg->api.socket_mode ||
	    nc->api.max_sse_clients != A.cfg->api.max_sse_clients || keys_changed ||
	    memcmp(&nc->api.limits, &A.cfg->api.limits, sizeof(nc->api.limits)) != 0) {
		struct rest *nr = NULL;
		/* Stop the old listener first: the new one may want the same port. */
		rest_begin_shutdown(A.rest);
		rest_stop(A.rest);
		A.rest = NULL;
		if (start_rest(nc, nt, &nr)) {
			log_error("config reload: new REST listener failed; restoring %s",
				  A.cfg->api.rest_listen ? A.cfg->api.rest_listen : "off");
			start_rest(A.cfg, A.tls, &A.rest);
			A.config_reload_failures++;
			emit(EV_AGENT_CONFIG_RELOAD_FAILED, EL_ERROR,
			     "agent config reload failed: cannot listen on the new REST address", "rest_listen",
			     nc->api.rest_listen ? nc->api.rest_listen : nc->api.rest_socket);
			tls_creds_free(nt);
			auth_tokens_free(tokens);
			config_free(nc);
			return;
		}
		A.rest = nr;
	}
	if (tls_changed) {
		/* the gRPC plugin picks it up from AGENT_CONFIG_RELOADED below */
		tls_creds_free(A.tls);
		A.tls = nt;
		A.tls_gen += keys_changed; /* a new CRL alone: read per call, nothing to stage */
		log_tls(nc, nt);
	} else {
		tls_creds_free(nt);
	}
	apply_auth(nc, tokens);
	if (!same_str(nc->api.grpc_listen, A.cfg->api.grpc_listen) ||
	    !same_str(nc->api.grpc_socket, A.cfg->api.grpc_socket))
		log_warn("config reload: api.grpc_listen and api.grpc_socket take effect at the next start");
	if (nc->events.journal_size != A.cfg->events.journal_size)
		log_warn("config reload: events.journal_size takes effect at the next start");
	if (nc->api.limits.grpc_max_message_bytes != A.cfg->api.limits.grpc_max_message_bytes)
		log_warn("config reload: api.limits.grpc_max_message_bytes takes effect at the next start");
	if (nc->security.drop_capabilities != A.cfg->security.drop_capabilities)
		log_warn("config reload: security.drop_capabilities takes effect at the next start");
	onepanel_reconfigure(A.onepanel, &nc->onepanel, &nc->ebpf);
	A.mode = onepanel_mode(A.onepanel);
	probes_reconfigure(A.probes, &nc->ebpf);
	if (logwatch_reconfigure(A.logs, &nc->onepanel))
		log_warn("config reload: out of memory setting up the logs; the previous ones stay followed");
	struct onepanel_state ops;
	onepanel_get_state(A.onepanel, &ops);
	if (opversion_configure(A.opversion, &nc->onepanel, ops.running))
		log_warn("config reload: out of memory; onepanel.version_command stays as it was");
	if (nc->metrics.interval_ms != A.cfg->metrics.interval_ms)
		loop_timer_arm(collect_timer, nc->metrics.interval_ms, nc->metrics.interval_ms);
	/* The One Shield client reads its section through A.cfg: a changed one
	 * means a new client (the spool is closed and opened again; an apply it
	 * started goes on, its result has nowhere to go). */
	bool mgmt_changed = !same_oneshield(&nc->oneshield, &A.cfg->oneshield);
	if (mgmt_changed) {
		mgmt_stop(A.mgmt);
		A.mgmt = NULL;
	}
	config_free(A.cfg);
	A.cfg = nc;
	if (mgmt_changed && start_mgmt())
		log_error("config reload: the One Shield client could not start; no reporting until it is fixed");
	A.config_reloads++;
	log_info("configuration reloaded from %s", path);
	emit(EV_AGENT_CONFIG_RELOADED, EL_INFO, "agent configuration reloaded", "path", path);
}

static void noop_handler(int sig)
{
	(void)sig;
}

static void on_signal(void *arg, int fd, uint32_t events)
{
	struct signalfd_siginfo si;
	(void)arg;
	(void)events;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			log_info("received SIG%s; shutting down", sigabbrev_np((int)si.ssi_signo));
			loop_stop(A.loop);
			break;
		case SIGHUP:
			reload_config();
			break;
		default:
			break;
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "test", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },      { "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	int test = 0, verbose = 0, c;
	while ((c = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 't': test = 1; break;
		case 'v': verbose = 1; break;
		case 'V': printf("oneshield-agent %s\n", OS_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "oneshield-agent: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	log_init(verbose);

	char err[512];
	struct stat st;
	if (!path && stat(CONFIG_DEFAULT_PATH, &st) == 0)
		path = CONFIG_DEFAULT_PATH;
	if (path) {
		/* the TLS files are part of the configuration: -t checks them too */
		if (config_load(path, &A.cfg, err, sizeof(err)) ||
		    tls_creds_load(&A.cfg->api.tls, &A.tls, err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			fprintf(stderr, "oneshield-agent: configuration refused\n");
			config_free(A.cfg);
			return 1;
		}
	} else {
		A.cfg = config_default();
		if (!A.cfg)
			return 1;
	}
	if (test && A.cfg->api.auth) {
		/* the token file too (systemd's ExecStartPre/ExecReload run -t);
		 * an absent one is not an error: it is generated at start */
		struct auth_tokens *t = NULL;
		int r = auth_tokens_load(A.cfg->api.token_file, false, &t, NULL, err, sizeof(err));
		auth_tokens_free(t);
		if (r && r != -ENOENT) {
			fprintf(stderr, "%s\n", err);
			fprintf(stderr, "oneshield-agent: API token refused\n");
			config_free(A.cfg);
			return 1;
		}
	}
	if (test) {
		printf("oneshield-agent: configuration %s is valid\n", path ? path : "(built-in defaults)");
		tls_creds_free(A.tls);
		config_free(A.cfg);
		return 0;
	}
	if (!path)
		log_warn("no configuration file (%s absent): using built-in defaults, no onepanel", CONFIG_DEFAULT_PATH);
	A.config_path = path;
	/* Before anything listens: no window without authentication. */
	struct auth_tokens *tokens = NULL;
	if (load_tokens(A.cfg, &tokens, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		fprintf(stderr, "oneshield-agent: API token refused\n");
		config_free(A.cfg);
		return 1;
	}
	A.auth = calloc(1, sizeof(*A.auth));
	if (!A.auth || !(A.auth->limiter = auth_limiter_new(AUTH_PEERS))) {
		log_error("out of memory");
		return 1;
	}
	apply_auth(A.cfg, tokens);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	/* Blocked and read through the signalfd; the handler never runs. It is
	 * there because as PID 1 of a container the kernel drops signals whose
	 * disposition is the default, and docker stop's SIGTERM would be lost. */
	struct sigaction sa = { .sa_handler = noop_handler };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	A.started_unix = (double)now.tv_sec + now.tv_nsec / 1e9;
	A.started_mono_ms = loop_now_ms();
	A.mode = "procfs";
	A.loop = loop_new();
	A.journal = journal_new(A.cfg->events.journal_size);
	struct loop_io *sig_io = NULL;
	if (sfd < 0 || !A.loop || !A.journal || !(sig_io = loop_io_add(A.loop, sfd, EPOLLIN, on_signal, NULL))) {
		log_error("cannot set up the core loop: %s", strerror(errno));
		return 1;
	}
	A.onepanel = onepanel_new(A.loop, A.journal, &A.cfg->onepanel);
	A.cfgapply = cfgapply_new(&A);
	if (!A.onepanel || !A.cfgapply)
		return 1;
	onepanel_prepare(A.onepanel, &A.cfg->ebpf);
	A.mode = onepanel_mode(A.onepanel);
	A.probes = probes_new(A.loop, A.onepanel, &A.cfg->ebpf);
	A.logs = logwatch_new(A.loop, A.journal, &A.cfg->onepanel);
	A.opversion = opversion_new(A.loop, A.journal);
	if (!A.probes || !A.logs || !A.opversion || opversion_configure(A.opversion, &A.cfg->onepanel, false))
		return 1;
	agent_collect(&A);
	log_tls(A.cfg, A.tls);
	if (start_rest(A.cfg, A.tls, &A.rest) || drop_privileges(A.cfg) || start_grpc(A.cfg, &A.grpc)) {
		exit_code = 1;
		goto out;
	}
	collect_timer = loop_timer_new(A.loop, collect_tick, &A);
	if (!collect_timer || loop_timer_arm(collect_timer, A.cfg->metrics.interval_ms, A.cfg->metrics.interval_ms)) {
		log_error("cannot arm the sampling timer");
		exit_code = 1;
		goto out;
	}

	log_info("oneshield-agent %s started (pid %d, mode %s, config %s)", OS_VERSION, getpid(), A.mode,
		 path ? path : "built-in defaults");
	{
		struct event *e = event_new(EV_AGENT_START, EL_INFO, "oneshield-agent %s started", OS_VERSION);
		if (e) {
			e->pid = getpid();
			event_set_field(e, "version", "%s", OS_VERSION);
			event_set_field(e, "mode", "%s", A.mode);
			struct onepanel_state ost;
			onepanel_get_state(A.onepanel, &ost);
			if (ost.mode_reason[0])
				event_set_field(e, "mode_reason", "%s", ost.mode_reason);
			journal_append(A.journal, e);
		}
	}
	onepanel_start(A.onepanel);
	agent_collect(&A); /* the first snapshot already shows onepanel */
	if (start_mgmt()) {
		exit_code = 1;
		goto out;
	}

	if (loop_run(A.loop) < 0)
		exit_code = 1;

	/* Shutdown: journal AGENT_STOP as the last event, let the streams
	 * deliver it and end. */
	A.stopping = true;
	testgen_stop(A.loop);
	cfgapply_abort(A.cfgapply); /* restores its files; its client gets 503 */
	{
		struct event *e = event_new(EV_AGENT_STOP, EL_INFO, "oneshield-agent stopping");
		if (e) {
			e->pid = getpid();
			journal_append(A.journal, e);
		}
	}
	journal_seal(A.journal);
	rest_begin_shutdown(A.rest);
	grpc_api_begin_shutdown(A.grpc);
	mgmt_begin_shutdown(A.mgmt);
	uint64_t deadline = loop_now_ms() + DRAIN_MS;
	while ((rest_sse_clients(A.rest) > 0 || grpc_api_streams(A.grpc) > 0 || mgmt_sending(A.mgmt)) &&
	       loop_now_ms() < deadline)
		loop_run_once(A.loop, 50);
	if (rest_sse_clients(A.rest) > 0 || grpc_api_streams(A.grpc) > 0)
		log_warn("%zu event streams and %zu gRPC streams did not finish within %d ms; closing them",
			 rest_sse_clients(A.rest), grpc_api_streams(A.grpc), DRAIN_MS);
	log_info("stopped");
out:
	testgen_stop(A.loop);
	mgmt_stop(A.mgmt);
	grpc_api_stop(A.grpc);
	rest_stop(A.rest);
	loop_timer_free(A.loop, collect_timer);
	cfgapply_free(A.cfgapply);
	probes_free(A.probes);
	logwatch_free(A.logs);
	opversion_free(A.opversion);
	onepanel_free(A.onepanel);
	metrics_free(A.snapshot);
	journal_free(A.journal);
	loop_io_del(A.loop, sig_io);
	loop_free(A.loop);
	close(sfd);
	tls_creds_free(A.tls);
	config_free(A.cfg);
	auth_tokens_free(A.auth->tokens);
	auth_limiter_free(A.auth->limiter);
	free(A.auth);
	return exit_code;
}
