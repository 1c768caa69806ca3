/* spool: the bounded on-disk event spool (issue 7, "Push to One Shield").
 *
 * Why it looks like this:
 *
 * - Numbering. The agent's journal restarts at seq 1 with every agent start,
 *   so the server cannot dedup by it. The spool gives every record its own
 *   "spool seq", assigned at append, contiguous within a segment, never
 *   reused: at open the next seq is the maximum of what the segments hold,
 *   what the state file recorded at its last write, and anything seen in a
 *   damaged file. Seqs that were handed out and are gone are a gap, and a
 *   gap is a loss the server must hear about. The caller's own seq (journal
 *   seq) travels inside the payload if it wants it there.
 *
 * - Gaps instead of a list of lost ranges. Every seq in (acked, next) is
 *   either a record on disk or lost: records are removed only when acked,
 *   dropped at the cap (oldest whole segments), quarantined, or cut off by a
 *   crash. So the lost ranges are exactly the holes between the segments
 *   above the acked seq (plus, at the end, seqs the state file had counted
 *   but the disk lost), and need no bookkeeping of their own that could
 *   disagree with the disk: they survive restarts because the segments and
 *   the state file do, and they disappear when the server acks past them.
 *   A cursor returns each hole in stream order as a LOST item, before the
 *   records after it, so "report the lost range, then go on" cannot be done
 *   in the wrong order or forgotten on reconnect (the brief's
 *   spool_take_lost became this).
 *
 * - Never send what a crash could take back. A cursor delivers a record
 *   only once it is durable under the fsync policy (ALWAYS: at append;
 *   INTERVAL: after the next sync; NEVER: at write, i.e. the page cache),
 *   and a hole only below the durable end. After power loss the next seq is
 *   therefore above anything the server may have seen, and a reused seq
 *   cannot make the server drop a new event as a duplicate (except under
 *   NEVER, which says so).
 *
 * - Files. A segment "seg-<20-digit base seq>.spool" is a 32-byte header
 *   (magic "OSSPSEG1", version, base seq, CRC32C) and records, each 8-byte
 *   aligned:
 *
 *       0  u32 hcrc   CRC32C of bytes 4..24 (the rest of this header)
 *       4  u32 len    payload bytes (<= SPOOL_MAX_PAYLOAD)
 *       8  u64 seq
 *      16  u8  type, u8 flags (0), u16 magic 0x5253
 *      20  u32 dcrc   CRC32C of the payload
 *      24  payload, then zero padding to a multiple of 8
 *
 *   All little-endian. Two CRCs so a header can be trusted before its length
 *   is used, and so recovery can look for the next valid record cheaply.
 *   The state file "state" (magic "OSSPSTA1", spool id, acked seq, next seq,
 *   totals, up to SPOOL_MAX_LOST_NOTES notes "from..to lost because R", and
 *   a CRC32C of it all: 80 bytes + 24 per note) is replaced atomically, tmp
 *   + fsync + rename + directory fsync, like cfgfs writes config files. The
 *   notes only name the reason of a gap for EventsLost.reason; a gap never
 *   depends on a note, and a note outlives nothing the server has acked.
 *   A state file that is missing or fails its checks (kept as
 *   state.corrupt) starts a new spool id: the server then opens a new
 *   record instead of dropping our seqs as duplicates of the old ones, and
 *   what is on disk is taken as unacked (resent, never declared lost).
 *
 * - Recovery at open reads every segment and checks every CRC. Damage in the
 *   newest segment is taken for a crash (a torn append, or pages of an
 *   unsynced interval written back out of order): its valid prefix is kept,
 *   the rest cut off, and if valid records follow the damage a copy of the
 *   file is kept as *.corrupt first and their seqs are not reused. Damage in
 *   any older segment cannot come from a crash (segments are synced when
 *   they stop being the newest, except under NEVER): the whole segment is
 *   renamed *.corrupt (the newest SPOOL_KEEP_CORRUPT are kept), logged and
 *   counted, and its seqs become a hole. Nothing is parsed without a bound
 *   check first, so no byte content can crash it (fuzzed). Memory is one
 *   small entry per segment, never per record.
 *
 * - Acks are cheap: they change memory only. Whole segments are deleted
 *   when acked, after the state file says so (a deleted segment that comes
 *   back after a crash is acked and goes again); the state file is also
 *   written by spool_tick/spool_sync/close. Losing an ack in a crash costs
 *   resending, which at-least-once allows. A full disk must not keep acked
 *   segments from being deleted: if the state write fails for lack of space,
 *   they are deleted anyway (after a crash the server might hear of a hole
 *   it already has, harmless).
 *
 * - Appends are all or nothing. A failed write (ENOSPC...) is truncated
 *   away and uses no seq: the caller still has the event and decides (the
 *   spool cannot record anything on a full disk anyway). An ack of a seq
 *   never handed out is refused (-ERANGE): that server speaks of another
 *   spool, and clamping would delete records it never had.
 *
 * - Costs: ALWAYS is one fdatasync per append; rotation adds a directory
 *   fsync; a state write is two fsyncs and a rename; open reads the spool
 *   once. Only the newest segment is written, with pwritev at its end.
 *
 * One owner, no threads, no timers: the owner calls spool_tick. */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define SEG_HDR		32u
#define REC_HDR		24u
#define REC_ALIGN	8u
#define REC_MAGIC	0x5253u
#define SEG_VERSION	1u
#define STATE_FIXED	80u	/* size without notes, CRC included */
#define NOTE_SIZE	24u
#define STATE_MAX	(STATE_FIXED + NOTE_SIZE * SPOOL_MAX_LOST_NOTES + 4)
#define STATE_VERSION	1u
#define RD_CHUNK	(64u << 10)
#define STATE_NAME	"state"
#define STATE_TMP	"state.tmp"
#define STATE_CORRUPT	"state.corrupt"
#define SEG_PREFIX	"seg-"
#define SEG_SUFFIX	".spool"
#define CORRUPT_SUFFIX	".corrupt"
#define SEG_NAME_LEN	30	/* "seg-" + 20 digits + ".spool" */
#define SEG_NAME_MAX	(SEG_NAME_LEN + 8 + 1)

static const char seg_magic[8] = { 'O', 'S', 'S', 'P', 'S', 'E', 'G', '1' };
static const char state_magic[8] = { 'O', 'S', 'S', 'P', 'S', 'T', 'A', '1' };

/* ---- CRC-32C: slicing-by-8, or the SSE4.2 instruction when present ---- */

static uint32_t crc_tab[8][256];
static uint32_t (*crc_impl)(uint32_t, const uint8_t *, size_t);

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
	uint64_t w;

	while (n && ((uintptr_t)p & 7)) {
		crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		n--;
	}
	while (n >= 8) {
		memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		w = __builtin_bswap64(w);	/* the stream is processed little-endian */
#endif
		w ^= crc;
		crc = crc_tab[7][w & 0xff] ^ crc_tab[6][(w >> 8) & 0xff] ^
		      crc_tab[5][(w >> 16) & 0xff] ^ crc_tab[4][(w >> 24) & 0xff] ^
		      crc_tab[3][(w >> 32) & 0xff] ^ crc_tab[2][(w >> 40) & 0xff] ^
		      crc_tab[1][(w >> 48) & 0xff] ^ crc_tab[0][w >> 56];
		p += 8;
		n -= 8;
	}
	while (n--)
		crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
	uint64_t c = crc, w;

	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		memcpy(&w, p, 8);
		c = _mm_crc32_u64(c, w);
		p += 8;
		n -= 8;
	}
	while (n--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

__attribute__((constructor))
static void crc_init(void)
{
	uint32_t c;
	int i, j;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (j = 0; j < 8; j++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
		crc_tab[0][i] = c;
	}
	for (i = 0; i < 256; i++)
		for (j = 1; j < 8; j++)
			crc_tab[j][i] = (crc_tab[j - 1][i] >> 8) ^ crc_tab[0][crc_tab[j - 1][i] & 0xff];
	crc_impl = crc_sw;
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2") && !getenv("SPOOL_CRC_SOFTWARE"))
		crc_impl = crc_hw;
#endif
}

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len)
{
	if (!crc_impl)
		crc_init();
	return ~crc_impl(~crc, data, len);
}

/* ---- little-endian fields ---- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint64_t rec_size(uint64_t len)
{
	return REC_HDR + ((len + REC_ALIGN - 1) & ~(uint64_t)(REC_ALIGN - 1));
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* ---- structures ---- */

struct seg {
	uint64_t base;	/* seq of its first record; also its name */
	uint64_t last;	/* seq of its last record; base - 1 when empty */
	uint64_t bytes;	/* file size */
};

/* A bounded read window over one file: rd_get() returns n bytes at off,
 * reading RD_CHUNK at a time, never at or beyond limit (the bytes below the
 * limit never change, so the window never goes stale). */
struct rd {
	int fd;
	uint64_t limit;
	uint8_t *buf;
	size_t cap;
	uint64_t boff;
	size_t blen;
};

/* Why the seqs from..to are a gap (an annotation: the gap is on disk). */
struct lost_note {
	uint64_t from, to;
	uint32_t reason;
};

struct spool_cursor {
	struct spool *s;
	struct spool_cursor *next_cur;
	uint64_t next;		/* next seq to deliver */
	bool pos_ok;		/* record pos_seq starts at pos_off in segment pos_base */
	uint64_t pos_base, pos_seq, pos_off;
	struct rd rd;		/* on segment pos_base; fd -1 when none */
};

struct spool {
	char *dir;
	int dfd;		/* the directory, flock'ed */
	int afd;		/* newest segment open for appends, -1 when none */
	uint64_t seg_bytes, max_bytes, max_payload, max_segs;
	enum spool_fsync policy;
	uint32_t interval_ms;
	bool quiet;

	struct seg *segs;	/* by base, ascending */
	size_t nsegs, segcap;
	uint64_t total;		/* bytes of all segments */

	uint64_t next_seq;	/* next to assign */
	uint64_t acked;
	uint64_t saved_next;	/* next_seq in the state file on disk */
	uint64_t vis_seq;	/* records up to here are durable/deliverable */
	uint64_t vis_off;	/* bytes of the active segment that are */
	bool data_dirty;	/* appends not yet fdatasync'ed */
	bool state_dirty;	/* memory differs from the state file */
	bool force_rotate;	/* the active segment failed an fsync */
	bool trunc_pending;	/* a failed append left bytes beyond trunc_to */
	uint64_t trunc_to;
	uint64_t last_tick_ms;
	bool ticked;

	uint64_t dropped, quarantined, torn;	/* persisted totals */
	uint64_t append_errors, fsyncs;

	struct lost_note notes[SPOOL_MAX_LOST_NOTES];	/* ascending, disjoint, above acked */
	size_t nnotes;

	uint64_t *corrupt;	/* bases of seg-*.spool.corrupt files, ascending */
	size_t ncorrupt, corruptcap;

	uint8_t id[16];
	char idhex[33];
	char err[512];
	struct spool_cursor *cursors;
};

__attribute__((format(printf, 2, 3)))
static void set_err(struct spool *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3)))
static void note(const struct spool *s, const char *fmt, ...)
{
	va_list ap;

	if (s->quiet)
		return;
	va_start(ap, fmt);
	log_vmsg(LL_WARN, fmt, ap);
	va_end(ap);
}

static void seg_name(char out[SEG_NAME_MAX], uint64_t base, bool corrupt)
{
	snprintf(out, SEG_NAME_MAX, SEG_PREFIX "%020" PRIu64 SEG_SUFFIX "%s", base,
		 corrupt ? CORRUPT_SUFFIX : "");
}

/* "seg-<20 digits>.spool" (corrupt: with ".corrupt") -> base; false otherwise. */
static bool seg_parse(const char *name, bool corrupt, uint64_t *base)
{
	size_t n = strlen(name), want = SEG_NAME_LEN + (corrupt ? strlen(CORRUPT_SUFFIX) : 0);
	uint64_t v = 0;
	int i;

	if (n != want || strncmp(name, SEG_PREFIX, 4) || strncmp(name + 24, SEG_SUFFIX, 6))
		return false;
	if (corrupt && strcmp(name + SEG_NAME_LEN, CORRUPT_SUFFIX))
		return false;
	for (i = 4; i < 24; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		if (v > (SPOOL_SEQ_LIMIT - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	if (v == 0 || v >= SPOOL_SEQ_LIMIT)
		return false;
	*base = v;
	return true;
}

/* ---- I/O helpers ---- */

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	ssize_t r;

	while (len) {
		r = pwrite(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static void rd_init(struct rd *r)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}

static void rd_reset(struct rd *r, int fd, uint64_t limit)
{
	if (r->fd >= 0 && r->fd != fd)
		close(r->fd);
	r->fd = fd;
	r->limit = limit;
	r->blen = 0;
	r->boff = 0;
}

static void rd_free(struct rd *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	rd_init(r);
}

/* *p = n bytes at off. 0, -ENODATA when they are not all below the limit
 * (or the file is shorter), -ENOMEM, or the read's -errno. */
static int rd_get(struct rd *r, uint64_t off, size_t n, const uint8_t **p)
{
	size_t want, got = 0;
	ssize_t k;

	if (off > r->limit || n > r->limit - off)
		return -ENODATA;
	if (off >= r->boff && off + n <= r->boff + r->blen) {
		*p = r->buf + (off - r->boff);
		return 0;
	}
	want = n > RD_CHUNK ? n : RD_CHUNK;
	if (want > r->limit - off)
		want = (size_t)(r->limit - off);
	if (want > r->cap) {
		uint8_t *nb = realloc(r->buf, want);

		if (!nb)
			return -ENOMEM;
		r->buf = nb;
		r->cap = want;
	}
	r->blen = 0;
	while (got < want) {
		k = pread(r->fd, r->buf + got, want - got, (off_t)(off + got));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	r->boff = off;
	r->blen = got;
	if (got < n)
		return -ENODATA;
	*p = r->buf;
	return 0;
}

/* ---- record and header formats ---- */

struct rh {
	uint32_t len;
	uint64_t seq;
	uint8_t type;
	uint32_t dcrc;
};

static void rec_encode(uint8_t h[REC_HDR], uint32_t len, uint64_t seq, uint8_t type, uint32_t dcrc)
{
	put32(h + 4, len);
	put64(h + 8, seq);
	h[16] = type;
	h[17] = 0;
	put16(h + 18, REC_MAGIC);
	put32(h + 20, dcrc);
	put32(h, spool_crc32c(0, h + 4, REC_HDR - 4));
}

static bool rec_decode(const uint8_t *h, struct rh *r)
{
	if (get32(h) != spool_crc32c(0, h + 4, REC_HDR - 4))
		return false;
	if (h[17] != 0 || get16(h + 18) != REC_MAGIC)
		return false;
	r->len = get32(h + 4);
	r->seq = get64(h + 8);
	r->type = h[16];
	r->dcrc = get32(h + 20);
	return r->len <= SPOOL_MAX_PAYLOAD && r->seq >= 1 && r->seq < SPOOL_SEQ_LIMIT;
}

/* The whole record at off: 1 valid (*h, *payload), 0 not a valid record
 * there, -errno on a read error. */
static int rec_read(struct rd *r, uint64_t off, struct rh *h, const uint8_t **payload)
{
	const uint8_t *p;
	uint64_t size, i;
	int e;

	e = rd_get(r, off, REC_HDR, &p);
	if (e)
		return e == -ENODATA ? 0 : e;
	if (!rec_decode(p, h))
		return 0;
	size = rec_size(h->len);
	e = rd_get(r, off, (size_t)size, &p);
	if (e)
		return e == -ENODATA ? 0 : e;
	for (i = REC_HDR + h->len; i < size; i++)
		if (p[i])
			return 0;
	if (spool_crc32c(0, p + REC_HDR, h->len) != h->dcrc)
		return 0;
	*payload = p + REC_HDR;
	return 1;
}

static void seg_hdr_encode(uint8_t h[SEG_HDR], uint64_t base)
{
	memset(h, 0, SEG_HDR);
	memcpy(h, seg_magic, 8);
	put32(h + 8, SEG_VERSION);
	put64(h + 16, base);
	put32(h + 28, spool_crc32c(0, h, 28));
}

static bool seg_hdr_ok(const uint8_t *h, uint64_t base)
{
	return !memcmp(h, seg_magic, 8) && get32(h + 8) == SEG_VERSION && get32(h + 12) == 0 &&
	       get64(h + 16) == base && get32(h + 24) == 0 &&
	       get32(h + 28) == spool_crc32c(0, h, 28);
}

/* ---- state file ---- */

/* Layout: magic, u32 version, u32 number of notes, id[16], u64 acked, next,
 * dropped, quarantined, torn, u32 0, then the notes (u64 from, u64 to, u32
 * reason, u32 0), then CRC32C of all of it. Returns the size. */
static size_t state_encode(const struct spool *s, uint8_t b[STATE_MAX])
{
	size_t i, n = STATE_FIXED - 4;

	memset(b, 0, STATE_MAX);
	memcpy(b, state_magic, 8);
	put32(b + 8, STATE_VERSION);
	put32(b + 12, (uint32_t)s->nnotes);
	memcpy(b + 16, s->id, 16);
	put64(b + 32, s->acked);
	put64(b + 40, s->next_seq);
	/* totals saturate below the limit the decoder accepts */
	put64(b + 48, s->dropped < SPOOL_SEQ_LIMIT ? s->dropped : SPOOL_SEQ_LIMIT - 1);
	put64(b + 56, s->quarantined < SPOOL_SEQ_LIMIT ? s->quarantined : SPOOL_SEQ_LIMIT - 1);
	put64(b + 64, s->torn < SPOOL_SEQ_LIMIT ? s->torn : SPOOL_SEQ_LIMIT - 1);
	for (i = 0; i < s->nnotes; i++, n += NOTE_SIZE) {
		put64(b + n, s->notes[i].from);
		put64(b + n + 8, s->notes[i].to);
		put32(b + n + 16, s->notes[i].reason);
	}
	put32(b + n, spool_crc32c(0, b, n));
	return n + 4;
}

/* Everything checked; s is changed only when the whole file is valid. */
static bool state_decode(struct spool *s, const uint8_t *b, size_t len)
{
	uint64_t acked, next, d, q, t, prev;
	struct lost_note notes[SPOOL_MAX_LOST_NOTES];
	uint32_t nn;
	size_t i, n;

	if (len < STATE_FIXED || memcmp(b, state_magic, 8) || get32(b + 8) != STATE_VERSION)
		return false;
	nn = get32(b + 12);
	if (nn > SPOOL_MAX_LOST_NOTES || len != STATE_FIXED + (size_t)nn * NOTE_SIZE ||
	    get32(b + 72) != 0 || get32(b + len - 4) != spool_crc32c(0, b, len - 4))
		return false;
	acked = get64(b + 32);
	next = get64(b + 40);
	d = get64(b + 48);
	q = get64(b + 56);
	t = get64(b + 64);
	if (next < 1 || next > SPOOL_SEQ_LIMIT || acked >= next ||
	    d >= SPOOL_SEQ_LIMIT || q >= SPOOL_SEQ_LIMIT || t >= SPOOL_SEQ_LIMIT)
		return false;
	prev = acked;
	for (i = 0, n = STATE_FIXED - 4; i < nn; i++, n += NOTE_SIZE) {
		notes[i].from = get64(b + n);
		notes[i].to = get64(b + n + 8);
		notes[i].reason = get32(b + n + 16);
		if (notes[i].from <= prev || notes[i].to < notes[i].from || notes[i].to >= next ||
		    notes[i].reason < SPOOL_LOST_FULL || notes[i].reason > SPOOL_LOST_CRASH ||
		    get32(b + n + 20) != 0)
			return false;
		prev = notes[i].to;
	}
	memcpy(s->id, b + 16, 16);
	s->acked = acked;
	s->next_seq = next;
	s->saved_next = next;
	s->dropped = d;
	s->quarantined = q;
	s->torn = t;
	memcpy(s->notes, notes, nn * sizeof(*notes));
	s->nnotes = nn;
	return true;
}

static void id_hex(struct spool *s)
{
	for (int i = 0; i < 16; i++)
		snprintf(s->idhex + 2 * i, 3, "%02x", s->id[i]);
}

static void id_new(struct spool *s)
{
	if (getrandom(s->id, sizeof(s->id), GRND_NONBLOCK) != (ssize_t)sizeof(s->id)) {
		struct timespec ts;
		uint64_t x;

		clock_gettime(CLOCK_REALTIME, &ts);
		x = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 48;
		put64(s->id, x);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		put64(s->id + 8, (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30);
	}
	id_hex(s);
}

/* tmp + fsync + rename + directory fsync. */
static int state_save(struct spool *s)
{
	uint8_t b[STATE_MAX];
	const char *step = "create " STATE_TMP;
	size_t len;
	int fd, r;

	len = state_encode(s, b);
	fd = openat(s->dfd, STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	step = "write " STATE_TMP;
	r = pwrite_all(fd, b, len, 0);
	if (r)
		goto fail;
	step = "fsync " STATE_TMP;
	if (fsync(fd)) {
		r = -errno;
		goto fail;
	}
	s->fsyncs++;
	r = close(fd);
	fd = -1;
	step = "close " STATE_TMP;
	if (r) {
		r = -errno;
		goto fail;
	}
	step = "rename " STATE_TMP;
	if (renameat(s->dfd, STATE_TMP, s->dfd, STATE_NAME)) {
		r = -errno;
		goto fail;
	}
	s->saved_next = s->next_seq;
	s->state_dirty = false;
	if (fsync(s->dfd)) {
		/* renamed: the new state is what a reader sees, only not yet durable */
		r = -errno;
		s->state_dirty = true;
		set_err(s, "spool %s: fsync directory: %s", s->dir, strerror(-r));
		return r;
	}
	s->fsyncs++;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(s->dfd, STATE_TMP, 0);
	set_err(s, "spool %s: %s: %s", s->dir, step, strerror(-r));
	return r;
}

/* ---- the segment index ---- */

static int segs_push(struct spool *s, uint64_t base, uint64_t last, uint64_t bytes)
{
	if (s->nsegs == s->segcap) {
		size_t nc = s->segcap ? 2 * s->segcap : 16;
		struct seg *ns = realloc(s->segs, nc * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		s->segs = ns;
		s->segcap = nc;
	}
	s->segs[s->nsegs++] = (struct seg){ .base = base, .last = last, .bytes = bytes };
	s->total += bytes;
	return 0;
}

static void segs_remove(struct spool *s, size_t i)
{
	s->total -= s->segs[i].bytes;
	memmove(s->segs + i, s->segs + i + 1, (s->nsegs - i - 1) * sizeof(*s->segs));
	s->nsegs--;
}

/* First segment with records at or after seq (empty segments skipped). */
static size_t seg_find(const struct spool *s, uint64_t seq)
{
	size_t lo = 0, hi = s->nsegs, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (s->segs[mid].last < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo < s->nsegs && s->segs[lo].last < s->segs[lo].base)
		lo++;
	return lo;
}

/* Seqs of segment g above the acked one. */
static uint64_t seg_unacked(const struct spool *s, const struct seg *g)
{
	uint64_t from = max_u64(g->base, s->acked + 1);

	return g->last >= from ? g->last - from + 1 : 0;
}

static uint64_t durable_next(const struct spool *s)
{
	return max_u64(s->saved_next, s->vis_seq + 1);
}

static bool is_active(const struct spool *s, size_t i)
{
	return s->afd >= 0 && i + 1 == s->nsegs;
}

/* ---- reasons of gaps ---- */

const char *spool_lost_reason_name(enum spool_lost_reason r)
{
	switch (r) {
	case SPOOL_LOST_FULL:
		return "spool_full";
	case SPOOL_LOST_CORRUPT:
		return "spool_corrupt";
	case SPOOL_LOST_CRASH:
		return "spool_crash";
	default:
		return "spool_unknown";
	}
}

/* Forget notes at or below the acked seq. */
static void notes_trim(struct spool *s)
{
	size_t i = 0;

	while (i < s->nnotes && s->notes[i].to <= s->acked)
		i++;
	memmove(s->notes, s->notes + i, (s->nnotes - i) * sizeof(*s->notes));
	s->nnotes -= i;
	if (s->nnotes && s->notes[0].from <= s->acked)
		s->notes[0].from = s->acked + 1;
}

/* Note why from..to became a gap. Seqs already noted keep their reason;
 * neighbours with the same reason merge; past the limit the oldest go.
 * Returns how many seqs were not noted before (what a loss counter adds:
 * a gap found again at the next open is not counted twice). */
static uint64_t note_lost(struct spool *s, uint64_t from, uint64_t to, enum spool_lost_reason why)
{
	struct lost_note tmp[2 * SPOOL_MAX_LOST_NOTES + 1];
	uint64_t cur, end, added = 0;
	size_t i, n = 0, k = 0;

	from = max_u64(from, s->acked + 1);
	if (from > to)
		return 0;
	s->state_dirty = true;
	cur = from;
	for (i = 0; i < s->nnotes; i++) {
		const struct lost_note *e = &s->notes[i];

		if (cur <= to && cur < e->from) {
			end = to < e->from - 1 ? to : e->from - 1;
			tmp[n++] = (struct lost_note){ .from = cur, .to = end, .reason = why };
			added += end - cur + 1;
			cur = end + 1;
		}
		tmp[n++] = *e;
		if (cur >= e->from && cur <= e->to)
			cur = e->to + 1;
	}
	if (cur <= to) {
		tmp[n++] = (struct lost_note){ .from = cur, .to = to, .reason = why };
		added += to - cur + 1;
	}
	for (i = 0; i < n; i++) {
		if (k && tmp[k - 1].reason == tmp[i].reason && tmp[k - 1].to + 1 == tmp[i].from)
			tmp[k - 1].to = tmp[i].to;
		else
			tmp[k++] = tmp[i];
	}
	i = k > SPOOL_MAX_LOST_NOTES ? k - SPOOL_MAX_LOST_NOTES : 0;
	memcpy(s->notes, tmp + i, (k - i) * sizeof(*tmp));
	s->nnotes = k - i;
	return added;
}

/* The note for seq, or the seq where the next note starts (*end capped). */
static enum spool_lost_reason note_for(const struct spool *s, uint64_t seq, uint64_t *end)
{
	size_t i;

	for (i = 0; i < s->nnotes; i++) {
		if (s->notes[i].to < seq)
			continue;
		if (s->notes[i].from <= seq) {
			if (s->notes[i].to + 1 < *end)
				*end = s->notes[i].to + 1;
			return (enum spool_lost_reason)s->notes[i].reason;
		}
		if (s->notes[i].from < *end)
			*end = s->notes[i].from;
		break;
	}
	return SPOOL_LOST_UNKNOWN;
}

/* ---- quarantine ---- */

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Remember a quarantined file and delete the oldest beyond the limit. */
static void corrupt_add(struct spool *s, uint64_t base)
{
	char name[SEG_NAME_MAX];
	size_t i;

	for (i = 0; i < s->ncorrupt; i++)
		if (s->corrupt[i] == base)
			return;
	if (s->ncorrupt == s->corruptcap) {
		size_t nc = s->corruptcap ? 2 * s->corruptcap : 8;
		uint64_t *n = realloc(s->corrupt, nc * sizeof(*n));

		if (!n)
			return;	/* only forgets to prune; the next open sees the file again */
		s->corrupt = n;
		s->corruptcap = nc;
	}
	s->corrupt[s->ncorrupt++] = base;
	qsort(s->corrupt, s->ncorrupt, sizeof(*s->corrupt), u64_cmp);
	while (s->ncorrupt > SPOOL_KEEP_CORRUPT) {
		seg_name(name, s->corrupt[0], true);
		if (unlinkat(s->dfd, name, 0) && errno != ENOENT)
			note(s, "spool %s: remove old %s: %s", s->dir, name, strerror(errno));
		memmove(s->corrupt, s->corrupt + 1, (s->ncorrupt - 1) * sizeof(*s->corrupt));
		s->ncorrupt--;
	}
}

/* Rename a segment file to *.corrupt (kept for a post-mortem). */
static void quarantine_file(struct spool *s, uint64_t base, const char *why)
{
	char from[SEG_NAME_MAX], to[SEG_NAME_MAX];

	seg_name(from, base, false);
	seg_name(to, base, true);
	s->quarantined++;
	s->state_dirty = true;
	if (renameat(s->dfd, from, s->dfd, to)) {
		note(s, "spool %s: %s is corrupt (%s) and cannot be renamed: %s; removing it",
		     s->dir, from, why, strerror(errno));
		unlinkat(s->dfd, from, 0);
		return;
	}
	if (s->policy != SPOOL_FSYNC_NEVER && !fsync(s->dfd))
		s->fsyncs++;
	note(s, "spool %s: %s is corrupt (%s): quarantined as %s", s->dir, from, why, to);
	corrupt_add(s, base);
}

/* A segment found corrupt while sending. */
static void quarantine_runtime(struct spool *s, size_t i, const char *why)
{
	struct seg g = s->segs[i];
	uint64_t lost = seg_unacked(s, &g);

	if (is_active(s, i)) {
		close(s->afd);
		s->afd = -1;
	}
	s->dropped += note_lost(s, g.base, g.last, SPOOL_LOST_CORRUPT);
	/* the state first: the seqs in this segment must not be handed out again */
	state_save(s);
	quarantine_file(s, g.base, why);
	segs_remove(s, i);
	if (lost)
		note(s, "spool %s: seqs %" PRIu64 "-%" PRIu64 " lost with the quarantined segment",
		     s->dir, max_u64(g.base, s->acked + 1), g.last);
}

/* ---- deleting segments ---- */

/* Delete the oldest segment; counted as lost what was not acked. Saves the
 * state first (so acks and the seq counter are never behind the files on
 * disk), tolerating a full disk: deleting frees space. */
static int drop_front(struct spool *s, const char *why, enum spool_lost_reason reason)
{
	struct seg g = s->segs[0];
	char name[SEG_NAME_MAX];
	uint64_t lost = seg_unacked(s, &g), counted = 0;
	int r;

	if (lost)
		counted = note_lost(s, g.base, g.last, reason);
	s->dropped += counted;
	if (s->state_dirty || s->saved_next != s->next_seq) {
		r = state_save(s);
		if (r && r != -ENOSPC && r != -EDQUOT) {
			s->dropped -= counted;
			return r;
		}
	}
	seg_name(name, g.base, false);
	if (unlinkat(s->dfd, name, 0) && errno != ENOENT) {
		r = -errno;
		s->dropped -= counted;
		set_err(s, "spool %s: remove %s: %s", s->dir, name, strerror(-r));
		return r;
	}
	if (is_active(s, 0)) {
		close(s->afd);
		s->afd = -1;
	}
	segs_remove(s, 0);
	if (lost)
		note(s, "spool %s: %s: dropped %s with unacked seqs %" PRIu64 "-%" PRIu64 " (%" PRIu64 " records)",
		     s->dir, why, name, max_u64(g.base, s->acked + 1), g.last, lost);
	return 0;
}

/* Delete the wholly acked segments, except the newest (still appended to). */
static int delete_acked(struct spool *s)
{
	int r;

	while (s->nsegs > 1 && s->segs[0].last <= s->acked) {
		r = drop_front(s, "acked", SPOOL_LOST_UNKNOWN);
		if (r)
			return r;
	}
	return 0;
}

/* ---- appending ---- */

static int data_sync(struct spool *s)
{
	int r;

	if (s->afd < 0 || !s->data_dirty)
		return 0;
	if (fdatasync(s->afd)) {
		r = -errno;
		set_err(s, "spool %s: fdatasync: %s", s->dir, strerror(-r));
		return r;
	}
	s->fsyncs++;
	s->data_dirty = false;
	s->vis_seq = s->segs[s->nsegs - 1].last >= s->segs[s->nsegs - 1].base ?
		     s->segs[s->nsegs - 1].last : s->vis_seq;
	s->vis_off = s->segs[s->nsegs - 1].bytes;
	return 0;
}

/* Stop appending to the active segment: synced unless NEVER. */
static int seg_finish(struct spool *s)
{
	int r;

	if (s->afd < 0)
		return 0;
	if (s->policy != SPOOL_FSYNC_NEVER) {
		r = data_sync(s);
		if (r)
			return r;
	}
	close(s->afd);
	s->afd = -1;
	s->data_dirty = false;
	s->force_rotate = false;
	return 0;
}

static int seg_create(struct spool *s)
{
	char name[SEG_NAME_MAX];
	uint8_t h[SEG_HDR];
	const char *step = "create";
	int fd, r;

	seg_name(name, s->next_seq, false);
	fd = openat(s->dfd, name, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	seg_hdr_encode(h, s->next_seq);
	step = "write";
	r = pwrite_all(fd, h, sizeof(h), 0);
	if (r)
		goto fail;
	/* the new name durable; its content is synced with its first records */
	step = "fsync directory";
	if (s->policy != SPOOL_FSYNC_NEVER) {
		if (fsync(s->dfd)) {
			r = -errno;
			goto fail;
		}
		s->fsyncs++;
	}
	r = segs_push(s, s->next_seq, s->next_seq - 1, SEG_HDR);
	if (r)
		goto fail;
	s->afd = fd;
	s->vis_off = SEG_HDR;
	s->data_dirty = false;
	return 0;
fail:
	set_err(s, "spool %s: %s %s: %s", s->dir, step, name, strerror(-r));
	if (fd >= 0) {
		close(fd);
		unlinkat(s->dfd, name, 0);
	}
	return r;
}

int spool_append(struct spool *s, uint8_t type, const void *payload, size_t len, uint64_t *seq_out)
{
	static const uint8_t zeros[REC_ALIGN];
	uint8_t h[REC_HDR];
	struct iovec iov[3], *v;
	struct seg *g;
	uint64_t rs, need, off, seq, done;
	bool fresh;
	ssize_t w;
	int r, vn;

	if (!s || (!payload && len))
		return -EINVAL;
	if (len > s->max_payload) {
		set_err(s, "spool %s: record of %zu bytes over the limit of %" PRIu64, s->dir, len,
			s->max_payload);
		return -EMSGSIZE;
	}
	if (s->next_seq >= SPOOL_SEQ_LIMIT - 1) {
		set_err(s, "spool %s: seq space exhausted", s->dir);
		return -EOVERFLOW;
	}
	if (s->trunc_pending) {
		if (ftruncate(s->afd, (off_t)s->trunc_to)) {
			r = -errno;
			set_err(s, "spool %s: truncate after a failed append: %s", s->dir, strerror(-r));
			goto err;
		}
		s->trunc_pending = false;
	}
	rs = rec_size(len);
	g = s->nsegs ? &s->segs[s->nsegs - 1] : NULL;
	fresh = s->afd < 0 || !g || s->force_rotate || g->last + 1 != s->next_seq ||
		(g->last >= g->base && g->bytes + rs > s->seg_bytes);
	if (fresh) {
		r = seg_finish(s);
		if (r)
			goto err;
		g = s->nsegs ? &s->segs[s->nsegs - 1] : NULL;
		if (g && g->last < g->base) {
			/* created, never written (its first append failed) */
			char name[SEG_NAME_MAX];

			seg_name(name, g->base, false);
			unlinkat(s->dfd, name, 0);
			segs_remove(s, s->nsegs - 1);
		}
	}
	/* the cap, before the new bytes: oldest whole segments go */
	need = rs + (fresh ? SEG_HDR : 0);
	while (s->nsegs > (fresh ? 0u : 1u) &&
	       (s->total + need > s->max_bytes || (fresh && s->nsegs + 1 > s->max_segs))) {
		r = drop_front(s, "spool full", SPOOL_LOST_FULL);
		if (r)
			goto err;
	}
	if (fresh) {
		r = seg_create(s);
		if (r)
			goto err;
		r = delete_acked(s);
		if (r)
			goto err;
	}
	g = &s->segs[s->nsegs - 1];
	seq = s->next_seq;
	off = g->bytes;
	rec_encode(h, (uint32_t)len, seq, type, spool_crc32c(0, payload, len));
	iov[0] = (struct iovec){ .iov_base = h, .iov_len = REC_HDR };
	iov[1] = (struct iovec){ .iov_base = (void *)payload, .iov_len = len };
	iov[2] = (struct iovec){ .iov_base = (void *)zeros, .iov_len = (size_t)(rs - REC_HDR - len) };
	v = iov;
	vn = 3;
	done = 0;
	while (done < rs) {
		w = pwritev(s->afd, v, vn, (off_t)(off + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			set_err(s, "spool %s: write " SEG_PREFIX "%020" PRIu64 SEG_SUFFIX ": %s",
				s->dir, g->base, strerror(-r));
			goto undo;
		}
		done += (uint64_t)w;
		while (vn && (size_t)w >= v->iov_len) {	/* a short write: go on after it */
			w -= (ssize_t)v->iov_len;
			v++;
			vn--;
		}
		if (vn) {
			v->iov_base = (uint8_t *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
	if (s->policy == SPOOL_FSYNC_ALWAYS) {
		if (fdatasync(s->afd)) {
			r = -errno;
			set_err(s, "spool %s: fdatasync " SEG_PREFIX "%020" PRIu64 SEG_SUFFIX ": %s",
				s->dir, g->base, strerror(-r));
			s->force_rotate = true;	/* what that file holds is uncertain now */
			goto undo;
		}
		s->fsyncs++;
	}
	g->bytes += rs;
	g->last = seq;
	s->total += rs;
	s->next_seq++;
	if (s->policy == SPOOL_FSYNC_INTERVAL) {
		s->data_dirty = true;
	} else {
		s->vis_seq = seq;
		s->vis_off = g->bytes;
		s->data_dirty = s->policy == SPOOL_FSYNC_NEVER;
	}
	if (seq_out)
		*seq_out = seq;
	return 0;
undo:
	if (ftruncate(s->afd, (off_t)off)) {
		s->trunc_pending = true;
		s->trunc_to = off;
	}
err:
	s->append_errors++;
	return r;
}

/* ---- ack, sync, tick ---- */

int spool_ack(struct spool *s, uint64_t seq)
{
	if (!s)
		return -EINVAL;
	if (seq >= s->next_seq) {
		set_err(s, "spool %s: ack of seq %" PRIu64 " never handed out (next is %" PRIu64 ")",
			s->dir, seq, s->next_seq);
		return -ERANGE;
	}
	if (seq <= s->acked)
		return 0;
	s->acked = seq;
	s->state_dirty = true;
	notes_trim(s);
	return delete_acked(s);
}

int spool_sync(struct spool *s)
{
	int r, r2 = 0;

	if (!s)
		return -EINVAL;
	r = data_sync(s);
	if (s->state_dirty || s->saved_next != s->next_seq)
		r2 = state_save(s);
	return r ? r : r2;
}

int spool_tick(struct spool *s, uint64_t now_ms)
{
	int r = 0, r2 = 0;

	if (!s)
		return -EINVAL;
	if (!s->ticked) {
		s->ticked = true;
		s->last_tick_ms = now_ms;
	}
	if (now_ms - s->last_tick_ms < s->interval_ms)
		return 0;
	s->last_tick_ms = now_ms;
	if (s->policy == SPOOL_FSYNC_INTERVAL)
		r = data_sync(s);
	if (s->state_dirty)
		r2 = state_save(s);
	return r ? r : r2;
}

/* ---- stats ---- */

void spool_stats(const struct spool *s, struct spool_stats *st)
{
	uint64_t expect, dn, from;
	size_t i;

	memset(st, 0, sizeof(*st));
	if (!s)
		return;
	st->bytes = s->total;
	st->segments = s->nsegs;
	st->next_seq = s->next_seq;
	st->acked_seq = s->acked;
	st->durable_seq = durable_next(s) - 1;
	st->dropped_records = s->dropped;
	st->quarantined = s->quarantined;
	st->torn_tails = s->torn;
	st->append_errors = s->append_errors;
	st->fsyncs = s->fsyncs;
	expect = s->acked + 1;
	for (i = 0; i < s->nsegs; i++) {
		const struct seg *g = &s->segs[i];

		if (g->last < g->base)
			continue;
		if (!st->first_seq)
			st->first_seq = g->base;
		st->last_seq = g->last;
		st->records += seg_unacked(s, g);
		if (g->last <= s->acked)
			continue;
		from = max_u64(g->base, s->acked + 1);
		if (from > expect) {
			if (!st->lost_ranges) {
				st->lost_from = expect;
				st->lost_to = from - 1;
			}
			st->lost_ranges++;
			st->lost_seqs += from - expect;
		}
		expect = g->last + 1;
	}
	dn = durable_next(s);
	if (dn > expect) {
		if (!st->lost_ranges) {
			st->lost_from = expect;
			st->lost_to = dn - 1;
		}
		st->lost_ranges++;
		st->lost_seqs += dn - expect;
	}
}

const char *spool_id(const struct spool *s)
{
	return s ? s->idhex : "";
}

const char *spool_error(const struct spool *s)
{
	return s ? s->err : "";
}

/* ---- cursors ---- */

int spool_cursor_open(struct spool *s, uint64_t after, struct spool_cursor **out)
{
	struct spool_cursor *c;

	*out = NULL;
	if (!s)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->s = s;
	rd_init(&c->rd);
	if (after >= s->next_seq)
		after = s->next_seq - 1;	/* a server ahead of us: give it the new ones */
	c->next = after + 1;
	c->next_cur = s->cursors;
	s->cursors = c;
	*out = c;
	return 0;
}

uint64_t spool_cursor_pos(const struct spool_cursor *c)
{
	if (c->s && c->next <= c->s->acked)
		return c->s->acked + 1;
	return c->next;
}

void spool_cursor_close(struct spool_cursor *c)
{
	struct spool_cursor **pp;

	if (!c)
		return;
	if (c->s) {
		for (pp = &c->s->cursors; *pp; pp = &(*pp)->next_cur)
			if (*pp == c) {
				*pp = c->next_cur;
				break;
			}
	}
	rd_free(&c->rd);
	free(c);
}

/* Position c at the record c->next of segment i: 0, 1 when the segment is
 * corrupt, -errno. */
static int cursor_seek(struct spool_cursor *c, size_t i, uint64_t limit)
{
	struct spool *s = c->s;
	const struct seg *g = &s->segs[i];
	char name[SEG_NAME_MAX];
	const uint8_t *p;
	uint64_t off, seq;
	struct rh h;
	int fd, r;

	if (!c->pos_ok || c->pos_base != g->base || c->rd.fd < 0) {
		seg_name(name, g->base, false);
		fd = openat(s->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			set_err(s, "spool %s: open %s: %s", s->dir, name, strerror(-r));
			return r;
		}
		rd_reset(&c->rd, fd, limit);
		c->pos_ok = true;
		c->pos_base = g->base;
		c->pos_seq = g->base;
		c->pos_off = SEG_HDR;
	}
	c->rd.limit = limit;
	if (c->pos_seq > c->next) {
		c->pos_seq = g->base;
		c->pos_off = SEG_HDR;
	}
	off = c->pos_off;
	seq = c->pos_seq;
	while (seq < c->next) {
		r = rd_get(&c->rd, off, REC_HDR, &p);
		if (r == -ENODATA)
			return 1;
		if (r)
			goto ioerr;
		if (!rec_decode(p, &h) || h.seq != seq)
			return 1;
		off += rec_size(h.len);
		seq++;
	}
	c->pos_off = off;
	c->pos_seq = seq;
	return 0;
ioerr:
	c->pos_ok = false;
	set_err(s, "spool %s: read: %s", s->dir, strerror(-r));
	return r;
}

int spool_cursor_next(struct spool_cursor *c, struct spool_item *it)
{
	struct spool *s = c->s;
	const uint8_t *payload;
	uint64_t dn, end, limit;
	struct rh h;
	size_t i;
	int r;

	if (!s)
		return -EBADF;
	for (;;) {
		if (c->next <= s->acked)
			c->next = s->acked + 1;
		dn = durable_next(s);
		if (c->next >= dn)
			return 0;
		i = seg_find(s, c->next);
		if (i == s->nsegs || s->segs[i].base > c->next) {
			end = i < s->nsegs && s->segs[i].base < dn ? s->segs[i].base : dn;
			memset(it, 0, sizeof(*it));
			it->kind = SPOOL_ITEM_LOST;
			it->reason = note_for(s, c->next, &end);
			it->seq = c->next;
			it->lost_to = end - 1;
			c->next = end;
			return 1;
		}
		if (c->next > s->vis_seq)
			return 0;
		limit = is_active(s, i) ? s->vis_off : s->segs[i].bytes;
		r = cursor_seek(c, i, limit);
		if (r < 0)
			return r;
		if (r == 0) {
			r = rec_read(&c->rd, c->pos_off, &h, &payload);
			if (r < 0) {
				c->pos_ok = false;
				set_err(s, "spool %s: read: %s", s->dir, strerror(-r));
				return r;
			}
			if (r == 1 && h.seq == c->next) {
				memset(it, 0, sizeof(*it));
				it->kind = SPOOL_ITEM_RECORD;
				it->seq = h.seq;
				it->type = h.type;
				it->data = payload;
				it->len = h.len;
				c->pos_off += rec_size(h.len);
				c->pos_seq++;
				c->next++;
				return 1;
			}
		}
		/* changed under us since open: out of the way, the hole is reported */
		c->pos_ok = false;
		quarantine_runtime(s, i, "bad record while reading");
	}
}

/* ---- open and recovery ---- */

struct scan {
	uint64_t nrec;		/* valid records from the start */
	uint64_t good_end;	/* offset after them; 0 when the header is bad */
	bool damaged;		/* bytes after good_end that are not records */
	bool valid_after;	/* ... and yet valid records after the damage */
	uint64_t max_after;	/* the highest seq among those */
};

/* Look past damage at bad for valid records (aligned offsets, cheap header
 * CRC first, seq plausible for the distance), with a bounded budget. */
static int resync(struct rd *r, uint64_t size, uint64_t bad, uint64_t expect, struct scan *sc)
{
	uint64_t p = bad + REC_ALIGN, budget = 2 * size + (1u << 20), ref = bad;
	const uint8_t *h, *payload;
	struct rh rh;
	int e;

	while (p + REC_HDR <= size) {
		e = rd_get(r, p, REC_HDR, &h);
		if (e)
			return e == -ENODATA ? 0 : e;
		if (rec_decode(h, &rh) && rh.seq >= expect && rh.seq - expect <= (p - ref) / REC_HDR + 1 &&
		    rec_size(rh.len) <= size - p) {
			if (budget < rec_size(rh.len))
				return 0;
			budget -= rec_size(rh.len);
			e = rec_read(r, p, &rh, &payload);
			if (e < 0)
				return e;
			if (e == 1) {
				sc->valid_after = true;
				sc->max_after = max_u64(sc->max_after, rh.seq);
				expect = rh.seq + 1;
				p += rec_size(rh.len);
				ref = p;
				continue;
			}
		}
		p += REC_ALIGN;
	}
	return 0;
}

static int scan_segment(struct rd *r, uint64_t size, uint64_t base, struct scan *sc)
{
	const uint8_t *payload, *p;
	uint64_t off = SEG_HDR, seq = base;
	struct rh h;
	int e;

	memset(sc, 0, sizeof(*sc));
	e = rd_get(r, 0, SEG_HDR, &p);
	if (e && e != -ENODATA)
		return e;
	if (e || !seg_hdr_ok(p, base)) {
		sc->damaged = size > 0;
		return size > SEG_HDR ? resync(r, size, SEG_HDR - REC_ALIGN, base, sc) : 0;
	}
	for (;;) {
		if (off == size) {
			sc->good_end = off;
			return 0;
		}
		e = rec_read(r, off, &h, &payload);
		if (e < 0)
			return e;
		if (e == 0 || h.seq != seq)
			break;
		off += rec_size(h.len);
		seq++;
		sc->nrec++;
	}
	sc->good_end = off;
	sc->damaged = true;
	return resync(r, size, off, seq, sc);
}

/* Copy a damaged newest segment aside before cutting it. */
static void copy_aside(struct spool *s, int fd, uint64_t base, uint64_t size)
{
	char name[SEG_NAME_MAX];
	uint8_t *buf = malloc(RD_CHUNK);
	uint64_t off = 0;
	ssize_t k;
	int out = -1;

	seg_name(name, base, true);
	if (!buf)
		goto fail;
	out = openat(s->dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		goto fail;
	while (off < size) {
		k = pread(fd, buf, RD_CHUNK, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || pwrite_all(out, buf, (size_t)k, off))
			goto fail;
		off += (uint64_t)k;
	}
	if (s->policy != SPOOL_FSYNC_NEVER && fsync(out))
		goto fail;
	close(out);
	free(buf);
	corrupt_add(s, base);
	return;
fail:
	note(s, "spool %s: cannot keep a copy of damaged %s: %s", s->dir, name, strerror(errno));
	if (out >= 0) {
		close(out);
		unlinkat(s->dfd, name, 0);
	}
	free(buf);
}

/* The directory's segment names, sorted, and the quarantined ones noted. */
static int list_dir(struct spool *s, uint64_t **bases, size_t *n)
{
	struct dirent *de;
	uint64_t b, *v = NULL, *nv;
	size_t cap = 0;
	DIR *d;
	int fd;

	*n = 0;
	fd = dup(s->dfd);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((errno = 0, de = readdir(d))) {
		if (seg_parse(de->d_name, false, &b)) {
			if (*n == cap) {
				cap = cap ? 2 * cap : 64;
				nv = realloc(v, cap * sizeof(*v));
				if (!nv) {
					closedir(d);
					free(v);
					return -ENOMEM;
				}
				v = nv;
			}
			v[(*n)++] = b;
		} else if (seg_parse(de->d_name, true, &b)) {
			corrupt_add(s, b);
		}
	}
	closedir(d);
	if (*n)
		qsort(v, *n, sizeof(*v), u64_cmp);
	*bases = v;
	return 0;
}

static int spool_recover(struct spool *s, bool have_state, bool *changed)
{
	uint64_t *bases = NULL, hi = 0;
	char name[SEG_NAME_MAX];
	struct scan sc;
	struct stat st;
	struct rd r;
	size_t nb, i;
	int fd, e;

	rd_init(&r);
	e = list_dir(s, &bases, &nb);
	if (e) {
		set_err(s, "spool %s: list: %s", s->dir, strerror(-e));
		return e;
	}
	for (i = 0; i < nb; i++) {
		bool last = i + 1 == nb;
		uint64_t prev_last = s->nsegs ? s->segs[s->nsegs - 1].last : 0;

		seg_name(name, bases[i], false);
		hi = max_u64(hi, bases[i] - 1);
		fd = openat(s->dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			e = -errno;
			if (e == -ELOOP || e == -ENXIO || e == -EISDIR) {
				note(s, "spool %s: ignoring %s: %s", s->dir, name, strerror(-e));
				continue;
			}
			set_err(s, "spool %s: open %s: %s", s->dir, name, strerror(-e));
			goto out;
		}
		if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
			note(s, "spool %s: ignoring %s: not a regular file", s->dir, name);
			close(fd);
			continue;
		}
		rd_reset(&r, fd, (uint64_t)st.st_size);
		if (bases[i] <= prev_last) {
			/* overlaps its predecessor: cannot be ordered, cannot be trusted */
			quarantine_file(s, bases[i], "overlaps the previous segment");
			*changed = true;
			continue;
		}
		e = scan_segment(&r, (uint64_t)st.st_size, bases[i], &sc);
		if (e) {
			set_err(s, "spool %s: read %s: %s", s->dir, name, strerror(-e));
			goto out;
		}
		if (sc.valid_after)
			hi = max_u64(hi, sc.max_after);
		if (sc.nrec)
			hi = max_u64(hi, bases[i] + sc.nrec - 1);
		if (sc.damaged && !last) {
			uint64_t end = bases[i + 1] - 1, from = max_u64(bases[i], s->acked + 1);

			quarantine_file(s, bases[i], sc.good_end ? "bad record" : "bad header");
			s->dropped += note_lost(s, from, end, SPOOL_LOST_CORRUPT);
			*changed = true;
			continue;
		}
		if (sc.damaged) {
			/* the newest segment: a crash; keep the valid prefix */
			if (sc.valid_after) {
				copy_aside(s, fd, bases[i], (uint64_t)st.st_size);
				s->quarantined++;
			}
			s->torn++;
			*changed = true;
			note(s, "spool %s: %s: %s at offset %" PRIu64 " of %" PRIu64 "; cut there, %" PRIu64 " records kept%s",
			     s->dir, name, sc.good_end ? "torn tail" : "torn header", sc.good_end,
			     (uint64_t)st.st_size, sc.nrec,
			     sc.valid_after ? " (valid records after the damage: copy kept as .corrupt)" : "");
			if (sc.good_end <= SEG_HDR || !sc.nrec) {
				if (unlinkat(s->dfd, name, 0)) {
					e = -errno;
					set_err(s, "spool %s: remove %s: %s", s->dir, name, strerror(-e));
					goto out;
				}
				continue;
			}
			if (ftruncate(fd, (off_t)sc.good_end) ||
			    (s->policy != SPOOL_FSYNC_NEVER && fdatasync(fd))) {
				e = -errno;
				set_err(s, "spool %s: truncate %s: %s", s->dir, name, strerror(-e));
				goto out;
			}
			st.st_size = (off_t)sc.good_end;
		}
		if (!sc.nrec) {
			/* created, never written: nothing to keep */
			if (unlinkat(s->dfd, name, 0) && errno != ENOENT) {
				e = -errno;
				set_err(s, "spool %s: remove %s: %s", s->dir, name, strerror(-e));
				goto out;
			}
			continue;
		}
		e = segs_push(s, bases[i], bases[i] + sc.nrec - 1, (uint64_t)st.st_size);
		if (e)
			goto out;
		if (last) {
			s->afd = fd;
			fd = -1;
			r.fd = -1;
		}
	}
	e = 0;
	if (!have_state && s->nsegs) {
		/* the state is gone: take what is on disk as not acked */
		s->acked = s->segs[0].base - 1;
		s->dropped = 0;
		notes_trim(s);
	}
	s->next_seq = max_u64(max_u64(s->next_seq, hi + 1), s->acked + 1);
	if (s->nsegs)
		s->next_seq = max_u64(s->next_seq, s->segs[s->nsegs - 1].last + 1);
	/* seqs the state counted that are not on disk: lost with the tail */
	s->dropped += note_lost(s, s->nsegs ? s->segs[s->nsegs - 1].last + 1 : s->acked + 1,
				s->next_seq - 1, SPOOL_LOST_CRASH);
	if (s->next_seq != s->saved_next)
		*changed = true;
out:
	rd_free(&r);
	free(bases);
	return e;
}

static int opts_check(const struct spool_opts *o, struct spool *s, char *err, size_t errlen)
{
	s->max_bytes = o && o->max_bytes ? o->max_bytes : SPOOL_DEFAULT_MAX_BYTES;
	s->seg_bytes = o && o->segment_bytes ? o->segment_bytes : SPOOL_DEFAULT_SEGMENT_BYTES;
	s->policy = o ? o->fsync : SPOOL_FSYNC_ALWAYS;
	s->interval_ms = o && o->fsync_interval_ms ? o->fsync_interval_ms : SPOOL_DEFAULT_INTERVAL_MS;
	s->quiet = o && o->quiet;
	if (s->seg_bytes < SPOOL_MIN_SEGMENT_BYTES || s->seg_bytes > SPOOL_MAX_SEGMENT_BYTES) {
		snprintf(err, errlen, "spool: segment_bytes %" PRIu64 " outside %llu..%llu", s->seg_bytes,
			 SPOOL_MIN_SEGMENT_BYTES, SPOOL_MAX_SEGMENT_BYTES);
		return -EINVAL;
	}
	if (s->max_bytes / 2 < s->seg_bytes || s->max_bytes >= SPOOL_SEQ_LIMIT) {
		snprintf(err, errlen, "spool: max_bytes %" PRIu64 " must be at least twice segment_bytes (%" PRIu64 ")",
			 s->max_bytes, s->seg_bytes);
		return -EINVAL;
	}
	if (s->policy != SPOOL_FSYNC_ALWAYS && s->policy != SPOOL_FSYNC_INTERVAL &&
	    s->policy != SPOOL_FSYNC_NEVER) {
		snprintf(err, errlen, "spool: unknown fsync policy %d", (int)s->policy);
		return -EINVAL;
	}
	s->max_payload = s->seg_bytes - SEG_HDR - REC_HDR;
	if (s->max_payload > SPOOL_MAX_PAYLOAD)
		s->max_payload = SPOOL_MAX_PAYLOAD;
	s->max_segs = 2 * (s->max_bytes / s->seg_bytes) + 16;
	return 0;
}

static void spool_free(struct spool *s)
{
	struct spool_cursor *c;

	if (!s)
		return;
	for (c = s->cursors; c; c = c->next_cur)
		c->s = NULL;
	if (s->afd >= 0)
		close(s->afd);
	if (s->dfd >= 0)
		close(s->dfd);	/* releases the flock */
	free(s->segs);
	free(s->corrupt);
	free(s->dir);
	free(s);
}

int spool_open(const char *dir, const struct spool_opts *o, struct spool **out, char *err, size_t errlen)
{
	char dummy[1];
	uint8_t b[STATE_MAX + 1];
	bool have_state = false, changed = false;
	struct spool *s;
	ssize_t n;
	int fd, r;

	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	*out = NULL;
	if (!dir || !*dir) {
		snprintf(err, errlen, "spool: no directory");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "spool %s: out of memory", dir);
		return -ENOMEM;
	}
	s->dfd = -1;
	s->afd = -1;
	r = opts_check(o, s, err, errlen);
	if (r)
		goto fail_quiet;
	s->dir = strdup(dir);
	if (!s->dir) {
		r = -ENOMEM;
		snprintf(err, errlen, "spool %s: out of memory", dir);
		goto fail_quiet;
	}
	if (mkdir(dir, 0700) && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "spool %s: create directory: %s", dir, strerror(-r));
		goto fail_quiet;
	}
	s->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dfd < 0) {
		r = -errno;
		snprintf(err, errlen, "spool %s: open directory: %s", dir, strerror(-r));
		goto fail_quiet;
	}
	if (flock(s->dfd, LOCK_EX | LOCK_NB)) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(err, errlen, "spool %s: %s", dir,
			 r == -EBUSY ? "in use by another process" : strerror(-r));
		goto fail_quiet;
	}

	/* the state: acked seq, seq counter, totals, id */
	s->next_seq = 1;
	fd = openat(s->dfd, STATE_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		r = -errno;
		snprintf(err, errlen, "spool %s: open %s: %s", dir, STATE_NAME, strerror(-r));
		goto fail_quiet;
	}
	if (fd >= 0) {
		n = pread(fd, b, sizeof(b), 0);
		r = n < 0 ? -errno : 0;
		close(fd);
		if (r) {
			snprintf(err, errlen, "spool %s: read %s: %s", dir, STATE_NAME, strerror(-r));
			goto fail_quiet;
		}
		have_state = state_decode(s, b, (size_t)n);
		if (!have_state) {
			note(s, "spool %s: %s is corrupt: kept as %s; starting a new spool id", dir,
			     STATE_NAME, STATE_CORRUPT);
			renameat(s->dfd, STATE_NAME, s->dfd, STATE_CORRUPT);
			s->next_seq = 1;
			s->acked = 0;
		}
	}
	if (have_state) {
		id_hex(s);
	} else {
		id_new(s);
		s->saved_next = 0;
		changed = true;
	}
	unlinkat(s->dfd, STATE_TMP, 0);

	r = spool_recover(s, have_state, &changed);
	if (r) {
		snprintf(err, errlen, "%s", s->err);
		goto fail_quiet;
	}
	/* a cap smaller than last time */
	while (s->nsegs && (s->total > s->max_bytes || s->nsegs > s->max_segs)) {
		r = drop_front(s, "over max_bytes at open", SPOOL_LOST_FULL);
		if (r) {
			snprintf(err, errlen, "%s", s->err);
			goto fail_quiet;
		}
		changed = true;
	}
	r = delete_acked(s);
	if (r) {
		snprintf(err, errlen, "%s", s->err);
		goto fail_quiet;
	}
	if (changed || s->state_dirty) {
		r = state_save(s);
		if (r && !have_state) {
			/* a new spool that cannot record its state cannot work */
			snprintf(err, errlen, "%s", s->err);
			goto fail_quiet;
		}
		if (r)
			note(s, "%s (recovered state not saved yet)", s->err);
	}
	/* what a crash left in the page cache is made durable before it is sent */
	if (s->afd >= 0 && s->policy != SPOOL_FSYNC_NEVER) {
		if (fdatasync(s->afd)) {
			r = -errno;
			snprintf(err, errlen, "spool %s: fdatasync: %s", dir, strerror(-r));
			goto fail_quiet;
		}
		s->fsyncs++;
	}
	s->vis_seq = s->nsegs ? s->segs[s->nsegs - 1].last : 0;
	s->vis_off = s->nsegs ? s->segs[s->nsegs - 1].bytes : SEG_HDR;
	s->err[0] = '\0';
	*out = s;
	return 0;
fail_quiet:
	spool_free(s);
	return r;
}

int spool_close(struct spool *s)
{
	int r = 0;

	if (!s)
		return 0;
	if (s->policy != SPOOL_FSYNC_NEVER)
		r = data_sync(s);
	if (s->state_dirty || s->saved_next != s->next_seq) {
		int r2 = state_save(s);

		if (!r)
			r = r2;
	}
	spool_free(s);
	return r;
}
