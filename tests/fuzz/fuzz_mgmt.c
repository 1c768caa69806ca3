/* libFuzzer target for the One Shield client's handling of what the server
 * sends (userspace/mgmt.c: on_recv -> handle_server_message -> on_hello_ack,
 * acks, handle_command), through the ONESHIELD_FUZZ seam of mgmt.h: the
 * production client with a fake stream in place of the gRPC call. The
 * server is an attacker here (docs/threat-model.md, A3).
 *
 * Each input is one life of a client, on a fresh spool:
 *   byte 0     events journaled before the client opens (byte % 8): they
 *              are spooled, so acks and resumes have something to act on;
 *              bit 3: the client stops without waiting for a running
 *              apply (which finishes after it, its result dropped);
 *   then ops, each a byte b:
 *     b % 4 < 2   a ServerMessage: two bytes of length (little-endian,
 *                 clipped to what is left), then its bytes;
 *     b % 4 == 2  b >> 2 below 32: the server ends the stream with status
 *                 (b >> 2) % 17; else the agent begins its shutdown
 *                 (mgmt_plugin_begin_shutdown: it sends what is left,
 *                 half-closes, and redials no more);
 *     b % 4 == 3  the core loop runs: one iteration (what was spooled is
 *                 synced and sent, as between two reads of the stream),
 *                 and on until no config apply is running.
 * Without 3, messages follow each other as in one drain of the completion
 * queue (a fast server): nothing spooled meanwhile is sent in between.
 * A message after the stream ended goes to a new stream (Hello first), as
 * after the agent's redial. At the end: applies finished, a stream that got
 * its HelloAck (unless shutting down), so that every result waiting is sent.
 *
 * The agent is built once, like fuzz_http's: journal, loop, metric
 * snapshot, investigations in procfs mode (a start is refused), and a
 * onepanel whose only allowed directory is MANAGED_DIR with one file, whose
 * validate_command is /bin/false: an apply that passes the path checks is
 * written, fails validation and is rolled back; nothing is reloaded. The
 * rate limit of applies is raised so that it does not hide the path checks.
 *
 * Properties, besides ASan/UBSan cleanliness and no leak (results queued,
 * applies in flight and streams are all freed by mgmt_fuzz_close):
 * - everything the agent sends is an AgentMessage; Hello first on every
 *   stream, and a new stream only after the last one ended;
 * - events and lost ranges only after HelloAck, in increasing spool_seq,
 *   after the stream's resume point, and only seqs the spool handed out;
 * - the spool's acknowledged seq never goes back, never passes what it
 *   handed out, nor what the agent sent or the server claimed in a valid
 *   HelloAck (what the server can have);
 * - the agent ends the stream exactly when the protocol says so (malformed
 *   message, no HelloAck first, a second one, an Ack of an unknown seq);
 * - every command (after HelloAck, with a command_id) is answered exactly
 *   once (at most once when shutting down or with an apply left running),
 *   with a message exactly when the code is not 0;
 * - shutting down, once everything spooled is acknowledged the agent has
 *   half-closed and is no longer "sending" (main.c would wait for it);
 * - the managed directory holds its one file, unchanged.
 *
 * Seeds: tests/fuzz/gen_fuzz_mgmt_corpus.py writes tests/fuzz/corpus/fuzz_mgmt.
 * FUZZ_MGMT_VERBOSE=1 turns on the agent's debug log.
 *
 *   make BUILD=build-fuzz build-fuzz/fuzz/fuzz_mgmt
 *   build-fuzz/fuzz/fuzz_mgmt -max_total_time=60 -max_len=8192 tests/fuzz/corpus/fuzz_mgmt */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "cfgapply.h"
#include "config.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "mgmt.h"
#include "oneshield/mgmt/v1/mgmt.pb-c.h"
#include "onepanel.h"
#include "probes.h"
#include "spool.h"

#include "fuzzdir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEADLINE_MS 10000
#define MANAGED_DIR "/dev/shm/oneshield-fuzz-mgmt"
#define MANAGED_NAME "onepanel.conf"
#define MANAGED_CONTENT "listen 127.0.0.1:8080;\n"

#define CHECK(c) do { if (!(c)) die(#c, __LINE__); } while (0)

static struct agent A;
static char spool_dir[PATH_MAX - 16], spool_events[PATH_MAX];

/* What the harness expects, from the messages alone. */
struct cmd {
	char *id;
	unsigned sent, answered;
	unsigned sent_closing;	/* of sent, those delivered once the agent was stopping */
};

static struct model {
	bool stream_open;	/* a Hello came and the stream has not ended */
	bool acked;		/* this stream got its HelloAck */
	uint64_t last_event;	/* highest spool_seq sent on this stream */
	uint64_t start;		/* events on this stream come after it */
	uint64_t can_have;	/* sent on any stream, or claimed by a valid HelloAck */
	uint64_t acked_seq;	/* the spool's, last seen */
	bool closing;		/* mgmt_plugin_begin_shutdown was called */
	struct cmd *cmds;
	size_t ncmds;
	unsigned hellos;
} M;

static void die(const char *what, int line)
{
	fprintf(stderr, "fuzz_mgmt: check failed: %s (line %d)\n", what, line);
	abort();
}

/* The spool is the process's own: gone with it (a crash leaves it for the
 * artifact to be replayed beside). */
static void remove_spool(void)
{
	fuzz_empty_dir(spool_events);
	rmdir(spool_events);
	fuzz_empty_dir(spool_dir);
	rmdir(spool_dir);
}

static void setup(void)
{
	char yaml[2048], err[512];
	log_init(getenv("FUZZ_MGMT_VERBOSE") != NULL);
	fuzz_empty_dir(MANAGED_DIR);
	if (mkdir(MANAGED_DIR, 0700) && errno != EEXIST)
		die("mkdir " MANAGED_DIR, __LINE__);
	FILE *f = fopen(MANAGED_DIR "/" MANAGED_NAME, "w");
	CHECK(f && fputs(MANAGED_CONTENT, f) >= 0 && fclose(f) == 0);
	/* the spool is this process's: two fuzzers side by side do not share it */
	snprintf(spool_dir, sizeof(spool_dir), "/dev/shm/oneshield-fuzz-mgmt-spool-%d", (int)getpid());
	snprintf(spool_events, sizeof(spool_events), "%s/events", spool_dir);
	atexit(remove_spool);
	snprintf(yaml, sizeof(yaml),
		 "onepanel:\n  binary: /nonexistent/onepanel\n  config_file: %s/%s\n  allowed_dirs: [%s]\n"
		 "  validate_command: /bin/false\n"
		 "api:\n  grpc_listen: off\n  limits:\n    applies_per_minute: 10000\n"
		 "ebpf:\n  enabled: false\n"
		 /* never dialled: the fuzzing client has no gRPC */
		 "oneshield:\n  address: 127.0.0.1:9\n  agent_id: fuzz-agent\n  spool_dir: %s\n",
		 MANAGED_DIR, MANAGED_NAME, MANAGED_DIR, spool_dir);
	if (config_parse(yaml, strlen(yaml), "fuzz_mgmt", &A.cfg, err, sizeof(err)))
		die(err, __LINE__);
	A.mode = "procfs";
	A.loop = loop_new();
	A.journal = journal_new(256);
	CHECK(A.loop && A.journal);
	A.onepanel = onepanel_new(A.loop, A.journal, &A.cfg->onepanel);
	A.cfgapply = cfgapply_new(&A);
	A.probes = probes_new(A.loop, A.onepanel, &A.cfg->ebpf);
	CHECK(A.onepanel && A.cfgapply && A.probes && agent_collect(&A) == 0);
}

static struct cmd *cmd_find(const char *id)
{
	for (size_t i = 0; i < M.ncmds; i++)
		if (!strcmp(M.cmds[i].id, id))
			return &M.cmds[i];
	return NULL;
}

static void cmd_sent(const char *id)
{
	struct cmd *c = cmd_find(id);
	if (!c) {
		struct cmd *v = realloc(M.cmds, (M.ncmds + 1) * sizeof(*v));
		CHECK(v);
		M.cmds = v;
		c = &M.cmds[M.ncmds++];
		*c = (struct cmd){ .id = strdup(id) };
		CHECK(c->id);
	}
	c->sent++;
	if (M.closing)
		c->sent_closing++;
}

static void spool_now(struct mgmt *m, struct spool_stats *ss)
{
	spool_stats(mgmt_fuzz_spool(m), ss);
}

/* Everything the agent sends comes here (mgmt.h: the fake stream). */
static void on_sent(void *arg, const uint8_t *msg, size_t len)
{
	struct mgmt *m = *(struct mgmt **)arg;
	Oneshield__Mgmt__V1__AgentMessage *am = oneshield__mgmt__v1__agent_message__unpack(NULL, len, msg);
	struct spool_stats ss;
	CHECK(am);
	/* the first Hello comes from inside mgmt_fuzz_open, before m is known */
	if (m)
		spool_now(m, &ss);
	if (am->kind_case == ONESHIELD__MGMT__V1__AGENT_MESSAGE__KIND_HELLO) {
		CHECK(!M.stream_open);
		CHECK(!strcmp(am->hello->agent_id, "fuzz-agent"));
		CHECK(am->hello->last_acked_spool_seq <= am->hello->last_spool_seq);
		CHECK(am->hello->last_acked_spool_seq == M.acked_seq);
		M.stream_open = true;
		M.acked = false;
		M.last_event = 0;
		M.hellos++;
		goto out;
	}
	CHECK(M.stream_open);
	switch (am->kind_case) {
	case ONESHIELD__MGMT__V1__AGENT_MESSAGE__KIND_EVENT: {
		uint64_t seq = am->event->spool_seq;
		CHECK(M.acked && m);
		CHECK(seq > M.last_event && seq > M.start && seq < ss.next_seq);
		CHECK(am->event->event != NULL);
		M.last_event = seq;
		break;
	}
	case ONESHIELD__MGMT__V1__AGENT_MESSAGE__KIND_EVENTS_LOST: {
		const Oneshield__Mgmt__V1__EventsLost *l = am->events_lost;
		CHECK(M.acked && m);
		CHECK(l->from_spool_seq > M.last_event && l->from_spool_seq > M.start);
		CHECK(l->to_spool_seq >= l->from_spool_seq && l->to_spool_seq < ss.next_seq);
		CHECK(l->count == l->to_spool_seq - l->from_spool_seq + 1);
		M.last_event = l->to_spool_seq;
		break;
	}
	case ONESHIELD__MGMT__V1__AGENT_MESSAGE__KIND_METRICS:
		CHECK(M.acked);
		break;
	case ONESHIELD__MGMT__V1__AGENT_MESSAGE__KIND_COMMAND_RESULT: {
		const Oneshield__Mgmt__V1__CommandResult *r = am->command_result;
		struct cmd *c = cmd_find(r->command_id);
		CHECK(M.acked);
		CHECK(c && c->answered < c->sent);	/* an answer to a command, once */
		c->answered++;
		CHECK(r->code >= 0 && r->code <= 16);
		CHECK((r->code == 0) == (r->message[0] == '\0'));
		/* nothing new runs once the agent is stopping: UNAVAILABLE */
		if (c->sent_closing == c->sent)
			CHECK(r->code == 14 && r->payload_case == ONESHIELD__MGMT__V1__COMMAND_RESULT__PAYLOAD__NOT_SET);
		break;
	}
	default:
		CHECK(!"an AgentMessage of no known kind");
	}
	if (M.last_event > M.can_have)
		M.can_have = M.last_event;
out:
	oneshield__mgmt__v1__agent_message__free_unpacked(am, NULL);
}

/* The spool's acknowledged seq after each step. */
static void check_acked(struct mgmt *m)
{
	struct spool_stats ss;
	spool_now(m, &ss);
	CHECK(ss.acked_seq >= M.acked_seq);
	CHECK(ss.acked_seq < ss.next_seq);
	CHECK(ss.acked_seq <= M.can_have);
	M.acked_seq = ss.acked_seq;
}

/* Shutting down, with everything spooled acknowledged on a stream that
 * got its HelloAck: nothing is left to wait for. */
static void check_shutdown(struct mgmt *m)
{
	struct spool_stats ss;
	spool_now(m, &ss);
	if (M.closing && M.stream_open && M.acked && ss.acked_seq == ss.next_seq - 1)
		CHECK(!mgmt_plugin_sending(m));
}

/* The server sends one message: what the agent must do with it, then do
 * it. After an end, the agent's redial comes first. */
static void deliver(struct mgmt *m, const uint8_t *msg, size_t len)
{
	Oneshield__Mgmt__V1__ServerMessage *sm = oneshield__mgmt__v1__server_message__unpack(NULL, len, msg);
	bool ends = false;
	struct spool_stats ss;

	if (!M.stream_open && M.closing) {
		/* no redial once shutting down: the message has nowhere to go */
		CHECK(mgmt_fuzz_reconnect(m) == -EPIPE);
		if (sm)
			oneshield__mgmt__v1__server_message__free_unpacked(sm, NULL);
		return;
	}
	if (!M.stream_open) {
		unsigned hellos = M.hellos;
		CHECK(mgmt_fuzz_reconnect(m) == 0);
		CHECK(M.stream_open && M.hellos == hellos + 1);
	}
	spool_now(m, &ss);
	if (!sm) {
		ends = true;
	} else if (!M.acked && sm->kind_case != ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_HELLO_ACK) {
		ends = true;
	} else if (sm->kind_case == ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_HELLO_ACK) {
		if (M.acked) {
			ends = true;
		} else {
			uint64_t r = sm->hello_ack->resume_after_spool_seq;
			bool valid = r < ss.next_seq;
			M.acked = true;
			M.start = valid && r > M.acked_seq ? r : M.acked_seq;
			if (valid && r > M.can_have)
				M.can_have = r;
		}
	} else if (sm->kind_case == ONESHIELD__MGMT__V1__SERVER_MESSAGE__KIND_ACK) {
		ends = sm->ack->spool_seq >= ss.next_seq;
	} else if (sm->command_id[0]) {
		cmd_sent(sm->command_id);
	}
	if (sm)
		oneshield__mgmt__v1__server_message__free_unpacked(sm, NULL);
	unsigned hellos = M.hellos;
	CHECK(mgmt_fuzz_deliver(m, msg, len) == 0);
	CHECK(M.hellos == hellos);
	check_acked(m);
	check_shutdown(m);
	if (ends) {
		/* the agent must have ended it: the next message goes to a new
		 * stream, whose Hello CHECKs that the last one ended */
		CHECK(mgmt_fuzz_deliver(m, (const uint8_t *)"", 0) == -EPIPE);
		M.stream_open = false;
	}
}

static void wait_applies(void)
{
	uint64_t deadline = loop_now_ms() + DEADLINE_MS;
	loop_run_once(A.loop, 0);
	while (cfgapply_busy(A.cfgapply)) {
		if (loop_now_ms() > deadline)
			die("a config apply did not finish within the deadline", __LINE__);
		loop_run_once(A.loop, 5);
	}
}

static void run_applies(struct mgmt *m)
{
	wait_applies();
	mgmt_fuzz_flush(m);
	check_acked(m);
	check_shutdown(m);
}

static void check_managed(void)
{
	char buf[256];
	DIR *d = opendir(MANAGED_DIR);
	CHECK(d);
	for (struct dirent *de; (de = readdir(d));)
		CHECK(de->d_name[0] == '.' || !strcmp(de->d_name, MANAGED_NAME));
	closedir(d);
	FILE *f = fopen(MANAGED_DIR "/" MANAGED_NAME, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	CHECK(n == strlen(MANAGED_CONTENT) && memcmp(buf, MANAGED_CONTENT, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t hello_ack[] = { 0x12, 0x00 };	/* ServerMessage{hello_ack: {}} */
	struct mgmt *m = NULL;
	char err[512];
	size_t off = 1;

	if (!A.cfg)
		setup();
	if (size < 1)
		return 0;
	memset(&M, 0, sizeof(M));
	fuzz_empty_dir(spool_events);
	for (unsigned i = 0; i < data[0] % 8u; i++) {
		struct event *e = event_new(EV_AGENT_START, EL_INFO, "fuzz event %u", i);
		CHECK(e);
		journal_append(A.journal, e);
	}
	if (mgmt_fuzz_open(&A, on_sent, &m, &m, err, sizeof(err)))
		die(err, __LINE__);
	A.mgmt = m; /* GetStatus shows the client's own state */
	CHECK(M.hellos == 1);
	while (off < size) {
		uint8_t b = data[off++];
		switch (b % 4) {
		case 0:
		case 1: {
			size_t len = 0;
			if (off < size)
				len = data[off++];
			if (off < size)
				len |= (size_t)data[off++] << 8;
			if (len > size - off)
				len = size - off;
			bool was_busy = cfgapply_busy(A.cfgapply);
			deliver(m, data + off, len);
			/* once stopping, no command starts anything (an apply
			 * would be cut short by the exit, its result unsent) */
			if (M.closing && !was_busy)
				CHECK(!cfgapply_busy(A.cfgapply));
			off += len;
			break;
		}
		case 2:
			if (b >> 2 >= 32) {
				mgmt_plugin_begin_shutdown(m);
				M.closing = true;
				mgmt_fuzz_flush(m);
				check_shutdown(m);
				break;
			}
			mgmt_fuzz_end_stream(m, (b >> 2) % 17);
			M.stream_open = false;
			check_acked(m);
			break;
		default:
			run_applies(m);
			break;
		}
	}
	bool leave_apply = data[0] & 8;
	if (!leave_apply)
		run_applies(m);
	if (!M.stream_open || !M.acked)
		deliver(m, hello_ack, sizeof(hello_ack));
	mgmt_fuzz_flush(m);
	/* a half-closed stream sends nothing more: results wait for the next run */
	bool all = !M.closing && !(leave_apply && cfgapply_busy(A.cfgapply));
	for (size_t i = 0; i < M.ncmds; i++) {
		CHECK(all ? M.cmds[i].answered == M.cmds[i].sent : M.cmds[i].answered <= M.cmds[i].sent);
		free(M.cmds[i].id);
	}
	free(M.cmds);
	A.mgmt = NULL;
	mgmt_fuzz_close(m);
	/* an apply left running finishes without its client */
	wait_applies();
	check_managed();
	return 0;
}
