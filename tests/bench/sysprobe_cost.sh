#!/usr/bin/env bash
# Cost of the syscall investigation (bpf/sysprobe.bpf.c) on syscalls. While
# attached, programs on raw_syscalls:sys_enter/sys_exit run on every syscall
# of the host. Needs root.
#
#   tests/bench/sysprobe_cost.sh   env: BUILD=build ROUNDS=5 CALLS=5000000 VARIANTS=auto
#
# tests/bench/sysprobe_cost.c: syscall(SYS_getpid) ns/call of this process,
# not a target and a target, with nothing loaded / sysprobe loaded but not
# attached / attached / attached without the fork/exit programs (what
# following descendants adds to syscalls: nothing expected); interleaved
# rounds, medians; then the in-program time per run from the kernel's BPF
# stats (a scoped fd, separate pass, with some forks for the fork/exit
# programs). VARIANTS
# is a list (auto tp_btf+task_storage tp_btf+hash raw_tp+hash); each one is
# a separate table. Timings on shared VMs are noisy: compare the figures of
# one run.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-5}
CALLS=${CALLS:-5000000}
VARIANTS=${VARIANTS:-auto}
[ "$(id -u)" = 0 ] || { echo "sysprobe_cost: needs root (loads BPF programs)" >&2; exit 1; }

objs="$BUILD/obj/sysprobe.o $BUILD/obj/bpfload.o $BUILD/obj/log.o $BUILD/obj/metrics.o $BUILD/obj/buf.o"
make -s BUILD="$BUILD" $objs
mkdir -p "$BUILD/bench"
bin="$BUILD/bench/sysprobe_cost"
cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Iuserspace -I"$BUILD/gen" \
    $(pkg-config --cflags libbpf libcjson) -o "$bin" tests/bench/sysprobe_cost.c $objs \
    $(pkg-config --libs libbpf libcjson) -lelf -lz -lm

for v in $VARIANTS; do
    echo "== getpid() cost, variant $v"
    "$bin" --rounds "$ROUNDS" --calls "$CALLS" --variant "$v"
done
