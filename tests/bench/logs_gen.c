/* Synthetic nginx "combined" access log for the log-parsing benchmark.
 *
 *   logs_gen MB OUTPUT [json]   (deterministic: the same MB gives the same file)
 *
 * Variety that matters to parsers: IPv4 and IPv6 clients from a large pool,
 * remote users, methods, protocols, statuses and sizes with realistic
 * weights, paths with query strings and percent-escapes, referers and user
 * agents from pools, nginx "\x22" escapes inside quoted fields, TLS
 * handshakes sent to a plain port (a binary request line logged escaped,
 * status 400) and requests nginx logs as "-". The timestamp advances about
 * one second per 200 lines.
 *
 * With "json", the same requests as JSON lines in nginx escape=json style
 * with keys named after the variables, plus $request_time and
 * $upstream_response_time (a list when a retry happened):
 *   {"time_local":..,"remote_addr":..,"remote_user":..,"request":..,
 *    "status":..,"body_bytes_sent":..,"request_time":..,
 *    "upstream_response_time":..,"http_referer":..,"http_user_agent":..} */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
	/* xorshift64* */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

static unsigned below(unsigned n)
{
	return (unsigned)((next() >> 33) % n);
}

struct weighted {
	const char *s;
	unsigned w;
};

static const char *pick(const struct weighted *t, size_t n)
{
	unsigned total = 0, r;

	for (size_t i = 0; i < n; i++)
		total += t[i].w;
	r = below(total);
	for (size_t i = 0; i < n; i++) {
		if (r < t[i].w)
			return t[i].s;
		r -= t[i].w;
	}
	return t[0].s;
}

#define PICK(t) pick(t, sizeof(t) / sizeof(t[0]))

static const struct weighted methods[] = {
	{ "GET", 800 }, { "POST", 120 }, { "HEAD", 30 }, { "PUT", 20 },
	{ "DELETE", 10 }, { "OPTIONS", 10 }, { "PATCH", 9 }, { "PROPFIND", 1 },
};
static const struct weighted protos[] = { { "HTTP/1.1", 70 }, { "HTTP/2.0", 25 }, { "HTTP/1.0", 5 } };
static const struct weighted statuses[] = {
	{ "200", 7400 }, { "304", 800 }, { "301", 200 }, { "302", 200 }, { "404", 600 },
	{ "206", 100 }, { "204", 150 }, { "201", 100 }, { "400", 80 }, { "401", 80 },
	{ "403", 60 }, { "499", 50 }, { "500", 40 }, { "502", 60 }, { "503", 40 }, { "504", 30 },
	{ "429", 9 }, { "418", 1 },
};
static const struct weighted users[] = { { "-", 97 }, { "alice", 2 }, { "bob.smith", 1 } };
static const char *const words[] = {
	"nginx", "agent", "metrics", "latency", "shoes", "coffee", "linux", "kernel", "ebpf",
	"release", "pricing", "docs", "login", "cart", "checkout", "blue", "red", "search",
};
static const char *const refhosts[] = {
	"https://www.google.com/", "https://example.com/", "https://news.ycombinator.com/item?id=",
	"https://duckduckgo.com/?q=", "https://t.co/", "http://localhost:8080/admin/",
	"https://www.bing.com/search?q=", "https://shop.example.org/products/",
};
static const struct weighted agents[] = {
	{ "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
	  "Safari/537.36", 300 },
	{ "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
	  "Version/17.2 Safari/605.1.15", 150 },
	{ "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", 100 },
	{ "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
	  "Version/17.2 Mobile/15E148 Safari/604.1", 150 },
	{ "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 "
	  "Mobile Safari/537.36", 100 },
	{ "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 50 },
	{ "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 20 },
	{ "curl/7.88.1", 40 },
	{ "python-requests/2.31.0", 30 },
	{ "Go-http-client/1.1", 20 },
	{ "Prometheus/2.48.0", 20 },
	{ "Mozilla/5.0 \\x22quoted\\x22 (evil; bot)", 3 },
	{ "-", 17 },
};

/* The pools hold nginx's default escape (\x22); escape=json writes \". */
static void json_escape(char *o, size_t n, const char *s)
{
	size_t j = 0;

	for (; *s && j + 3 < n; s++) {
		if (!strncmp(s, "\\x22", 4)) {
			o[j++] = '\\';
			o[j++] = '"';
			s += 3;
		} else {
			o[j++] = *s;
		}
	}
	o[j] = 0;
}

static int path(char *o, size_t n)
{
	unsigned k = below(100);

	if (k < 15)
		return snprintf(o, n, "/");
	if (k < 35)
		return snprintf(o, n, "/static/%s/%s.%08x.%s", below(2) ? "js" : "css", words[below(18)],
				(unsigned)next(), below(2) ? "js" : "css");
	if (k < 55)
		return snprintf(o, n, "/api/v1/%s/%u", words[below(18)], below(1000000));
	if (k < 65)
		return snprintf(o, n, "/api/v1/orders?page=%u&sort=desc&limit=%u", below(500), 10 + below(90));
	if (k < 75)
		return snprintf(o, n, "/images/%s-%u.%s", words[below(18)], below(5000), below(3) ? "png" : "webp");
	if (k < 85)
		return snprintf(o, n, "/search?q=%s+%s&lang=en", words[below(18)], words[below(18)]);
	if (k < 88)
		return snprintf(o, n, "/search?q=%%22%s%%22+%%3Cb%%3E", words[below(18)]);
	if (k < 92)
		return snprintf(o, n, "/blog/%u/%02u/%s-%s-%s.html", 2018 + below(7), 1 + below(12), words[below(18)],
				words[below(18)], words[below(18)]);
	if (k < 94)
		return snprintf(o, n, "/wp-login.php");
	if (k < 95)
		return snprintf(o, n, "/.env");
	if (k < 96)
		return snprintf(o, n, "/cgi-bin/../../etc/passwd");
	return snprintf(o, n, "/product/%u?utm_source=%s&utm_medium=email&utm_campaign=%s", below(100000),
			words[below(18)], words[below(18)]);
}

int main(int argc, char **argv)
{
	static char out[1 << 20];
	size_t used = 0;
	uint64_t target, written = 0, lines = 0;
	time_t t = 1704153600;   /* 2024-01-02 00:00:00 UTC */
	char ts[64], p[512], ref[512];
	FILE *f;

	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "json"))) {
		fprintf(stderr, "usage: %s MB OUTPUT [json]\n", argv[0]);
		return 2;
	}
	bool json = argc == 4;
	target = strtoull(argv[1], NULL, 10) << 20;
	f = fopen(argv[2], "w");
	if (!f) {
		fprintf(stderr, "%s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	while (written + used < target) {
		char ip[64];
		const char *st, *ua, *m, *pr, *u;
		unsigned long size;
		int n;

		if (lines % 200 == 0) {
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(ts, sizeof(ts), "%d/%b/%Y:%H:%M:%S +0000", &tm);
			t++;
		}
		lines++;
		/* a pool of 200000 clients, a few of them much busier */
		uint64_t c = below(8) ? below(200000) : below(50);
		c = (c + 1) * 0x9E3779B97F4A7C15ull;
		c ^= c >> 29;
		if (c % 20 == 0)
			snprintf(ip, sizeof(ip), "2001:db8:%x:%x::%x", (unsigned)(c >> 8) & 0xffff,
				 (unsigned)(c >> 24) & 0xffff, (unsigned)(c >> 40) & 0xffff);
		else
			snprintf(ip, sizeof(ip), "%u.%u.%u.%u", 1 + (unsigned)((c >> 8) % 223), (unsigned)(c >> 16) & 255,
				 (unsigned)(c >> 24) & 255, 1 + (unsigned)((c >> 32) % 254));
		u = PICK(users);
		st = PICK(statuses);
		m = PICK(methods);
		pr = PICK(protos);
		ua = PICK(agents);
		size = st[0] == '3' && st[2] == '4' ? 0 : 200 + (unsigned long)(next() % 60000) * (below(10) ? 1 : 40);
		if (below(4) == 0)
			snprintf(ref, sizeof(ref), "-");
		else
			snprintf(ref, sizeof(ref), "%s%s", refhosts[below(8)], below(50) ? words[below(18)] : "\\x22x\\x22");
		if (used + 2048 > sizeof(out)) {
			fwrite(out, 1, used, f);
			written += used;
			used = 0;
		}
		char *o = out + used;
		size_t room = sizeof(out) - used;
		unsigned k = below(1000);
		if (json) {
			/* escape=json: "" for empty values, \" and \uXXXX escapes */
			char rt[32], ut[48], req[700], jua[512], jref[512];
			unsigned ms = 1 + below(40) + (below(20) ? 0 : below(3000));
			snprintf(rt, sizeof(rt), "%u.%03u", ms / 1000, ms % 1000);
			ut[0] = 0;
			if (below(50) == 0)
				snprintf(ut, sizeof(ut), "0.%03u, %u.%03u", below(1000), (ms - 1) / 1000, (ms - 1) % 1000);
			else if (below(3))
				snprintf(ut, sizeof(ut), "%u.%03u", (ms - 1) / 1000, (ms - 1) % 1000);
			if (k == 0) {
				snprintf(req, sizeof(req), "\\u0016\\u0003\\u0001\\u0002\\u0000\\u0001");
				st = "400";
			} else if (k == 1) {
				req[0] = 0;
				st = "400";
			} else {
				path(p, sizeof(p));
				snprintf(req, sizeof(req), "%s %s %s", m, p, pr);
			}
			json_escape(jua, sizeof(jua), strcmp(ua, "-") ? ua : "");
			json_escape(jref, sizeof(jref), strcmp(ref, "-") ? ref : "");
			n = snprintf(o, room,
				     "{\"time_local\":\"%s\",\"remote_addr\":\"%s\",\"remote_user\":\"%s\",\"request\":\"%s\","
				     "\"status\":%s,\"body_bytes_sent\":%lu,\"request_time\":%s,\"upstream_response_time\":\"%s\","
				     "\"http_referer\":\"%s\",\"http_user_agent\":\"%s\"}\n",
				     ts, ip, strcmp(u, "-") ? u : "", req, st, size, rt, ut, jref, jua);
		} else if (k == 0) {
			/* TLS ClientHello on a plain-HTTP port */
			n = snprintf(o, room,
				     "%s - - [%s] \"\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xFC\\x03\\x03\" 400 157 \"-\" \"-\"\n",
				     ip, ts);
		} else if (k == 1) {
			n = snprintf(o, room, "%s - - [%s] \"-\" 400 0 \"-\" \"-\"\n", ip, ts);
		} else {
			path(p, sizeof(p));
			n = snprintf(o, room, "%s - %s [%s] \"%s %s %s\" %s %lu \"%s\" \"%s\"\n", ip, u, ts, m, p, pr, st,
				     size, ref, ua);
		}
		used += (size_t)n;
	}
	fwrite(out, 1, used, f);
	if (fclose(f)) {
		fprintf(stderr, "%s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	printf("%llu lines, %llu bytes\n", (unsigned long long)lines, (unsigned long long)(written + used));
	return 0;
}
