/* Logging to stderr with levels.
 *
 * When stderr is connected to the journal (JOURNAL_STREAM is set), lines carry
 * the sd-daemon "<N>" priority prefix and no timestamp; otherwise each line is
 * "YYYY-mm-ddTHH:MM:SS.mmmZ LEVEL message". Log once, where the decision is
 * made; callers return -errno further up. */
#ifndef OS_LOG_H
#define OS_LOG_H

#include <stdarg.h>

enum log_level { LL_ERROR = 0, LL_WARN, LL_INFO, LL_DEBUG };

void log_init(int verbose);
int log_enabled(enum log_level lvl);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap);

#define log_error(...) log_msg(LL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LL_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LL_DEBUG)) log_msg(LL_DEBUG, __VA_ARGS__); } while (0)

#endif
