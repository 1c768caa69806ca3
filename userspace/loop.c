#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define MAX_PREPARE 4
#define BATCH 32

struct loop_io {
	int fd;
	bool dead;
	loop_io_fn fn;
	void *arg;
	struct loop_io *next_dead;
};

struct loop_timer {
	struct loop_io *io;
	int fd;
	loop_timer_fn fn;
	void *arg;
};

struct loop {
	int epfd;
	bool stop;
	struct loop_io *dead;
	struct {
		loop_prepare_fn fn;
		void *arg;
	} prep[MAX_PREPARE];
	int nprep;
};

uint64_t loop_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	return l;
}

static void reap_dead(struct loop *l)
{
	while (l->dead) {
		struct loop_io *io = l->dead;
		l->dead = io->next_dead;
		free(io);
	}
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	reap_dead(l);
	close(l->epfd);
	free(l);
}

struct loop_io *loop_io_add(struct loop *l, int fd, uint32_t events, loop_io_fn fn, void *arg)
{
	struct loop_io *io = calloc(1, sizeof(*io));
	if (!io)
		return NULL;
	io->fd = fd;
	io->fn = fn;
	io->arg = arg;
	struct epoll_event ev = { .events = events, .data.ptr = io };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;
		free(io);
		errno = e;
		return NULL;
	}
	return io;
}

int loop_io_mod(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0 ? -errno : 0;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (!io || io->dead)
		return;
	/* The fd may already be closed by its owner; then epoll dropped it. */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->dead = true;
	io->next_dead = l->dead;
	l->dead = io;
}

static void timer_ready(void *arg, int fd, uint32_t events)
{
	struct loop_timer *t = arg;
	uint64_t n;
	(void)events;
	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return;
	t->fn(t->arg);
}

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *arg)
{
	struct loop_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->fd < 0) {
		free(t);
		return NULL;
	}
	t->fn = fn;
	t->arg = arg;
	t->io = loop_io_add(l, t->fd, EPOLLIN, timer_ready, t);
	if (!t->io) {
		close(t->fd);
		free(t);
		return NULL;
	}
	return t;
}

static struct timespec ms_ts(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
	return ts;
}

int loop_timer_arm(struct loop_timer *t, uint64_t first_ms, uint64_t interval_ms)
{
	struct itimerspec its = { .it_value = ms_ts(first_ms ? first_ms : 1), .it_interval = ms_ts(interval_ms) };
	return timerfd_settime(t->fd, 0, &its, NULL) < 0 ? -errno : 0;
}

int loop_timer_disarm(struct loop_timer *t)
{
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	return timerfd_settime(t->fd, 0, &its, NULL) < 0 ? -errno : 0;
}

void loop_timer_free(struct loop *l, struct loop_timer *t)
{
	if (!t)
		return;
	loop_io_del(l, t->io);
	close(t->fd);
	/* t->io's callback argument is t: the io entry is dead, so a pending
	 * event of this batch is skipped before it could reach freed t. */
	free(t);
}

int loop_add_prepare(struct loop *l, loop_prepare_fn fn, void *arg)
{
	if (l->nprep == MAX_PREPARE)
		return -ENOSPC;
	l->prep[l->nprep].fn = fn;
	l->prep[l->nprep].arg = arg;
	l->nprep++;
	return 0;
}

void loop_remove_prepare(struct loop *l, loop_prepare_fn fn, void *arg)
{
	for (int i = 0; i < l->nprep; i++) {
		if (l->prep[i].fn == fn && l->prep[i].arg == arg) {
			l->prep[i] = l->prep[--l->nprep];
			return;
		}
	}
}

int loop_run_once(struct loop *l, int max_ms)
{
	struct epoll_event evs[BATCH];
	int timeout = max_ms;
	for (int i = 0; i < l->nprep; i++) {
		int t = l->prep[i].fn(l->prep[i].arg);
		if (t >= 0 && (timeout < 0 || t < timeout))
			timeout = t;
	}
	int n = epoll_wait(l->epfd, evs, BATCH, timeout);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		log_error("epoll_wait: %s", strerror(errno));
		return -errno;
	}
	for (int i = 0; i < n; i++) {
		struct loop_io *io = evs[i].data.ptr;
		if (!io->dead)
			io->fn(io->arg, io->fd, evs[i].events);
	}
	reap_dead(l);
	return 0;
}

int loop_run(struct loop *l)
{
	while (!l->stop) {
		int r = loop_run_once(l, -1);
		if (r < 0)
			return r;
	}
	return 0;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

bool loop_stopped(const struct loop *l)
{
	return l->stop;
}
