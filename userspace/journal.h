/* The event journal: a bounded ring of the last N events, by sequence number.
 *
 * Sequence numbers start at 1 and every appended event takes the next one, so
 * a reader that sees a gap knows it lost events. Readers are cursors, not
 * registered queues: the journal never waits for anybody, and a reader that
 * falls behind the ring finds out on its next read, as one EVENTS_LOST marker
 * naming the exact range it missed. Listeners are told after each append so
 * streaming endpoints can wake their suspended connections.
 *
 * Ownership: journal_append takes the event; events stay valid until evicted
 * (the next capacity appends), so callers must not keep pointers across a
 * return to the loop. Markers handed out by journal_next belong to the caller.
 *
 * Threads: the core loop appends, and reads without locking. Another thread
 * (the gRPC server's completion-queue thread) may read between journal_lock
 * and journal_unlock: journal_append takes the same lock while it changes
 * the ring, so nothing is evicted under the reader, and an event it gets
 * stays valid until it unlocks. Such a reader must not append, seal or free,
 * and should not ask journal_next for a marker (check journal_first_seq
 * first): markers are the core loop's to account. */
#ifndef OS_JOURNAL_H
#define OS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct journal;

struct journal_cursor {
	uint64_t next;      /* next seq to deliver */
	uint64_t type_mask; /* bit t set = deliver type t; 0 = all */
};

typedef void (*journal_listener_fn)(void *arg, const struct event *e);

struct journal *journal_new(size_t capacity);
void journal_free(struct journal *j);                  /* accepts NULL */
/* Takes e (also on failure). Returns its seq, or 0 when sealed. */
uint64_t journal_append(struct journal *j, struct event *e);
/* After the final event (AGENT_STOP_MESSAGE): later appends are dropped, so
 * streams that drain at shutdown end on it. */
void journal_seal(struct journal *j);
uint64_t journal_first_seq(const struct journal *j); /* oldest kept; last+1 when empty */
uint64_t journal_last_seq(const struct journal *j);  /* 0 before the first event */
size_t journal_capacity(const struct journal *j);
const struct event *journal_get(const struct journal *j, uint64_t seq);
uint64_t journal_count_by_type(const struct journal *j, enum event_type t); /* appended since start */

/* Position a cursor for "events after seq after" (0 = from the oldest kept).
 * A value beyond the last seq (a client resuming against a restarted agent)
 * is clamped so the reader gets the new events rather than silence. */
void journal_cursor_init(const struct journal *j, struct journal_cursor *c, uint64_t after, uint64_t type_mask);
/* Next deliverable item: returns 1 with *ev set (a journal event, do not free)
 * or *marker set (a lost marker, caller frees), 0 when the reader is caught up. */
int journal_next(const struct journal *j, struct journal_cursor *c, const struct event **ev, struct event **marker);

/* Would journal_next return something? Looks at most max_scan events ahead
 * (a filtered reader far behind may have none matching for a long way);
 * false beyond that. Allocates nothing. */
bool journal_has_next(const struct journal *j, const struct journal_cursor *c, size_t max_scan);

/* For readers on other threads (see the top of this file). */
void journal_lock(struct journal *j);
void journal_unlock(struct journal *j);

int journal_add_listener(struct journal *j, journal_listener_fn fn, void *arg);
void journal_remove_listener(struct journal *j, journal_listener_fn fn, void *arg);

#endif
