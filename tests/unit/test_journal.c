/* Journal: sequence numbers, eviction, cursors, lost markers, filters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "journal.h"

static uint64_t add(struct journal *j, enum event_type t)
{
	return journal_append(j, event_new(t, EL_INFO, "event of type %d", t));
}

/* Read everything the cursor has: returns count; seqs[] gets event seqs,
 * markers are recorded as 0 with their range in lf and lt. */
static size_t drain(struct journal *j, struct journal_cursor *c, uint64_t *seqs, size_t max, uint64_t *lf, uint64_t *lt)
{
	size_t n = 0;
	const struct event *e;
	struct event *m;
	while (n < max && journal_next(j, c, &e, &m)) {
		if (m) {
			assert_int_equal(m->type, EV_EVENTS_LOST);
			*lf = m->lost_from;
			*lt = m->lost_to;
			seqs[n++] = 0;
			event_free(m);
		} else {
			seqs[n++] = e->seq;
		}
	}
	return n;
}

static void test_seq_starts_at_one_and_is_consecutive(void **state)
{
	(void)state;
	struct journal *j = journal_new(8);
	assert_int_equal(journal_last_seq(j), 0);
	assert_int_equal(journal_first_seq(j), 1);
	for (uint64_t i = 1; i <= 5; i++)
		assert_int_equal(add(j, EV_ONEPANEL_FOUND), i);
	assert_int_equal(journal_first_seq(j), 1);
	assert_int_equal(journal_last_seq(j), 5);
	assert_non_null(journal_get(j, 3));
	assert_int_equal(journal_get(j, 3)->seq, 3);
	assert_null(journal_get(j, 0));
	assert_null(journal_get(j, 6));
	journal_free(j);
}

static void test_eviction_keeps_last_n(void **state)
{
	(void)state;
	struct journal *j = journal_new(4);
	for (int i = 0; i < 10; i++)
		add(j, EV_AGENT_START);
	assert_int_equal(journal_first_seq(j), 7);
	assert_int_equal(journal_last_seq(j), 10);
	assert_null(journal_get(j, 6));
	assert_int_equal(journal_get(j, 7)->seq, 7);
	assert_int_equal(journal_count_by_type(j, EV_AGENT_START), 10);
	journal_free(j);
}

static void test_cursor_from_oldest_has_no_marker(void **state)
{
	(void)state;
	struct journal *j = journal_new(4);
	for (int i = 0; i < 10; i++)
		add(j, EV_AGENT_START);
	struct journal_cursor c;
	uint64_t seqs[16], lf = 0, lt = 0;
	journal_cursor_init(j, &c, 0, 0);
	size_t n = drain(j, &c, seqs, 16, &lf, &lt);
	assert_int_equal(n, 4);
	assert_int_equal(seqs[0], 7);
	assert_int_equal(seqs[3], 10);
	journal_free(j);
}

static void test_resume_after_seq(void **state)
{
	(void)state;
	struct journal *j = journal_new(16);
	for (int i = 0; i < 10; i++)
		add(j, EV_AGENT_START);
	struct journal_cursor c;
	uint64_t seqs[16], lf = 0, lt = 0;
	journal_cursor_init(j, &c, 6, 0);
	size_t n = drain(j, &c, seqs, 16, &lf, &lt);
	assert_int_equal(n, 4);
	assert_int_equal(seqs[0], 7);
	/* caught up: nothing more, then live events arrive */
	assert_int_equal(drain(j, &c, seqs, 16, &lf, &lt), 0);
	add(j, EV_AGENT_STOP);
	assert_int_equal(drain(j, &c, seqs, 16, &lf, &lt), 1);
	assert_int_equal(seqs[0], 11);
	journal_free(j);
}

static void test_resume_beyond_last_is_clamped(void **state)
{
	(void)state;
	struct journal *j = journal_new(16);
	add(j, EV_AGENT_START);
	struct journal_cursor c;
	uint64_t seqs[4], lf = 0, lt = 0;
	journal_cursor_init(j, &c, 500, 0);
	assert_int_equal(drain(j, &c, seqs, 4, &lf, &lt), 0);
	add(j, EV_AGENT_STOP);
	assert_int_equal(drain(j, &c, seqs, 4, &lf, &lt), 1);
	assert_int_equal(seqs[0], 2);
	journal_free(j);
}

static void test_slow_reader_gets_exact_lost_marker(void **state)
{
	(void)state;
	struct journal *j = journal_new(4);
	struct journal_cursor c;
	uint64_t seqs[16], lf = 0, lt = 0;
	add(j, EV_AGENT_START);
	journal_cursor_init(j, &c, 0, 0);
	assert_int_equal(drain(j, &c, seqs, 1, &lf, &lt), 1); /* read seq 1 */
	for (int i = 0; i < 9; i++)                             /* 2..10; keeps 7..10 */
		add(j, EV_ONEPANEL_FOUND);
	size_t n = drain(j, &c, seqs, 16, &lf, &lt);
	assert_int_equal(n, 5);
	assert_int_equal(seqs[0], 0);
	assert_int_equal(lf, 2);
	assert_int_equal(lt, 6);
	assert_int_equal(seqs[1], 7);
	assert_int_equal(seqs[4], 10);
	journal_free(j);
}

static void test_resume_too_old_gets_marker_first(void **state)
{
	(void)state;
	struct journal *j = journal_new(4);
	for (int i = 0; i < 10; i++)
		add(j, EV_AGENT_START);
	struct journal_cursor c;
	uint64_t seqs[16], lf = 0, lt = 0;
	journal_cursor_init(j, &c, 2, 0);
	size_t n = drain(j, &c, seqs, 16, &lf, &lt);
	assert_int_equal(n, 5);
	assert_int_equal(seqs[0], 0);
	assert_int_equal(lf, 3);
	assert_int_equal(lt, 6);
	journal_free(j);
}

static void test_type_filter(void **state)
{
	(void)state;
	struct journal *j = journal_new(16);
	add(j, EV_AGENT_START);
	add(j, EV_ONEPANEL_FOUND);
	add(j, EV_ONEPANEL_STOP);
	add(j, EV_ONEPANEL_FOUND);
	struct journal_cursor c;
	uint64_t seqs[16], lf = 0, lt = 0;
	journal_cursor_init(j, &c, 0, 1ULL << EV_ONEPANEL_FOUND);
	size_t n = drain(j, &c, seqs, 16, &lf, &lt);
	assert_int_equal(n, 2);
	assert_int_equal(seqs[0], 2);
	assert_int_equal(seqs[1], 4);
	journal_free(j);
}

static void test_has_next(void **state)
{
	(void)state;
	struct journal *j = journal_new(8);
	struct journal_cursor c;
	journal_cursor_init(j, &c, 0, 1ULL << EV_ONEPANEL_STOP);
	assert_false(journal_has_next(j, &c, 64));
	add(j, EV_AGENT_START);
	add(j, EV_ONEPANEL_FOUND);
	assert_false(journal_has_next(j, &c, 64)); /* nothing of its type */
	add(j, EV_ONEPANEL_STOP);
	assert_true(journal_has_next(j, &c, 64));
	assert_false(journal_has_next(j, &c, 2));  /* beyond the scan limit */
	for (int i = 0; i < 20; i++)                /* overrun: a marker is due */
		add(j, EV_AGENT_START);
	assert_true(journal_has_next(j, &c, 1));
	journal_free(j);
}

static void test_seal(void **state)
{
	(void)state;
	struct journal *j = journal_new(8);
	add(j, EV_AGENT_START);
	assert_int_equal(add(j, EV_AGENT_STOP), 2);
	journal_seal(j);
	assert_int_equal(add(j, EV_ONEPANEL_STOP), 0);
	assert_int_equal(journal_last_seq(j), 2);
	journal_free(j);
}

static int calls;
static uint64_t last_seen;
static void listener(void *arg, const struct event *e)
{
	(void)arg;
	calls++;
	last_seen = e->seq;
}

static void test_listeners(void **state)
{
	(void)state;
	struct journal *j = journal_new(4);
	calls = 0;
	assert_int_equal(journal_add_listener(j, listener, NULL), 0);
	add(j, EV_AGENT_START);
	add(j, EV_AGENT_STOP);
	assert_int_equal(calls, 2);
	assert_int_equal(last_seen, 2);
	journal_remove_listener(j, listener, NULL);
	add(j, EV_AGENT_STOP);
	assert_int_equal(calls, 2);
	journal_free(j);
}

static void test_event_json_and_names(void **state)
{
	(void)state;
	struct event *e = event_new(EV_ONEPANEL_STOP, EL_WARNING, "stopped %d", 42);
	e->pid = 42;
	e->has_exit = true;
	e->signal = 9;
	e->seq = 7;
	event_set_field(e, "exe", "/usr/sbin/nginx");
	event_set_field(e, "exe", "/usr/sbin/nginx2"); /* replaces */
	event_set_correlation(e, "abc");
	cJSON *j = event_to_json(e);
	assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "ONEPANEL_STOP_MESSAGE");
	assert_int_equal(cJSON_GetObjectItem(j, "seq")->valueint, 7);
	assert_int_equal(cJSON_GetObjectItem(j, "signal")->valueint, 9);
	assert_null(cJSON_GetObjectItem(j, "exit_code"));
	assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "warning");
	assert_string_equal(cJSON_GetObjectItem(j, "correlation_id")->valuestring, "abc");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "fields"), "exe")->valuestring,
			    "/usr/sbin/nginx2");
	cJSON_Delete(j);
	event_free(e);

	const char *seed[] = { "AGENT_START_MESSAGE", "AGENT_STOP_MESSAGE", "ONEPANEL_FOUND_MESSAGE",
			       "ONEPANEL_STOP_MESSAGE", "ONEPANEL_RELOAD_SUCCESS_MESSAGE",
			       "ONEPANEL_RELOAD_FAILED_MESSAGE", "CONFIG_APPLY_SUCCESS_MESSAGE",
			       "CONFIG_APPLY_FAILURE_MESSAGE" };
	for (int i = 0; i < 8; i++) {
		enum event_type t;
		assert_int_equal(event_type_parse(seed[i], &t), 0);
		assert_int_equal(t, i + 1);
		assert_string_equal(event_type_name(t), seed[i]);
	}
	enum event_type t;
	assert_int_equal(event_type_parse("agent_start_message", &t), -22);
	assert_int_equal(event_type_parse("EVENT_TYPE_UNSPECIFIED", &t), -22);
	assert_null(event_type_name(EV__COUNT));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seq_starts_at_one_and_is_consecutive),
		cmocka_unit_test(test_eviction_keeps_last_n),
		cmocka_unit_test(test_cursor_from_oldest_has_no_marker),
		cmocka_unit_test(test_resume_after_seq),
		cmocka_unit_test(test_resume_beyond_last_is_clamped),
		cmocka_unit_test(test_slow_reader_gets_exact_lost_marker),
		cmocka_unit_test(test_resume_too_old_gets_marker_first),
		cmocka_unit_test(test_type_filter),
		cmocka_unit_test(test_has_next),
		cmocka_unit_test(test_seal),
		cmocka_unit_test(test_listeners),
		cmocka_unit_test(test_event_json_and_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
