# miniseq: `make demo` builds the program (only) and runs the main job; `make test` builds everything and runs every test.
BUILD ?= build
JOBS ?= $(shell nproc)
MINISEQ_CUDA ?= auto
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release -DMINISEQ_CUDA=$(MINISEQ_CUDA)

.PHONY: all deps configure build test demo clean format

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) > $(BUILD).configure.log 2>&1 || (cat $(BUILD).configure.log; exit 1)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The parsers of outside input are also fuzzed for FUZZ_SECONDS each (scripts/fuzz-smoke.sh; clang, ASan + UBSan).
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 10

test: build
	@bash scripts/fuzz-smoke.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L cpu

# `make demo` builds only the program it runs, in its own folder, with the CUDA backend only where a GPU answers
# (MINISEQ_CUDA=ON make demo forces it); `make test` keeps the full build. The build's output goes to a log.
DEMO_BUILD ?= build-demo
DEMO_CUDA ?= $(if $(filter ON,$(MINISEQ_CUDA)),ON,$(shell nvidia-smi -L > /dev/null 2>&1 && echo ON || echo OFF))

demo: deps
	@echo "make demo: building miniseq (CUDA backend $(DEMO_CUDA)); log: $(DEMO_BUILD).log"
	@{ cmake -S . -B $(DEMO_BUILD) -DCMAKE_BUILD_TYPE=Release -DMINISEQ_CUDA=$(DEMO_CUDA) && \
	   cmake --build $(DEMO_BUILD) -j $(JOBS) --target miniseq; } > $(DEMO_BUILD).log 2>&1 || \
	   { tail -30 $(DEMO_BUILD).log; exit 1; }
	@bash scripts/demo.sh $(DEMO_BUILD)

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD) $(DEMO_BUILD) $(FUZZ_BUILD)
