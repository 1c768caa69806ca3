#include "journal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#define MAX_LISTENERS 8

struct journal {
	struct event **ring;
	size_t cap;
	uint64_t last;       /* seq of the newest event, 0 if none */
	uint64_t by_type[EV__COUNT];
	struct {
		journal_listener_fn fn;
		void *arg;
	} listeners[MAX_LISTENERS];
	size_t nlisteners;
	bool sealed;
	pthread_mutex_t lock;   /* appends vs readers on other threads */
};

struct journal *journal_new(size_t capacity)
{
	if (capacity == 0)
		return NULL;
	struct journal *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->ring = calloc(capacity, sizeof(*j->ring));
	if (!j->ring) {
		free(j);
		return NULL;
	}
	j->cap = capacity;
	pthread_mutex_init(&j->lock, NULL);
	return j;
}

void journal_free(struct journal *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->cap; i++)
		event_free(j->ring[i]);
	free(j->ring);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

uint64_t journal_first_seq(const struct journal *j)
{
	return j->last >= j->cap ? j->last - j->cap + 1 : 1;
}

uint64_t journal_last_seq(const struct journal *j)
{
	return j->last;
}

size_t journal_capacity(const struct journal *j)
{
	return j->cap;
}

uint64_t journal_count_by_type(const struct journal *j, enum event_type t)
{
	return (int)t >= 0 && t < EV__COUNT ? j->by_type[t] : 0;
}

uint64_t journal_append(struct journal *j, struct event *e)
{
	if (!e)
		return 0;
	if (j->sealed) {
		event_free(e);
		return 0;
	}
	pthread_mutex_lock(&j->lock);
	e->seq = j->last + 1;
	size_t slot = (size_t)(e->seq % j->cap);
	struct event *old = j->ring[slot];
	j->ring[slot] = e;
	j->last = e->seq;
	if ((int)e->type >= 0 && e->type < EV__COUNT)
		j->by_type[e->type]++;
	pthread_mutex_unlock(&j->lock);
	event_free(old);
	for (size_t i = 0; i < j->nlisteners; i++)
		j->listeners[i].fn(j->listeners[i].arg, e);
	return e->seq;
}

void journal_seal(struct journal *j)
{
	j->sealed = true;
}

const struct event *journal_get(const struct journal *j, uint64_t seq)
{
	if (seq == 0 || seq > j->last || seq < journal_first_seq(j))
		return NULL;
	return j->ring[seq % j->cap];
}

void journal_cursor_init(const struct journal *j, struct journal_cursor *c, uint64_t after, uint64_t type_mask)
{
	c->type_mask = type_mask;
	if (after == 0)
		c->next = journal_first_seq(j);
	else if (after > j->last)
		c->next = j->last + 1;
	else
		c->next = after + 1;
}

int journal_next(const struct journal *j, struct journal_cursor *c, const struct event **ev, struct event **marker)
{
	*ev = NULL;
	*marker = NULL;
	uint64_t first = journal_first_seq(j);
	if (c->next < first) {
		struct event *m = event_lost_marker(c->next, first - 1);
		c->next = first;
		if (m) {
			*marker = m;
			return 1;
		}
	}
	while (c->next <= j->last) {
		const struct event *e = j->ring[c->next % j->cap];
		c->next++;
		if (!c->type_mask || (c->type_mask & (1ULL << e->type))) {
			*ev = e;
			return 1;
		}
	}
	return 0;
}

bool journal_has_next(const struct journal *j, const struct journal_cursor *c, size_t max_scan)
{
	if (c->next < journal_first_seq(j))
		return true;
	for (uint64_t s = c->next; s <= j->last && max_scan; s++, max_scan--) {
		const struct event *e = j->ring[s % j->cap];
		if (!c->type_mask || (c->type_mask & (1ULL << e->type)))
			return true;
	}
	return false;
}

void journal_lock(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
}

void journal_unlock(struct journal *j)
{
	pthread_mutex_unlock(&j->lock);
}

int journal_add_listener(struct journal *j, journal_listener_fn fn, void *arg)
{
	if (j->nlisteners == MAX_LISTENERS)
		return -ENOSPC;
	j->listeners[j->nlisteners].fn = fn;
	j->listeners[j->nlisteners].arg = arg;
	j->nlisteners++;
	return 0;
}

void journal_remove_listener(struct journal *j, journal_listener_fn fn, void *arg)
{
	for (size_t i = 0; i < j->nlisteners; i++) {
		if (j->listeners[i].fn == fn && j->listeners[i].arg == arg) {
			j->listeners[i] = j->listeners[--j->nlisteners];
			return;
		}
	}
}
