#!/usr/bin/env bash
# Install the Debian packages that oneshield-agent needs to build and test.
# Idempotent and quick when everything is present: apt-get runs only for the
# packages dpkg does not already report as installed.
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh build    build dependencies only
set -euo pipefail

build_pkgs=(make gcc clang llvm pkg-config libbpf-dev bpftool libelf-dev zlib1g-dev
            libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
            libmicrohttpd-dev libgnutls28-dev libcjson-dev libyaml-dev)
test_pkgs=(libcmocka-dev python3-pytest python3-grpcio python3-protobuf python3-requests
           python3-yaml protobuf-compiler-grpc nginx-light curl prometheus valgrind
           hyperfine wrk libclang-rt-14-dev procps iproute2
           prometheus-node-exporter
           dpkg-dev lintian systemd man-db openssl)

want=("${build_pkgs[@]}")
[ "${1:-all}" = build ] || want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if an install fails on a stale cache.
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/oneshield-deps.log 2>&1; then
    apt-get update -q >>/tmp/oneshield-deps.log 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/oneshield-deps.log 2>&1 || {
        tail -20 /tmp/oneshield-deps.log >&2; exit 1; }
fi
