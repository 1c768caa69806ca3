#!/usr/bin/env bash
# Quick start, part 2: install what is missing, build, and run every test:
# C unit tests and black-box tests on a normal build (eBPF mode), the
# black-box tests again in forced procfs mode, then the whole suite again on
# an ASan+UBSan build. Ends with a "N passed, N failed" summary.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh || exit 1
# BPF tests: bpffs, and tracefs for the classic-tracepoint variants
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true; fi
if ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true; fi

jobs=$(nproc)
passed=0
failed=0
failures=()
log=$(mktemp -d /tmp/oneshield-test.XXXXXX)

run_suite() { # name build-dir make-args...
    local name=$1 dir=$2; shift 2
    echo "=== $name: build"
    if ! make -s -j"$jobs" BUILD="$dir" "$@" all unit; then
        failed=$((failed + 1)); failures+=("$name: build"); return
    fi
    echo "=== $name: unit tests"
    for t in "$dir"/tests/test_*; do
        if "$t" >"$log/$(basename "$t").$name.log" 2>&1; then
            n=$(grep -c '^\[       OK \]' "$log/$(basename "$t").$name.log")
            passed=$((passed + n))
            echo "ok   $(basename "$t") ($n)"
        else
            n=$(grep -c '^\[  FAILED  \] test_' "$log/$(basename "$t").$name.log" || true)
            [ "$n" -gt 0 ] || n=1
            failed=$((failed + n)); failures+=("$name: $(basename "$t")")
            echo "FAIL $(basename "$t")"; cat "$log/$(basename "$t").$name.log"
        fi
    done
    run_pytest "$name" "$dir"
}

run_pytest() { # name build-dir (the environment passes through to the agents)
    local name=$1 dir=$2
    echo "=== $name: black-box tests"
    local out="$log/pytest.$name.log"
    AGENT_BIN="$PWD/$dir/oneshield-agent" SIM_BIN="$PWD/$dir/onepanel-sim" \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit2 \
        --junitxml="$log/junit.$name.xml" tests/e2e ${PYTEST_ARGS:-} 2>&1 | tee "$out"
    local p f
    p=$(grep -oE '[0-9]+ passed' "$out" | tail -1 | cut -d' ' -f1)
    f=$(grep -oE '[0-9]+ (failed|error)' "$out" | awk '{s+=$1} END {print s+0}')
    passed=$((passed + ${p:-0}))
    if [ "${f:-0}" -gt 0 ] || [ -z "$p" ]; then
        failed=$((failed + ${f:-1})); failures+=("$name: pytest")
    fi
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
run_suite "default" build
# The same black-box suite with eBPF forced off: procfs mode must behave the same.
if [ "${SKIP_PROCFS:-0}" != 1 ]; then
    ONESHIELD_FORCE_PROCFS=1 run_pytest "procfs-mode" build
fi
# valgrind (memcheck): the eBPF modules' unit tests and the agent itself,
# with tests/valgrind.supp for libbpf's partly filled bpf() attributes.
if [ "${SKIP_VALGRIND:-0}" != 1 ]; then
    echo "=== valgrind: eBPF unit tests and the agent"
    for t in test_bpfload test_proclife test_schedlat test_sysprobe; do
        if valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            --suppressions=tests/valgrind.supp build/tests/$t >"$log/$t.valgrind.log" 2>&1; then
            passed=$((passed + 1)); echo "ok   $t (valgrind)"
        else
            failed=$((failed + 1)); failures+=("valgrind: $t"); echo "FAIL $t (valgrind)"
            tail -50 "$log/$t.valgrind.log"
        fi
    done
    PYTEST_ARGS="-k valgrind" ONESHIELD_VALGRIND=1 run_pytest "valgrind" build
fi
if [ "${SKIP_ASAN:-0}" != 1 ]; then
    run_suite "asan" build-asan SAN=1
fi
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    echo "=== fuzz: a short run of every libFuzzer target"
    if make -s BUILD=build-fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-15}" fuzz-smoke; then
        n=$(ls tests/fuzz/fuzz_*.c | wc -l); passed=$((passed + n))
    else
        failed=$((failed + 1)); failures+=("fuzz-smoke")
    fi
fi

echo
echo "==== summary: $passed passed, $failed failed"
for f in "${failures[@]}"; do echo "  failed: $f"; done
[ "$failed" -eq 0 ]
