/* Test-only event generator: TEST_EVENT_MESSAGE events at a given rate, for
 * the fan-out benchmark and for journal-overflow tests. Reachable only when
 * the agent runs with ONESHIELD_TEST_EVENTS=1 in its environment (REST
 * POST /v1/test/events?count=N&rate=R); off otherwise. */
#ifndef OS_TESTGEN_H
#define OS_TESTGEN_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct journal;

bool testgen_enabled(void);
/* rate 0: all count events now. Replaces a run in progress. 0 / -errno. */
int testgen_start(struct loop *l, struct journal *j, uint64_t count, uint64_t rate);
void testgen_stop(struct loop *l);

#endif
