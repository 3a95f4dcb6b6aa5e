# procMonitor: the commands the README tells people to type.
#   make            build native/libprocconn.so
#   make run        run the monitor (ARGS="..." to pass flags; default --direct)
#   make test       unit and live tests; ends with "N passed, N failed"
#   make check      fmt check, lint, type check, C warnings as errors
#   make bench      the storm benchmark (root)
#   make soak       a million events with 10 clients; memory, fds, table, queues flat (root)
#   make compile    one self-contained executable, dist/procMonitor
#   make man        doc/procMonitor.8, the man page, from the --help text (scripts/man.ts)
#   make clean

# Resolved once, on first use: the pinned Deno (installed into .tools/ when missing).
DENO = $(eval DENO := $$(shell scripts/deno.sh))$(DENO)
ARGS ?= --direct
# A small young generation keeps the resident size down in a storm (README, Design); the
# bench (scripts/bench_support.ts) and deno compile (scripts/compile.sh) use the same flags.
export PROCMONITOR_V8_FLAGS = --max-semi-space-size=1,--heap-growing-percent=15

CC ?= gcc
CFLAGS ?= -O2 -g
PC_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-fPIC -fvisibility=hidden -pthread
LIB = native/libprocconn.so
LIB_SRC = native/procconn.c native/exec_bpf.c
LIB_HDR = native/procconn.h native/exec_bpf.h

# The exec BPF program (README, Design) is built with clang and libbpf's headers (Debian's
# clang and libbpf-dev) and embedded in the library, which loads libbpf.so.1 only at run
# time. Without them the library is built without it: pc_exec_bpf() says ENOSYS, and each
# exec's /proc is read at once, as before.
BPF_CLANG ?= clang
BPF_OBJ = native/exec_args.bpf.o
BPF_OK := $(shell command -v $(BPF_CLANG) >/dev/null 2>&1 && \
	test -f /usr/include/bpf/bpf_helpers.h && echo yes)
ifeq ($(BPF_OK),yes)
LIB_BPF = -DPC_BPF_OBJ='"$(BPF_OBJ)"'
LIB_DEPS = $(BPF_OBJ)
else
LIB_BPF = -DPC_NO_BPF
LIB_DEPS =
endif

.PHONY: all build run test check bench soak compile clean

all build: $(LIB)

$(LIB): $(LIB_SRC) $(LIB_HDR) $(LIB_DEPS)
	$(CC) $(PC_CFLAGS) $(CFLAGS) $(LIB_BPF) -shared -o $@ $(LIB_SRC) -pthread

# BTF (-g) is what libbpf relocates the program by; the DWARF beside it is dropped.
$(BPF_OBJ): native/exec_args.bpf.c native/exec_bpf.h
	$(BPF_CLANG) -O2 -g -target bpf -Wall -Wextra -Werror -Inative \
		-I/usr/include/$$($(CC) -dumpmachine) -c $< -o $@
	@if command -v llvm-strip >/dev/null 2>&1; then llvm-strip -g $@; fi

run: $(LIB)
	@exec "$(DENO)" run -q -A --v8-flags=$(PROCMONITOR_V8_FLAGS) main.ts $(ARGS)

test: $(LIB)
	@DENO="$(DENO)" bash scripts/test.sh $(TESTS)

check: $(LIB)
	"$(DENO)" fmt --check
	"$(DENO)" lint
	"$(DENO)" check -q main.ts lib/ tests/ scripts/
	$(CC) $(PC_CFLAGS) $(CFLAGS) $(LIB_BPF) -fsyntax-only $(LIB_SRC)
	$(CC) -std=c11 -Wall -Wextra -Werror -fsyntax-only scripts/storm.c scripts/sink.c

bench: $(LIB)
	"$(DENO)" run -q -A scripts/bench.ts $(ARGS_BENCH)

soak: $(LIB)
	"$(DENO)" run -q -A scripts/soak.ts $(ARGS_SOAK)

compile: $(LIB)
	@DENO="$(DENO)" bash scripts/compile.sh

# The man page is generated from lib/cli/config.ts's help text and committed (the deb ships it).
.PHONY: man
man:
	@mkdir -p doc
	@"$(DENO)" run -q --allow-read --allow-env --allow-write=doc scripts/man.ts doc/procMonitor.8

clean:
	rm -f native/*.so native/*.o
	rm -rf dist bench/out

# ---- fuzzing and sanitizers (README, "Fuzzing and sanitizers"; clang from Debian) ------
#   make fuzz [FUZZ_SECONDS=60]  build the libFuzzer targets and run each FUZZ_SECONDS
#   make fuzz-build              only build them, into native/fuzz/out/
#   make asan                    the live tests against an ASan+UBSan libprocconn
CLANG ?= clang
FUZZ_SECONDS ?= 60
FUZZERS = datagram stat taskstats belong bpf
FUZZ_OUT = native/fuzz/out
SAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_LIB = $(FUZZ_OUT)/libprocconn-asan.so
ASAN_TESTS ?= $(wildcard tests/live_*_test.ts)

.PHONY: fuzz fuzz-build asan fuzz-clean

# make clean also drops the fuzzers, what they learned, and the ASan build of Deno.
clean: fuzz-clean
fuzz-clean:
	rm -rf $(FUZZ_OUT)

fuzz-build: $(FUZZERS:%=$(FUZZ_OUT)/fuzz_%)

# The test hooks (-DPC_FUZZING, native/procconn_internal.h) exist only in these builds.
$(FUZZ_OUT)/fuzz_%: native/fuzz/fuzz_%.c $(LIB_SRC) $(LIB_HDR) \
		native/procconn_internal.h native/fuzz/fuzz_check.h native/fuzz/fuzz_source.h
	@mkdir -p $(FUZZ_OUT)
	$(CLANG) $(PC_CFLAGS) -O1 -g -DPC_FUZZING -DPC_NO_BPF -fsanitize=fuzzer $(SAN_FLAGS) \
		-o $@ $< $(LIB_SRC)

fuzz: fuzz-build
	@bash native/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZERS)

$(ASAN_LIB): $(LIB_SRC) $(LIB_HDR) $(LIB_DEPS)
	@mkdir -p $(FUZZ_OUT)
	$(CLANG) $(PC_CFLAGS) -O1 -g $(LIB_BPF) $(SAN_FLAGS) -shared-libsan -shared -o $@ $(LIB_SRC)

asan: $(ASAN_LIB)
	@DENO="$(DENO)" CLANG="$(CLANG)" bash native/fuzz/asan_live.sh $(ASAN_LIB) $(ASAN_TESTS)

# ---- packaging (README, "Install"; scripts/package.sh, packaging/) ----------------------
#   make deb                       dist/procmonitor_<version>_<arch>.deb (dpkg-deb, no network)
#   make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc]
#   make uninstall                 removes what install put; edited /etc files stay
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=

.PHONY: deb install uninstall

deb: $(LIB) man
	@DENO="$(DENO)" bash scripts/package.sh deb

install: $(LIB) man
	@DENO="$(DENO)" bash scripts/package.sh install "$(DESTDIR)" "$(PREFIX)" "$(SYSCONFDIR)"

uninstall:
	@bash scripts/package.sh uninstall "$(DESTDIR)" "$(PREFIX)" "$(SYSCONFDIR)"
