# oneshield-agent build.
#
#   make              build/oneshield-agent and build/onepanel-sim
#   make asan         the same with ASan+UBSan into build-asan/
#   make unit         build the cmocka unit tests
#   make test         unit + black-box tests (this build)
#   make check        test, then the whole suite again under ASan+UBSan
#   make bench-idle   idle RSS/CPU of the agent beside onepanel
#   make bench-grpc   gRPC event fan-out and unary throughput
#   make bench-apply  the agent's own time per config apply (1 and 100 files)
#   make bench-ebpf   eBPF event latency, probe overhead on nginx, getpid cost
#   make bench-logs   access-log parsing MB/s vs GoAccess and awk (LOG_MB=1024 KEEP=0)
#   make bench-fleet  N agents reporting to one management server (BENCH_ARGS="--agents 200")
#   make bench        all of the above, one after the other (~30 min)
#   make deb          $(BUILD)/oneshield-agent_<version>_<arch>.deb (packaging/build-deb.sh;
#                     DEB_VERSION=... overrides the version taken from git describe)
#
# Generated files (skeletons, protobuf-c output) go to $(BUILD) only.

BUILD   ?= build
SAN     ?=
PYTHON  ?= /usr/bin/python3
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)

BASE_PKGS  := libmicrohttpd gnutls libcjson yaml-0.1 libbpf
GRPC_PKGS  := libprotobuf-c grpc gpr
PKGS       := $(BASE_PKGS) $(GRPC_PKGS)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
BASE_LIBS  := $(shell pkg-config --libs $(BASE_PKGS) 2>/dev/null)
GRPC_LIBS  := $(shell pkg-config --libs $(GRPC_PKGS) 2>/dev/null)

CC      ?= gcc
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -Wmissing-prototypes -Wstrict-prototypes
CFLAGS  ?= -O2 -g
CFLAGS  += -fPIC -std=gnu11 -D_GNU_SOURCE -DOS_VERSION='"$(VERSION)"' $(WARN) -Iinclude -Iuserspace -I$(BUILD)/gen $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lelf -lz -lm
ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

# Protobuf: protoc-c output and the descriptor set embedded for gRPC server
# reflection, all generated into $(BUILD)/gen.
GEN        := $(BUILD)/gen
PROTOS     := $(sort $(shell find proto -name '*.proto'))
PB_C       := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
PB_H       := $(PB_C:.c=.h)
PB_OBJS    := $(patsubst $(GEN)/%.c,$(BUILD)/obj/gen/%.o,$(PB_C)) $(BUILD)/obj/gen/descriptors.o

# The gRPC side is a plugin loaded only when gRPC is configured (see
# userspace/grpc_server.h): the agent binary does not link gRPC at all.
# eBPF: bpf/X.bpf.c -> $(BUILD)/bpf/X.bpf.o (CO-RE, BTF) -> $(BUILD)/gen/X.skel.h
ARCH       ?= $(shell uname -m)
BPF_ARCH   := $(patsubst x86_64,x86,$(patsubst aarch64,arm64,$(ARCH)))
BPF_SRCS   := $(sort $(wildcard bpf/*.bpf.c))
BPF_OBJS   := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
BPF_SKELS  := $(patsubst bpf/%.bpf.c,$(GEN)/%.skel.h,$(BPF_SRCS))
BPF_CLANG  ?= clang
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Werror -Ivmlinux/$(ARCH) -Iinclude -Ibpf

AGENT_SRCS  := $(sort $(wildcard userspace/*.c))
PLUGIN_SRCS := userspace/grpc_server.c userspace/pbconv.c userspace/reflection.c userspace/mgmt.c
PLUGIN_OBJS := $(patsubst userspace/%.c,$(BUILD)/obj/%.o,$(PLUGIN_SRCS)) $(PB_OBJS)
MAIN_OBJS   := $(patsubst userspace/%.c,$(BUILD)/obj/%.o,$(filter-out $(PLUGIN_SRCS),$(AGENT_SRCS)))
LIB_OBJS    := $(filter-out $(BUILD)/obj/main.o,$(MAIN_OBJS)) $(PLUGIN_OBJS)
SIM_SRCS   := $(sort $(wildcard tools/onepanel-sim/*.c))
SIM_OBJS   := $(patsubst tools/onepanel-sim/%.c,$(BUILD)/obj/sim/%.o,$(SIM_SRCS))
UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
FUZZ_SRCS  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SECONDS ?= 20

.SECONDARY:
.PHONY: vmlinux all agent plugin sim unit asan test test-unit test-e2e check bench bench-idle bench-grpc bench-apply bench-ebpf bench-logs bench-fleet fuzz fuzz-smoke clean deb
all: agent plugin sim
agent: $(BUILD)/oneshield-agent
plugin: $(BUILD)/oneshield-agent-grpc.so
sim: $(BUILD)/onepanel-sim
unit: $(UNIT_BINS)

$(BUILD)/obj/%.o: userspace/%.c $(wildcard userspace/*.h include/*.h) $(BPF_SKELS) | $(BUILD)/obj $(PB_H)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h include/*.h) vmlinux/$(ARCH)/vmlinux.h
	@mkdir -p $(BUILD)/bpf
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

$(GEN)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	@mkdir -p $(GEN)
	bpftool gen skeleton $< name $* > $@.tmp && mv $@.tmp $@

# Syscall number -> name for userspace/sysprobe.c, from the libc's kernel
# headers (x86_64 numbering): designated initializers, gaps stay NULL.
$(GEN)/syscall_names.h:
	@mkdir -p $(GEN)
	printf '#include <asm/unistd_64.h>\n' | $(CC) -E -dM -x c - | awk \
	    'BEGIN { print "/* generated by the Makefile from <asm/unistd_64.h> */"; \
	             print "static const char *const sysprobe_syscall_names[] = {" } \
	     $$2 ~ /^__NR_/ && $$3 ~ /^[0-9]+$$/ { printf "\t[%s] = \"%s\",\n", $$3, substr($$2, 6); n++ } \
	     END { print "};"; if (!n) exit 1 }' > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/sysprobe.o $(FUZZ_BINS): $(GEN)/syscall_names.h

# Regenerate vmlinux.h from the running kernel's BTF (then commit it).
vmlinux:
	@mkdir -p vmlinux/$(ARCH)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/$(ARCH)/vmlinux.h

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto $<

$(GEN)/descriptors.pb: $(PROTOS)
	@mkdir -p $(GEN)
	protoc --include_imports --include_source_info --descriptor_set_out=$@ -Iproto $(PROTOS)

# The descriptor set as a symbol pair, without xxd: the assembler includes it.
$(GEN)/descriptors.c: $(GEN)/descriptors.pb
	printf '%s\n' '/* generated by the Makefile: FileDescriptorSet of proto/ */' \
	    '__asm__(".section .rodata\n.balign 8\n.global os_descriptor_set\nos_descriptor_set:\n" ".incbin \"$(abspath $<)\"\n.global os_descriptor_set_end\nos_descriptor_set_end:\n.previous");' > $@

$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -Wmissing-prototypes -Wshadow,$(CFLAGS)) -Wno-missing-braces -c -o $@ $<

$(BUILD)/obj/sim/%.o: tools/onepanel-sim/%.c $(wildcard tools/onepanel-sim/*.h) | $(BUILD)/obj/sim
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/oneshield-agent: $(MAIN_OBJS)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $^ $(BASE_LIBS) -lelf -lz -lm -ldl

# Resolves the agent's own symbols (journal, loop, log, ...) from the
# executable at dlopen time, hence no -z defs.
$(BUILD)/oneshield-agent-grpc.so: $(PLUGIN_OBJS)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(GRPC_LIBS) -lm
	chmod 0755 $@   # the agent loads only a plugin that others cannot write

$(BUILD)/onepanel-sim: $(SIM_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lm

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/tests
	$(CC) $(CFLAGS) -DTEST_DATA_DIR='"$(CURDIR)/tests/unit/data"' $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS) -lcmocka

# libFuzzer targets: clang, ASan+UBSan, linked with every agent module.
# ONESHIELD_FUZZ compiles in the seams fuzz targets drive (mgmt.h).
$(BUILD)/fuzz/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(filter-out userspace/main.c,$(AGENT_SRCS)) $(wildcard userspace/*.h) $(PB_C) $(GEN)/descriptors.c $(BPF_SKELS) | $(BUILD)/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=gnu11 -D_GNU_SOURCE \
	    -DONESHIELD_FUZZ -DOS_VERSION='"$(VERSION)"' -Iinclude -Iuserspace $(PKG_CFLAGS) -o $@ \
	    -I$(GEN) $< $(filter-out userspace/main.c,$(AGENT_SRCS)) $(PB_C) $(GEN)/descriptors.c $(PKG_LIBS) -lelf -lz -lm

fuzz: $(FUZZ_BINS)

# A short run of every target (seeded from tests/fuzz/corpus/NAME when present).
fuzz-smoke: fuzz
	@set -e; for f in $(FUZZ_BINS); do \
	    n=$$(basename $$f); c=tests/fuzz/corpus/$$n; w=$$(mktemp -d); \
	    [ -d $$c ] && cp -r $$c/. $$w/; \
	    echo "== $$n ($(FUZZ_SECONDS) s)"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=0 $$w >$$w.log 2>&1 \
	        || { tail -40 $$w.log; exit 1; }; \
	    grep -E '^Done|runs in' $$w.log | tail -1; rm -rf $$w $$w.log; done

$(BUILD)/obj $(BUILD)/obj/sim $(BUILD)/tests $(BUILD)/fuzz:
	mkdir -p $@

asan:
	$(MAKE) BUILD=build-asan SAN=1 all unit

test-unit: unit
	@set -e; fail=0; for t in $(UNIT_BINS); do \
	    echo "== $$t"; $$t || fail=1; done; exit $$fail

test-e2e: all
	AGENT_BIN=$(CURDIR)/$(BUILD)/oneshield-agent SIM_BIN=$(CURDIR)/$(BUILD)/onepanel-sim \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

test: test-unit test-e2e

check:
	$(MAKE) test
	$(MAKE) BUILD=build-asan SAN=1 test

bench-grpc: all
	$(PYTHON) tests/bench/grpc_bench.py --agent $(BUILD)/oneshield-agent --build $(BUILD) $(BENCH_ARGS)

bench-apply: all
	$(PYTHON) tests/bench/apply.py --agent $(BUILD)/oneshield-agent --sim $(BUILD)/onepanel-sim $(BENCH_ARGS)

# eBPF: event latency (eBPF vs procfs mode), nginx under wrk with and without
# the agent's probes and an investigation, getpid() of a bystander.
$(BUILD)/bench/getpid_loop: tests/bench/getpid_loop.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

bench-ebpf: all $(BUILD)/bench/getpid_loop
	$(PYTHON) tests/bench/ebpf.py --agent $(BUILD)/oneshield-agent --getpid $(BUILD)/bench/getpid_loop $(BENCH_ARGS)

bench-idle: all
	$(PYTHON) tests/bench/idle.py --agent $(BUILD)/oneshield-agent --sim $(BUILD)/onepanel-sim $(BENCH_ARGS)

# LOG_MB (1024), ROUNDS (3), KEEP (0: delete the generated logs) and JSON
# (1: also time JSON lines) reach the script from the command line or the
# environment.
bench-logs: all
	BUILD=$(BUILD) tests/bench/logs_bench.sh
	$(PYTHON) tests/bench/logs_cpu.py --agent $(BUILD)/oneshield-agent $(BENCH_ARGS)

# The Debian package, from this build's agent and plugin (packaging/).
# N agents (procfs mode, each beside its own simulator) reporting to one
# reference management server: CPU, RSS, bytes per report and per event,
# ingest rate, command round trip to all. BENCH_ARGS="--agents 200".
bench-fleet: all
	$(PYTHON) tests/bench/fleet.py --agent $(BUILD)/oneshield-agent --sim $(BUILD)/onepanel-sim $(BENCH_ARGS)

# Every benchmark in turn (never in parallel: they measure CPU). BENCH_ARGS
# is left to each target's own defaults here.
bench: all
	@for t in bench-idle bench-grpc bench-apply bench-ebpf bench-logs bench-fleet; do \
	    echo "==== $$t"; $(MAKE) --no-print-directory $$t BENCH_ARGS= || exit 1; done

deb: agent plugin
	BUILD=$(BUILD) DEB_VERSION=$(DEB_VERSION) packaging/build-deb.sh

clean:
	rm -rf build build-asan
