# oneshield-agent build.
#
#   make              build/oneshield-agent and build/onepanel-sim
#   make asan         the same with ASan+UBSan into build-asan/
#   make unit         build the cmocka unit tests
#   make test         unit + black-box tests (this build)
#   make check        test, then the whole suite again under ASan+UBSan
#   make bench-idle   idle RSS/CPU of the agent beside onepanel
#
# Generated files (skeletons, protobuf-c output) go to $(BUILD) only.

BUILD   ?= build
SAN     ?=
PYTHON  ?= /usr/bin/python3
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)

PKGS    := libmicrohttpd libcjson yaml-0.1
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CC      ?= gcc
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -Wmissing-prototypes -Wstrict-prototypes
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -DOS_VERSION='"$(VERSION)"' $(WARN) -Iinclude -Iuserspace -I$(BUILD) $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lm
ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

AGENT_SRCS := $(sort $(wildcard userspace/*.c))
AGENT_OBJS := $(patsubst userspace/%.c,$(BUILD)/obj/%.o,$(AGENT_SRCS))
LIB_OBJS   := $(filter-out $(BUILD)/obj/main.o,$(AGENT_OBJS))
SIM_SRCS   := $(sort $(wildcard tools/onepanel-sim/*.c))
SIM_OBJS   := $(patsubst tools/onepanel-sim/%.c,$(BUILD)/obj/sim/%.o,$(SIM_SRCS))
UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
FUZZ_SRCS  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SECONDS ?= 20

.PHONY: all agent sim unit asan test test-unit test-e2e check bench-idle fuzz fuzz-smoke clean
all: agent sim
agent: $(BUILD)/oneshield-agent
sim: $(BUILD)/onepanel-sim
unit: $(UNIT_BINS)

$(BUILD)/obj/%.o: userspace/%.c $(wildcard userspace/*.h include/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/sim/%.o: tools/onepanel-sim/%.c $(wildcard tools/onepanel-sim/*.h) | $(BUILD)/obj/sim
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/oneshield-agent: $(AGENT_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/onepanel-sim: $(SIM_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lm

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/tests
	$(CC) $(CFLAGS) -DTEST_DATA_DIR='"$(CURDIR)/tests/unit/data"' $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS) -lcmocka

# libFuzzer targets: clang, ASan+UBSan, linked with every agent module.
$(BUILD)/fuzz/%: tests/fuzz/%.c $(filter-out userspace/main.c,$(AGENT_SRCS)) $(wildcard userspace/*.h) | $(BUILD)/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=gnu11 -D_GNU_SOURCE \
	    -DOS_VERSION='"$(VERSION)"' -Iinclude -Iuserspace $(PKG_CFLAGS) -o $@ \
	    $< $(filter-out userspace/main.c,$(AGENT_SRCS)) $(PKG_LIBS) -lm

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

bench-idle: all
	$(PYTHON) tests/bench/idle.py --agent $(BUILD)/oneshield-agent --sim $(BUILD)/onepanel-sim $(BENCH_ARGS)

clean:
	rm -rf build build-asan
