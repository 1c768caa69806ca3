#!/usr/bin/env bash
# Cost of the always-on scheduler probes (bpf/schedlat.bpf.c), which run on
# every wakeup and context switch of the host. Needs root.
#
#   tests/bench/schedlat_cost.sh   env: BUILD=build ROUNDS=5 TRIPS=200000 VARIANT=auto
#                                  PARTS="pingpong perf nginx" SECS=8 PORT=18089
#
# 1. tests/bench/schedlat_cost.c: pipe ping-pong between two processes, on
#    one CPU and on two, with no programs / programs attached but the
#    processes untracked (what every other process pays) / both processes
#    tracked (what onepanel pays); interleaved rounds, medians; then the
#    in-program time per run from the kernel's BPF stats, enabled through a
#    scoped fd for that pass only.
# 2. When perf is installed: `perf bench sched pipe` pinned to one CPU, with
#    and without the programs attached (held by schedlat_cost --hold).
# 3. When nginx and wrk are installed: nginx (2 workers,
#    static page) under wrk, requests/s with no programs, with the programs
#    attached, and with nginx's master and workers tracked (SECS per run).
# Timings on shared VMs are noisy: compare the figures of one run.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-5}
TRIPS=${TRIPS:-200000}
VARIANT=${VARIANT:-auto}
[ "$(id -u)" = 0 ] || { echo "schedlat_cost: needs root (loads BPF programs)" >&2; exit 1; }

objs="$BUILD/obj/schedlat.o $BUILD/obj/bpfload.o $BUILD/obj/log.o $BUILD/obj/metrics.o $BUILD/obj/buf.o"
make -s BUILD="$BUILD" $objs
mkdir -p "$BUILD/bench"
bin="$BUILD/bench/schedlat_cost"
# -Iuserspace first: include/schedlat.h is the BPF-shared header of the same name.
cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iuserspace -Iinclude -I"$BUILD/gen" \
    $(pkg-config --cflags libbpf libcjson) -o "$bin" tests/bench/schedlat_cost.c $objs \
    $(pkg-config --libs libbpf libcjson) -lelf -lz -lm

PARTS=${PARTS:-pingpong perf nginx}
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

if part pingpong; then
echo "== pipe ping-pong, both processes on CPU 0"
"$bin" --rounds "$ROUNDS" --trips "$TRIPS" --cpus same --variant "$VARIANT"
fi
if part pingpong && [ "$(nproc)" -ge 2 ]; then
    echo "== pipe ping-pong, processes on CPU 0 and CPU 1"
    "$bin" --rounds "$ROUNDS" --trips "$((TRIPS / 10))" --cpus two --variant "$VARIANT"   # ~10x slower per trip
fi

if part perf && command -v perf >/dev/null 2>&1 && perf bench sched pipe -l 1000 >/dev/null 2>&1; then
    echo "== perf bench sched pipe -l $TRIPS (taskset -c 0), programs attached but perf untracked"
    usecs() { taskset -c 0 perf bench sched pipe -l "$TRIPS" 2>/dev/null | awk '/usecs\/op/ {print $1}'; }
    off=() on=()
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    for r in $(seq "$ROUNDS"); do
        off+=("$(usecs)")
        "$bin" --hold --variant "$VARIANT" <"$fifo" >"$fifo.out" &
        holder=$!
        exec 9>"$fifo"
        for _ in $(seq 100); do grep -q '^ready' "$fifo.out" 2>/dev/null && break; sleep 0.1; done
        grep -q '^ready' "$fifo.out" || { echo "loader did not attach" >&2; cat "$fifo.out" >&2; exit 1; }
        on+=("$(usecs)")
        exec 9>&-
        wait "$holder"
        echo "round $r: none ${off[-1]}  attached ${on[-1]} usecs/op" >&2
    done
    rm -f "$fifo" "$fifo.out"
    med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    m_off=$(med "${off[@]}") m_on=$(med "${on[@]}")
    awk -v a="$m_off" -v b="$m_on" 'BEGIN {
        printf "  none      %.3f usecs/op\n  attached  %.3f usecs/op  %+.0f ns (%+.1f %%)\n", a, b, (b-a)*1000, 100*(b-a)/a }'
fi

if part nginx && command -v nginx >/dev/null && command -v wrk >/dev/null; then
    SECS=${SECS:-8}
    PORT=${PORT:-18089}
    echo "== nginx (2 workers, static page) under wrk -t2 -c50 -d${SECS}s"
    dir=$(mktemp -d)
    mkdir -p "$dir/html" "$dir/logs"
    echo hello >"$dir/html/index.html"
    chmod -R a+rX "$dir"   # workers run as nobody
    printf '%s\n' 'worker_processes 2;' "error_log $dir/logs/error.log;" "pid $dir/nginx.pid;" \
        'events { worker_connections 1024; }' \
        "http { access_log off; server { listen 127.0.0.1:$PORT; root $dir/html; } }" >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
    master=$!
    trap 'kill "$master" 2>/dev/null; wait "$master" 2>/dev/null; rm -rf "$dir"' EXIT
    for _ in $(seq 50); do [ "$(pgrep -c -P "$master")" -ge 2 ] && break; sleep 0.1; done
    tgts="--target $master"
    for w in $(pgrep -P "$master"); do tgts="$tgts --target $w"; done
    rps() { wrk -t2 -c50 -d"${SECS}s" http://127.0.0.1:$PORT/ | awk '/Requests\/sec/ {print $2}'; }
    with() {   # with "--target ARGS" or "": req/s while the programs are attached
        local fifo out holder r
        fifo=$(mktemp -u)
        out=$fifo.out
        mkfifo "$fifo"
        "$bin" --hold --variant "$VARIANT" $1 <"$fifo" >"$out" &
        holder=$!
        exec 8>"$fifo"
        for _ in $(seq 100); do grep -q '^ready' "$out" 2>/dev/null && break; sleep 0.1; done
        r=$(rps)
        exec 8>&-
        wait "$holder"
        [ -n "$1" ] && grep -E '^onepanel_(runqueue_latency|offcpu)_seconds_(count|sum)' "$out" >&2
        rm -f "$fifo" "$out"
        echo "$r"
    }
    rps >/dev/null   # warm up
    n=() u=() t=()
    for r in $(seq "$ROUNDS"); do
        # the order rotates: a run's position in the round biases it
        for k in 0 1 2; do
            case $(((r + k) % 3)) in
                0) n+=("$(rps)") ;;
                1) u+=("$(with "")") ;;
                2) t+=("$(with "$tgts")") ;;
            esac
        done
        echo "round $r: none ${n[-1]}  untracked ${u[-1]}  tracked ${t[-1]} req/s" >&2
    done
    med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    awk -v a="$(med "${n[@]}")" -v b="$(med "${u[@]}")" -v c="$(med "${t[@]}")" 'BEGIN {
        printf "  none       %8.0f req/s\n  untracked  %8.0f req/s (%+.1f %%)\n  tracked    %8.0f req/s (%+.1f %%)\n",
            a, b, 100*(b-a)/a, c, 100*(c-a)/a }'
fi
