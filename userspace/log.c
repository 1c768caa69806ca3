#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_verbose;
static int g_journal = -1;

void log_init(int verbose)
{
	g_verbose = verbose;
	g_journal = getenv("JOURNAL_STREAM") != NULL;
}

int log_enabled(enum log_level lvl)
{
	return lvl != LL_DEBUG || g_verbose;
}

void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	static const int prio[] = { 3, 4, 6, 7 };
	char line[2048];
	int saved = errno;
	size_t n = 0;

	if (!log_enabled(lvl))
		return;
	if (g_journal < 0)
		g_journal = getenv("JOURNAL_STREAM") != NULL;
	if (g_journal) {
		n = (size_t)snprintf(line, sizeof(line), "<%d>", prio[lvl]);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ",
				      ts.tv_nsec / 1000000, names[lvl]);
	}
	int w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (w < 0)
		w = 0;
	n += (size_t)w;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	fwrite(line, 1, n, stderr);
	errno = saved;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}
