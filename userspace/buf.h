/* A growable byte buffer. The buffer owns data; buf_steal hands it to the
 * caller (who frees it with free()). On allocation failure the buffer sets
 * oom, keeps what it had, and every later append fails with -ENOMEM, so a
 * renderer can append freely and check once at the end. data is always
 * NUL-terminated when len > 0. */
#ifndef OS_BUF_H
#define OS_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
	bool oom;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *buf_steal(struct buf *b, size_t *len);

#endif
