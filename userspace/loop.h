/* The core loop: one epoll set, owned by the one thread that owns agent state.
 *
 * Sources register an fd with a callback; timers are timerfds on the same
 * set, so the loop sleeps in exactly one place. Removing a source from inside
 * a callback is safe: the entry is marked dead and freed after the current
 * batch of ready events, so a later entry of the same batch never touches
 * freed memory. A prepare hook runs before every sleep and may shorten it
 * (libmicrohttpd's own timeout, deferred work). */
#ifndef OS_LOOP_H
#define OS_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_fn)(void *arg, int fd, uint32_t events);
typedef void (*loop_timer_fn)(void *arg);
/* Returns the longest the loop may sleep in ms (-1 = no limit). */
typedef int (*loop_prepare_fn)(void *arg);

struct loop *loop_new(void);
void loop_free(struct loop *l);                       /* accepts NULL */

/* The loop does not own fd (it does not close it). */
struct loop_io *loop_io_add(struct loop *l, int fd, uint32_t events, loop_io_fn fn, void *arg);
int loop_io_mod(struct loop *l, struct loop_io *io, uint32_t events);
void loop_io_del(struct loop *l, struct loop_io *io); /* accepts NULL */

/* Timers: first fire after first_ms, then every interval_ms (0 = once). */
struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *arg);
int loop_timer_arm(struct loop_timer *t, uint64_t first_ms, uint64_t interval_ms);
int loop_timer_disarm(struct loop_timer *t);
void loop_timer_free(struct loop *l, struct loop_timer *t); /* accepts NULL */

int loop_add_prepare(struct loop *l, loop_prepare_fn fn, void *arg);
void loop_remove_prepare(struct loop *l, loop_prepare_fn fn, void *arg);

/* Run until loop_stop; returns 0, or -errno if epoll_wait fails. */
int loop_run(struct loop *l);
/* One iteration with an upper bound on sleep (for drain phases). */
int loop_run_once(struct loop *l, int max_ms);
void loop_stop(struct loop *l);
bool loop_stopped(const struct loop *l);

uint64_t loop_now_ms(void);                           /* CLOCK_MONOTONIC */

#endif
