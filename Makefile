# miniseq: `make demo` builds everything and runs the main job; `make test` builds and runs every test.
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

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L cpu

demo: build
	bash scripts/demo.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD)
