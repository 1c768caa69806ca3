#!/usr/bin/env bash
# Access-log parsing throughput: our parser + statistics against GoAccess and
# an awk status count, on the same synthetic combined-format log.
#
#   tests/bench/logs_bench.sh      (BUILD=build LOG_MB=1024 ROUNDS=3 KEEP=0 JSON=1 LOG_DIR=$TMPDIR/oneshield-logs-bench)
#   make bench-logs [LOG_MB=200] [KEEP=1]
#
# 1. tests/bench/logs_gen.c writes LOG_MB MiB of combined-format lines
#    (deterministic, so a file of the expected size is reused), then the
#    file is read once so every tool starts from the page cache.
# 2. tests/bench/logs_bench.c: mmap, split lines, logfmt_parse +
#    logstats_add per line on one core; best of ROUNDS.
# 3. goaccess FILE --log-format=COMBINED -o report.json (installed with
#    apt-get when missing and we are root; skipped otherwise). Wall time of
#    the whole run, which is dominated by parsing and its tables.
# 4. awk '{c[$9]++}' (the system awk): field splitting only.
# 5. With JSON=1 (default), our parser on the same requests as JSON lines
#    (escape=json style, with request and upstream times), for reference.
# The logs are deleted at the end unless KEEP=1. MB/s are 10^6 bytes per s.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
LOG_MB=${LOG_MB:-1024}
ROUNDS=${ROUNDS:-3}
KEEP=${KEEP:-0}
JSON=${JSON:-1}
DIR=${LOG_DIR:-${TMPDIR:-/tmp}/oneshield-logs-bench}
LOG=$DIR/access-${LOG_MB}M.log
JLOG=$DIR/access-${LOG_MB}M.json

objs="$BUILD/obj/logfmt.o $BUILD/obj/logstats.o $BUILD/obj/errlog.o $BUILD/obj/metrics.o $BUILD/obj/buf.o"
make -s BUILD="$BUILD" $objs
mkdir -p "$BUILD/bench" "$DIR"
cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$BUILD/bench/logs_gen" tests/bench/logs_gen.c
cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iuserspace $(pkg-config --cflags libcjson) \
    -o "$BUILD/bench/logs_bench" tests/bench/logs_bench.c $objs $(pkg-config --libs libcjson) -lm

cleanup() {
    rm -f "$DIR/goaccess.json"
    if [ "$KEEP" != 1 ]; then
        rm -f "$LOG" "$LOG.size" "$JLOG" "$JLOG.size"
        rmdir "$DIR" 2>/dev/null || true
    fi
}
trap cleanup EXIT

size_of() { stat -c %s "$1"; }
# generate FILE [json]: reuse a file of the size the generator reported
generate() {
    local f=$1
    if [ -f "$f" ] && [ -f "$f.size" ] && [ "$(cat "$f.size")" = "$(size_of "$f")" ]; then
        echo "== reusing $f ($(size_of "$f") bytes)"
    else
        echo "== generating $LOG_MB MiB ${2:-combined} log $f"
        "$BUILD/bench/logs_gen" "$LOG_MB" "$f" ${2:-}
        size_of "$f" > "$f.size"
    fi
}
generate "$LOG"
BYTES=$(size_of "$LOG")
cat "$LOG" > /dev/null   # into the page cache for every tool

now() { date +%s.%N; }
declare -A SECS

echo "== oneshield logfmt + logstats, 1 core, best of $ROUNDS"
out=$("$BUILD/bench/logs_bench" "$LOG" combined "$ROUNDS")
echo "$out" | grep -v '^RESULT'
res=$(echo "$out" | grep '^RESULT')
LINES=$(echo "$res" | sed 's/.* lines=\([0-9]*\).*/\1/')
SECS[ours]=$(echo "$res" | sed 's/.* best_s=\([0-9.]*\).*/\1/')

GA=""
if ! command -v goaccess >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing goaccess"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q goaccess >/dev/null || true
fi
if command -v goaccess >/dev/null; then
    GA=$(goaccess --version | head -1 | sed 's/GoAccess - //; s/\.$//')
    echo "== goaccess $GA --log-format=COMBINED (wall time)"
    t0=$(now)
    /usr/bin/time -f "goaccess max RSS %M KiB, user %U s, sys %S s" \
        goaccess "$LOG" --log-format=COMBINED --no-global-config --no-progress -o "$DIR/goaccess.json" \
        </dev/null 2>&1 | grep -v '^Cleaning' || true
    SECS[goaccess]=$(echo "$(now) - $t0" | bc -l)
    [ -s "$DIR/goaccess.json" ] || { echo "goaccess produced no report" >&2; SECS[goaccess]=""; }
else
    echo "== goaccess not available: skipped"
fi

AWK=$(readlink -f "$(command -v awk)")
echo "== $(basename "$AWK") '{c[\$9]++}' status count"
t0=$(now)
LC_ALL=C awk '{c[$9]++} END{for (k in c) { s = substr(k, 1, 1) "xx"; if (k !~ /^[1-5][0-9][0-9]$/) s = "other"; t[s] += c[k] }
    n = 0; for (s in t) printf "%s%s=%d", (n++ ? " " : "status classes: "), s, t[s]; print ""}' "$LOG"
SECS[awk]=$(echo "$(now) - $t0" | bc -l)

echo
printf '%-34s %10s %10s %12s %14s\n' "tool ($((BYTES / 1000000)) MB, $LINES lines)" seconds MB/s "lines/s" "ours is"
row() {
    local name=$1 s=$2
    [ -n "$s" ] || return 0
    printf '%-34s %10.3f %10.1f %12.0f %13.1fx\n' "$name" "$s" "$(echo "$BYTES / $s / 1000000" | bc -l)" \
        "$(echo "$LINES / $s" | bc -l)" "$(echo "$s / ${SECS[ours]}" | bc -l)"
}
row "oneshield parse+stats (1 core)" "${SECS[ours]}"
row "goaccess ${GA:-}" "${SECS[goaccess]:-}"
row "$(basename "$AWK") status count" "${SECS[awk]}"

if [ "$JSON" = 1 ]; then
    echo
    generate "$JLOG" json
    cat "$JLOG" > /dev/null
    echo "== oneshield JSON lines (default key map), 1 core, best of $ROUNDS"
    "$BUILD/bench/logs_bench" "$JLOG" json "$ROUNDS" | grep -v '^RESULT'
fi
