# scorewire — every target bootstraps .venv itself, so on a fresh machine
# `make serve` and `make test` are all it takes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PIP    := $(BIN)/pip
ARGS   ?=

RUN_STAMP  := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test
BUILD_DEPS := pyproject.toml setup.py ext/_kernel.pyx ext/_wire.pyx

# tests/test_generated.py imports the stubs on protobuf 7 too (the test environment
# runs protobuf 6: tritonclient pins < 7); installed here, beside the venv, not by a test
PB7_DIR   := $(VENV)/protobuf7
PB7_STAMP := $(PB7_DIR)/.stamp

# tests/test_make_serve.py runs `make serve` in a fresh clone with pip told to
# install from here only: the wheels that needs, fetched once (no network in a test)
WHEELHOUSE  := $(VENV)/wheelhouse
WHEEL_STAMP := $(WHEELHOUSE)/.stamp

# the TypeScript client test (tests/test_typescript_client.py): node + npm
TS_DIR   := tests/clients/ts
TS_STAMP := $(TS_DIR)/node_modules/.stamp-ci
TS_BUILT := $(TS_DIR)/dist/client.js
TS_SRCS  := $(TS_DIR)/client.ts $(TS_DIR)/named.ts $(TS_DIR)/tsconfig.json $(TS_DIR)/proto/grpc/health/v1/health.proto proto/scorewire/v1/scorewire.proto

# tests/deploy/: the KServe SDK (its models load the manifests in deploy/kserve) pins
# protobuf and more than the test environment can take: a venv of its own
KSERVE_DIR   := $(VENV)/kserve
KSERVE_STAMP := $(KSERVE_DIR)/.stamp

# tests/deploy/test_image.py builds deploy/container/Containerfile with podman on a
# base made from Debian's packages (no image registry is reached): debootstrap's
# minimal bookworm with Python, from the mirror apt uses on this machine, kept as a
# tarball; the test imports it into podman storage of its own, under IMAGE_DIR
IMAGE_DIR  := $(VENV)/image
IMAGE_BASE := $(IMAGE_DIR)/bookworm-python3.tar

# `make image`: the container image, from this checkout's wheels (IMAGE_FROM must
# run the Python these wheels are built for: this venv's)
VERSION       := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE         ?= scorewire:$(VERSION)
IMAGE_FROM    ?= python:3.11-slim-bookworm
IMAGE_CONTEXT ?= $(IMAGE_DIR)/context
PODMAN        ?= podman
PODMAN_BUILD_FLAGS ?=
WHEEL_FLAGS   ?=

.PHONY: serve test bench lint proto demo build clean help ts-client prometheus container-tools kserve-sdk image-base image fuzz perf-analyzer perf-analyzer-libs

help:
	@echo "make serve   start the server on the bundled demo model repository"
	@echo "make test    run the test suite"
	@echo "make bench   kernel benchmark (prints a table)"
	@echo "make lint    ruff + mypy"
	@echo "make proto   regenerate the gRPC stubs from proto/"
	@echo "make demo    regenerate the demo model repository"
	@echo "make image   build the container image (deploy/container/Containerfile) with podman"
	@echo "make fuzz    fuzz every parser of outside bytes, FUZZ_SECONDS each (default 60)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUN_STAMP): $(PY) $(BUILD_DEPS)
	$(PIP) install --quiet -e .
	touch $@

$(TEST_STAMP): $(PY) $(BUILD_DEPS)
	$(PIP) install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

# Rebuild the kernel in place after editing ext/ (pip install -e does it too).
build: $(TEST_STAMP)
	$(PIP) install --quiet cython setuptools wheel
	$(PY) setup.py -q build_ext --inplace

serve: $(RUN_STAMP)
	$(BIN)/scorewire serve $(ARGS)

# Install the TypeScript client from its lockfile, generate its types, compile it.
$(TS_STAMP): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund
	touch $@

$(TS_BUILT): $(TS_STAMP) $(TS_SRCS)
	cd $(TS_DIR) && npm run --silent build

ts-client: $(TS_BUILT)

# The Go client test (tests/test_go_client.py): Debian's Go toolchain, grpc-go and
# protobuf for Go, protoc and its Go plugins (apt-get needs root, as on CI; ~600 MB),
# then the client generated from proto/ and built offline in GOPATH mode by
# tests/clients/go/build.sh (Debian lacks modules grpc-go's go.mod names, so module
# mode cannot build it), into tests/clients/go/build/.
GO_DIR   := tests/clients/go
GO_BUILT := $(GO_DIR)/build/scorewire-go-client
GO_DEBS  := golang-go golang-google-grpc-dev golang-goprotobuf-dev protoc-gen-go-grpc protobuf-compiler
.PHONY: go-tools go-client

go-tools:
	@{ command -v go && command -v protoc && command -v protoc-gen-go && command -v protoc-gen-go-grpc \
		&& test -d /usr/share/gocode/src/google.golang.org/grpc/health/grpc_health_v1; } >/dev/null 2>&1 || { \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(GO_DEBS); }

$(GO_BUILT): $(GO_DIR)/main.go $(GO_DIR)/build.sh proto/scorewire/v1/scorewire.proto | go-tools
	$(GO_DIR)/build.sh

go-client: $(GO_BUILT)

# part of `make test`'s setup (its own rule, so the list below stays as it is)
test: go-client

$(WHEEL_STAMP): $(PY) pyproject.toml setup.py
	$(PIP) download --quiet --dest $(WHEELHOUSE) pip setuptools wheel 'Cython>=3.0.10' 'numpy>=2.0' .
	touch $@

$(PB7_STAMP): $(PY)
	$(PIP) install --quiet --no-deps --target $(PB7_DIR) 'protobuf>=7,<8'
	touch $@

# The Prometheus tests (tests/observability/test_prometheus.py) run Debian's
# prometheus and promtool; install them once (apt-get needs root, as on CI).
prometheus:
	@prometheus --version >/dev/null 2>&1 || { \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }

# tests/deploy/: podman and debootstrap from Debian (apt-get needs root, as on CI)
container-tools:
	@{ command -v podman && command -v debootstrap; } >/dev/null 2>&1 || { \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends podman debootstrap; }

# Triton's perf_analyzer (tests/test_perf_analyzer.py, bench/README.md): the binary the
# tritonclient 2.50.0 wheel carries (the perf-analyzer wheels need a newer glibc),
# taken out of the wheel; it links Debian's libb64 and the CUDA runtime library,
# which PyPI's nvidia-cuda-runtime-cu12 ships (no GPU is used). Run it with
# LD_LIBRARY_PATH=$(PA_DIR)/cuda/nvidia/cuda_runtime/lib.
PA_DIR   := $(VENV)/perf_analyzer
PA_BIN   := $(PA_DIR)/bin/perf_analyzer
PA_STAMP := $(PA_DIR)/.stamp

$(PA_STAMP): $(PY) | perf-analyzer-libs
	rm -rf $(PA_DIR) && mkdir -p $(PA_DIR)/bin
	$(PIP) download --quiet --no-deps --only-binary=:all: --dest $(PA_DIR)/wheel 'tritonclient==2.50.0'
	$(PY) -c 'import sys, zipfile; [w] = sys.argv[1:]; \
		open("$(PA_BIN)", "wb").write(zipfile.ZipFile(w).read("tritonclient-2.50.0.data/data/bin/perf_analyzer"))' \
		$(PA_DIR)/wheel/tritonclient-2.50.0-*.whl
	chmod +x $(PA_BIN) && rm -rf $(PA_DIR)/wheel
	$(PIP) install --quiet --no-deps --target $(PA_DIR)/cuda 'nvidia-cuda-runtime-cu12>=12.0,<13'
	touch $@

# libb64 from Debian (apt-get needs root, as on CI)
perf-analyzer-libs:
	@dpkg -s libb64-0d >/dev/null 2>&1 || { \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends libb64-0d; }

perf-analyzer: perf-analyzer-libs $(PA_STAMP)

$(KSERVE_STAMP):
	$(PYTHON) -m venv $(KSERVE_DIR)
	$(KSERVE_DIR)/bin/pip install --quiet 'kserve==0.21.0'
	touch $@

kserve-sdk: $(KSERVE_STAMP)

# libgomp1: the kernel's OpenMP runtime, which the Containerfile installs only when
# its base lacks it (a build in the test has no network). Made once: remove
# $(IMAGE_DIR) to make it anew.
$(IMAGE_BASE): | container-tools
	rm -rf $(IMAGE_DIR)/rootfs && mkdir -p $(IMAGE_DIR)
	debootstrap --variant=minbase --include=python3,python3-venv,libgomp1 bookworm \
		$(IMAGE_DIR)/rootfs "$$($(PYTHON) deploy/container/apt_mirror.py bookworm)"
	rm -rf $(IMAGE_DIR)/rootfs/var/cache/apt/archives/*.deb $(IMAGE_DIR)/rootfs/var/lib/apt/lists/*
	tar -C $(IMAGE_DIR)/rootfs -cf $@.part . && mv $@.part $@
	rm -rf $(IMAGE_DIR)/rootfs

image-base: $(IMAGE_BASE)

image: $(RUN_STAMP)
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)
	$(PIP) wheel --quiet $(WHEEL_FLAGS) --wheel-dir $(IMAGE_CONTEXT)/wheels .
	$(PODMAN) build $(PODMAN_BUILD_FLAGS) --build-arg BASE=$(IMAGE_FROM) --tag $(IMAGE) \
		--file deploy/container/Containerfile $(IMAGE_CONTEXT)

test: $(TEST_STAMP) $(PB7_STAMP) $(WHEEL_STAMP) $(KSERVE_STAMP) $(IMAGE_BASE) container-tools ts-client prometheus perf-analyzer
	$(PY) -m pytest $(ARGS)

bench: $(TEST_STAMP)
	$(PY) bench/bench_kernel.py $(ARGS)

# What asking for explanations costs in bulk, in-process (bench/README.md, "Explanations").
.PHONY: bench-explain
bench-explain: $(TEST_STAMP)
	$(PY) bench/bench_explain.py $(ARGS)

# Service benchmark (bench/README.md): scorewire against a do-nothing gRPC server,
# driven by a C++ load generator built against Debian's gRPC (installed if missing).
.PHONY: bench-service
bench-service: $(TEST_STAMP)
	$(MAKE) -C bench/loadgen
	$(PY) bench/bench_service.py $(ARGS)

# Coverage-guided fuzzing (tests/fuzz/, atheris): every target for FUZZ_SECONDS,
# one after the other, each from its seed corpus in the repository; what they find
# goes to .fuzz/ (new inputs) and .fuzz/artifacts/ (failures, with the input).
# `make fuzz FUZZ_TARGETS=onnx FUZZ_SECONDS=600 ARGS=-jobs=2` for one, longer.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(patsubst tests/fuzz/fuzz_%.py,%,$(wildcard tests/fuzz/fuzz_*.py))
fuzz: $(TEST_STAMP)
	@failed=""; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
		$(PY) tests/fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=3072 \
			-print_final_stats=1 $(ARGS) || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failures in:$$failed (inputs in .fuzz/artifacts/)"; exit 1; fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

proto: $(TEST_STAMP)
	$(PY) proto/generate.py

demo: $(TEST_STAMP)
	$(PY) examples/make_demo_repo.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/scorewire/backends/_kernel*.so src/scorewire/grpc/_wire*.so ext/*.c
