#!/usr/bin/env bash
# Cost of the always-on process lifecycle probes (bpf/proclife.bpf.c), which
# run on every exec, fork and exit of the host, and their event latency.
# Needs root.
#
#   tests/bench/proclife_cost.sh     (BUILD=build ROUNDS=5 ITERS=500 VARIANT=auto TRANSPORT=auto LAT=1000)
#
# 1. tests/bench/proclife_cost.c: fork+exec(/bin/true)+wait loop with no
#    programs / attached but untracked / every exec matching (interleaved
#    rounds, medians), in-program ns per run from the kernel's BPF stats;
#    then kernel-hook -> callback latency over LAT execs for the ring buffer
#    and the perf buffer transport, in alternating rounds of the same run.
# 2. hyperfine: a shell running /bin/true 500 times, without and with the
#    programs attached (held by proclife_cost --hold, nothing matching),
#    alternated CYCLES times (default 4) so drift hits both states.
# Timings on shared VMs are noisy: compare the figures of one run.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-5}
ITERS=${ITERS:-500}
VARIANT=${VARIANT:-auto}
TRANSPORT=${TRANSPORT:-auto}
LAT=${LAT:-1000}
[ "$(id -u)" = 0 ] || { echo "proclife_cost: needs root (loads BPF programs)" >&2; exit 1; }

objs="$BUILD/obj/proclife.o $BUILD/obj/bpfload.o $BUILD/obj/loop.o $BUILD/obj/log.o $BUILD/obj/procfs.o $BUILD/obj/metrics.o $BUILD/obj/buf.o"
make -s BUILD="$BUILD" $objs
mkdir -p "$BUILD/bench"
bin="$BUILD/bench/proclife_cost"
cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Iuserspace -I"$BUILD/gen" \
    $(pkg-config --cflags libbpf libcjson) -o "$bin" tests/bench/proclife_cost.c $objs \
    $(pkg-config --libs libbpf libcjson) -lelf -lz -lm

echo "== fork+exec loop"
"$bin" --rounds "$ROUNDS" --iters "$ITERS" --variant "$VARIANT" --transport "$TRANSPORT"
echo "== event latency, ring buffer and perf buffer"
"$bin" --latency "$LAT" --variant "$VARIANT" --transport both

if command -v hyperfine >/dev/null; then
    # Alternate without / with (held by proclife_cost --hold, nothing
    # matching) CYCLES times; medians of all runs of each state.
    CYCLES=${CYCLES:-4}
    echo "== hyperfine: sh loop of 500 /bin/true, without / with the programs attached, $CYCLES alternations"
    cmd='sh -c "for i in $(seq 500); do /bin/true; done"'
    out="$BUILD/bench"; rm -f "$out"/pl_none_*.json "$out"/pl_att_*.json
    for c in $(seq "$CYCLES"); do
        hyperfine -N --warmup 1 --runs 5 --export-json "$out/pl_none_$c.json" "$cmd" >/dev/null
        fifo=$(mktemp -u); mkfifo "$fifo"
        "$bin" --hold --variant "$VARIANT" --transport "$TRANSPORT" <"$fifo" >"$out/hold.out" & holder=$!
        exec 9>"$fifo"; rm -f "$fifo"
        until grep -q ready "$out/hold.out" 2>/dev/null; do
            kill -0 $holder 2>/dev/null || { echo "holder failed" >&2; exit 1; }
            sleep 0.1
        done
        hyperfine -N --warmup 1 --runs 5 --export-json "$out/pl_att_$c.json" "$cmd" >/dev/null
        exec 9>&-; wait $holder
    done
    /usr/bin/python3 - "$out" <<'PY'
import glob, json, statistics, sys
d = sys.argv[1]
def runs(pat):
    return [t for f in sorted(glob.glob(f"{d}/{pat}")) for t in json.load(open(f))["results"][0]["times"]]
n, a = runs("pl_none_*.json"), runs("pl_att_*.json")
mn, ma = statistics.median(n), statistics.median(a)
print(f"  none      median {mn*1e3:7.1f} ms  min {min(n)*1e3:7.1f} ms  ({len(n)} runs)")
print(f"  attached  median {ma*1e3:7.1f} ms  min {min(a)*1e3:7.1f} ms  ({len(a)} runs)  {100*(ma-mn)/mn:+.2f}% median, {100*(min(a)-min(n))/min(n):+.2f}% min")
PY
fi
