#include "testgen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "journal.h"
#include "loop.h"

static struct {
	struct loop_timer *timer;
	struct journal *journal;
	uint64_t count, emitted, rate, start_ms;
} G;

bool testgen_enabled(void)
{
	const char *v = getenv("ONESHIELD_TEST_EVENTS");
	return v && strcmp(v, "1") == 0;
}

static void emit(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		struct event *e = event_new(EV_TEST, EL_DEBUG, "test event %llu", (unsigned long long)G.emitted + 1);
		if (!e)
			return;
		journal_append(G.journal, e);
		G.emitted++;
	}
}

/* Every millisecond: catch up with rate x elapsed, so a late tick does not
 * lower the rate. */
static void tick(void *arg)
{
	(void)arg;
	uint64_t due = G.rate * (loop_now_ms() - G.start_ms) / 1000;
	if (due > G.count)
		due = G.count;
	if (due > G.emitted)
		emit(due - G.emitted);
	if (G.emitted >= G.count)
		loop_timer_disarm(G.timer);
}

int testgen_start(struct loop *l, struct journal *j, uint64_t count, uint64_t rate)
{
	if (!testgen_enabled())
		return -EPERM;
	G.journal = j;
	G.count = count;
	G.emitted = 0;
	G.rate = rate;
	G.start_ms = loop_now_ms();
	if (rate == 0) {
		emit(count);
		return 0;
	}
	if (!G.timer && !(G.timer = loop_timer_new(l, tick, NULL)))
		return -ENOMEM;
	return loop_timer_arm(G.timer, 1, 1);
}

void testgen_stop(struct loop *l)
{
	loop_timer_free(l, G.timer);
	G.timer = NULL;
}
