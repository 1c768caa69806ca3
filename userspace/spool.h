/* spool: the bounded on-disk event spool of the push to One Shield (issue 7).
 *
 * Events go into the spool before they are sent and leave it only when the
 * server acknowledges them ("everything up to seq S received"), so they are
 * delivered in order, at least once, and survive agent restarts, kill -9 and
 * the power loss of writes not yet synced. The spool numbers records itself:
 * the "spool seq" starts at 1 when the spool is created and only ever grows,
 * across restarts and recoveries (the agent's journal seq restarts at 1 with
 * every agent start, so it cannot be the dedup key). The server dedups by
 * (spool id, spool seq); the spool id is random, made when the spool is
 * created and made again only if the spool's state is lost, which tells the
 * server to start over rather than drop new records as old ones.
 *
 * Loss is explicit: a seq that was handed out and is gone (dropped at the
 * cap, quarantined as corrupt, lost in a crash) is a gap in the seqs above
 * the acked one, and a cursor walking the spool returns each gap as a LOST
 * item [from, to] at its place in the stream, before the records after it.
 * A gap stays (and is returned again by every new cursor) until the server
 * acks a seq >= to; since gaps are derived from what is on disk and the
 * persisted seq counter, they survive restarts without a list of their own.
 *
 * On disk, in one directory (created 0700 if missing; locked with flock, a
 * second opener gets -EBUSY): segment files "seg-<20-digit first seq>.spool"
 * of CRC32C-checked records, an ack-state file "state" (replaced atomically:
 * tmp + fsync + rename + directory fsync), and up to SPOOL_KEEP_CORRUPT
 * quarantined files "*.corrupt". See spool.c for the format and recovery.
 *
 * The sender, against oneshield.mgmt.v1 (mgmt.proto): Hello carries
 * spool_id(), stats.acked_seq and stats.next_seq - 1; on HelloAck,
 * spool_ack(resume_after_spool_seq) then spool_cursor_open(s, 0); each
 * RECORD item is a SpooledEvent (spool_seq = item.seq), each LOST item an
 * EventsLost (from, to, reason = spool_lost_reason_name()); each Ack is a
 * spool_ack. A new stream starts over with a new cursor: what was sent and
 * not acked is sent again.
 *
 * Threads: one owner (the core loop). Nothing here blocks beyond local file
 * I/O; its costs are fsyncs, see enum spool_fsync. Return values are 0 or
 * -errno unless said otherwise; errors of calls on a struct spool are
 * described by spool_error(). Ownership: buffers passed in are borrowed and
 * copied; what a cursor returns points into the cursor and stays valid until
 * its next call. */
#ifndef OS_SPOOL_H
#define OS_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_DEFAULT_MAX_BYTES		(64ull << 20)
#define SPOOL_DEFAULT_SEGMENT_BYTES	(1ull << 20)
#define SPOOL_DEFAULT_INTERVAL_MS	1000u
#define SPOOL_MIN_SEGMENT_BYTES		4096ull
#define SPOOL_MAX_SEGMENT_BYTES		(1ull << 30)
#define SPOOL_MAX_PAYLOAD		(1u << 20)	/* also <= segment_bytes - 56 */
#define SPOOL_KEEP_CORRUPT		4		/* quarantined files kept, newest */
#define SPOOL_SEQ_LIMIT			(1ull << 62)	/* seqs and counters stay below */
#define SPOOL_MAX_LOST_NOTES		64		/* reasons remembered for gaps */

enum spool_fsync {
	/* fdatasync after every append: an append that returned 0 survives
	 * power loss. One disk flush per event: on the dev VM's virtio ext4
	 * 115-175 µs median, 500-6000 appends/s with the disk shared
	 * (tests/bench/spool_bench.c); milliseconds on rotating disks. */
	SPOOL_FSYNC_ALWAYS = 0,
	/* fdatasync from spool_tick() at most every fsync_interval_ms while
	 * data is unsynced, and when a segment is full (~1-2 µs an append).
	 * A power loss can take the appends since the last sync. They were
	 * never sent (records go out only once synced), so their seqs are
	 * simply used again; the loss is reported (spool_crash) only if a
	 * state write in between, for an ack, had counted them. */
	SPOOL_FSYNC_INTERVAL,
	/* No fsync of segments (the state file is still written atomically).
	 * Survives the agent's crash, not the machine's; records are sent as
	 * soon as written, so after a power loss the server may have seen seqs
	 * that get reused. For tests and throwaway spools. */
	SPOOL_FSYNC_NEVER,
};

struct spool_opts {
	uint64_t max_bytes;		/* all segment files; 0 = default; >= 2 * segment_bytes */
	uint64_t segment_bytes;		/* rotate past this; 0 = default */
	enum spool_fsync fsync;
	uint32_t fsync_interval_ms;	/* SPOOL_FSYNC_INTERVAL; 0 = default */
	bool quiet;			/* do not log recovery actions (tests, fuzzing) */
};

struct spool;
struct spool_cursor;

/* Open or create the spool in dir (the parent must exist) and recover it:
 * every segment's CRCs are checked (the cost of open is reading the whole
 * spool once). Damage in the newest segment is a crash: its valid prefix
 * is kept and the rest cut off (a torn tail; if valid records follow the
 * damage, a copy is kept as *.corrupt and their seqs are not reused).
 * Damage in an older segment puts it whole in quarantine (renamed
 * *.corrupt, logged, counted) and its seqs become a gap. Seqs the state
 * file had counted that are on disk no more become a gap too. Fully acked
 * segments left by a crash are deleted. If the total is over max_bytes (a
 * smaller cap than last time), the oldest segments are dropped as at an
 * append. o NULL = defaults (ALWAYS). On failure *out is NULL and err (may
 * be NULL) says what failed on which path: -EINVAL (options), -EACCES,
 * -EROFS, -ENOSPC, -EIO (file system; a new spool must be able to write its
 * state file, an existing one opens even if it cannot, to be drained),
 * -EBUSY (another process has the spool open), -ENOMEM. */
int spool_open(const char *dir, const struct spool_opts *o, struct spool **out,
	       char *err, size_t errlen);

/* Sync, write the state file, release the lock and free. Cursors still open
 * are detached (their next call returns -EBADF); close them after. Returns
 * the first error of the final sync/state write (the spool is freed anyway).
 * Accepts NULL. */
int spool_close(struct spool *s);

/* Append one record (payload is opaque: a serialized Event). Assigns the
 * next spool seq (*seq_out, may be NULL). All or nothing: on error the
 * record is not in the spool, no seq is used and the file is as before.
 * When the spool would exceed max_bytes, the oldest whole segments are
 * dropped first; their unacked records become a gap (counted in
 * dropped_records). Errors: -EINVAL, -EMSGSIZE (len over the max payload),
 * -ENOSPC/-EDQUOT/-EIO/-EACCES... (see spool_error()). */
int spool_append(struct spool *s, uint8_t type, const void *payload, size_t len,
		 uint64_t *seq_out);

/* The server has everything up to seq (records and gaps). Idempotent: a
 * seq <= the acked one changes nothing. A seq never handed out (>= the next
 * seq to append) is refused with -ERANGE and changes nothing: the server is
 * talking about another spool. Segments wholly acked are deleted after the
 * state file says so. The ack itself is kept in memory and written with the
 * next state write (a segment deletion, spool_tick, spool_sync, close): a
 * crash can forget a recent ack, which costs only resending. Returns an I/O
 * error of that state write or deletion (the ack stands in memory). */
int spool_ack(struct spool *s, uint64_t seq);

/* Make every append so far durable (under NEVER: those of the newest
 * segment) and visible to cursors, and write the state file if it changed. */
int spool_sync(struct spool *s);
/* Call from the loop with a monotonic clock: syncs (SPOOL_FSYNC_INTERVAL)
 * and writes a changed state file once fsync_interval_ms have passed since
 * the last time. Cheap when there is nothing to do. */
int spool_tick(struct spool *s, uint64_t now_ms);

struct spool_stats {
	uint64_t records;	/* records present with seq > acked_seq */
	uint64_t bytes;		/* all segment files (headers included) */
	uint64_t segments;
	uint64_t first_seq;	/* oldest record present (acked or not); 0 if none */
	uint64_t last_seq;	/* newest record present; 0 if none */
	uint64_t next_seq;	/* the seq the next append gets */
	uint64_t acked_seq;
	uint64_t durable_seq;	/* cursors deliver seqs (records, gaps) up to this one */
	uint64_t lost_ranges;	/* gaps above acked_seq (reported by cursors until acked) */
	uint64_t lost_seqs;	/* seqs in those gaps */
	uint64_t lost_from, lost_to;	/* the oldest gap; 0, 0 if none */
	/* totals since the spool was created (persisted with the state) */
	uint64_t dropped_records;	/* records given up: cap, quarantine, crash */
	uint64_t quarantined;		/* segments put in quarantine */
	uint64_t torn_tails;		/* torn tails truncated at open */
	/* since open */
	uint64_t append_errors;
	uint64_t fsyncs;		/* fdatasync/fsync calls, state writes included */
};
void spool_stats(const struct spool *s, struct spool_stats *st);

/* 32 hex digits, stable for the life of the spool's state. Owned by s. */
const char *spool_id(const struct spool *s);
/* The message of the last failed call on s, "" if none. Owned by s. */
const char *spool_error(const struct spool *s);

/* ---- sending ---- */

enum spool_item_kind { SPOOL_ITEM_RECORD = 1, SPOOL_ITEM_LOST = 2 };

/* Why a gap exists. Kept in the state file for the newest
 * SPOOL_MAX_LOST_NOTES ranges not yet acked; a gap without one (older, or
 * its note lost in a crash) is UNKNOWN. The gap itself never depends on it. */
enum spool_lost_reason {
	SPOOL_LOST_UNKNOWN = 0,
	SPOOL_LOST_FULL,	/* dropped at max_bytes */
	SPOOL_LOST_CORRUPT,	/* in a quarantined segment */
	SPOOL_LOST_CRASH,	/* cut off the newest segment after a crash */
};
/* "spool_full", "spool_corrupt", "spool_crash", "spool_unknown" (EventsLost.reason) */
const char *spool_lost_reason_name(enum spool_lost_reason r);

struct spool_item {
	enum spool_item_kind kind;
	uint64_t seq;		/* RECORD: its seq; LOST: first seq of the gap */
	uint64_t lost_to;	/* LOST: last seq of the gap (inclusive) */
	enum spool_lost_reason reason;	/* LOST */
	uint8_t type;		/* RECORD */
	const uint8_t *data;	/* RECORD: payload, valid until the cursor's next call */
	size_t len;
};

/* A cursor delivering the seqs after `after` in order: records and gaps,
 * never below acked_seq + 1 (after = 0: from the first unacked, the usual
 * start; after a reconnect, the seq the server says it has). A cursor may
 * be opened at any time and lives across appends, acks and drops. */
int spool_cursor_open(struct spool *s, uint64_t after, struct spool_cursor **out);
/* 1 with *it filled, 0 when caught up with what is durable, -errno on a
 * read error (-EBADF once the spool is closed). A gap comes as one LOST
 * item per reason, and only below what is durable (so its seqs are never
 * reused). A record found corrupt while reading puts its segment in
 * quarantine and the cursor goes on with the resulting gap. */
int spool_cursor_next(struct spool_cursor *c, struct spool_item *it);
uint64_t spool_cursor_pos(const struct spool_cursor *c);	/* the next seq it will deliver */
void spool_cursor_close(struct spool_cursor *c);		/* accepts NULL */

/* CRC-32C (Castagnoli), as used in the files; crc 0 to start. */
uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

#endif
