# Two commands on a fresh machine:  `make run` (the demo pipeline) and `make test`.
#
# The Python environment (torch 2.11.0 = LibTorch for the worker, plus pyarrow, pandas,
# DuckDB, pydicom for the tests) is 4.6 GB, so it lives outside the clone and is
# reused by every clone; `.venv` is a link to it. The cargo target directory is shared
# the same way so CI in a fresh clone reuses the build.

VENV ?= $(HOME)/.cache/pipe/venv-torch-2.11.0
CARGO_TARGET_DIR ?= $(HOME)/.cache/pipe/target
PYTHON ?= python3
TORCH_LIB = $(VENV)/lib/python3.11/site-packages/torch/lib

export CARGO_TARGET_DIR
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export LD_LIBRARY_PATH := $(TORCH_LIB):$(LD_LIBRARY_PATH)

RELEASE := $(CARGO_TARGET_DIR)/release
DEMO ?= pipelines/demo.yaml

.PHONY: all venv system-deps test-deps build install run run-chexpert run-vindr run-deidentified test bench lint clean-cache slurm-up slurm-down test-slurm bench-slurm

all: build

# The venv is ready when its stamp is newer than requirements.txt.
$(VENV)/.pipe-ready: requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

.venv: $(VENV)/.pipe-ready
	ln -sfn $(VENV) .venv

# Debian packages the build needs beyond Rust and a C++ compiler: cmake, with which
# cargo builds CharLS (the JPEG-LS decoder). The tests also render evaluate's
# report.html in headless Chromium.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v cmake > /dev/null 2>&1 || { echo "installing cmake (needed to build CharLS, the JPEG-LS decoder)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake; }

test-deps: system-deps
	@command -v chromium > /dev/null 2>&1 || { echo "installing chromium (the tests render report.html in it)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

venv: .venv system-deps

build: venv
	cargo build --release --workspace --bins

# `pipe` and `pipe-torch` on PATH: cargo's bin folder (~/.cargo/bin, on PATH wherever
# Rust is installed with rustup), or PREFIX/bin. pipe-torch keeps an rpath to the
# venv's LibTorch (a link argument, so it survives the copy), so neither needs
# LD_LIBRARY_PATH. The binaries are `make build`'s: `cargo install` resolves features
# per package and would compile polars in release a second time (18 min on 2 cores).
PREFIX ?=
install: build
	@bin=$(if $(PREFIX),$(PREFIX),$${CARGO_INSTALL_ROOT:-$${CARGO_HOME:-$$HOME/.cargo}})/bin; \
	mkdir -p "$$bin" && install -m 755 $(RELEASE)/pipe $(RELEASE)/pipe-torch "$$bin/" && \
	echo "installed pipe and pipe-torch in $$bin"; \
	case ":$$PATH:" in *":$$bin:"*) ;; *) echo "add it to PATH: export PATH=$$bin:\$$PATH";; esac

# The demo runs on a synthetic hospital; written once (deterministic), then reused.
SYNTH ?= data/synth
SYNTH_STUDIES ?= 2000

$(SYNTH)/truth/dicoms.parquet:
	$(RELEASE)/pipe synth --out $(SYNTH) --studies $(SYNTH_STUDIES) --seed 7 --size 256

run: build
	@echo "pipe: $(RELEASE)/pipe, worker: $(RELEASE)/pipe-torch (\`make install\` puts both on PATH)"
	$(MAKE) --no-print-directory $(SYNTH)/truth/dicoms.parquet
	$(RELEASE)/pipe run $(DEMO)

# The public-dataset pipelines on synthetic CheXpert-like and VinDr-like datasets.
data/chexpert/truth/chexpert.parquet:
	$(RELEASE)/pipe synth chexpert --out data/chexpert --studies 1500 --seed 7 --size 64

run-chexpert: build
	$(MAKE) --no-print-directory data/chexpert/truth/chexpert.parquet
	$(RELEASE)/pipe run pipelines/chexpert-coarse-vs-fine.yaml
	$(RELEASE)/pipe metrics pipelines/chexpert-coarse-vs-fine.yaml --label abnormal

data/vindr/truth/vindr.parquet:
	$(RELEASE)/pipe synth vindr --out data/vindr --studies 1500 --seed 7 --size 64

run-vindr: build
	$(MAKE) --no-print-directory data/vindr/truth/vindr.parquet
	$(RELEASE)/pipe run pipelines/vindr.yaml
	$(RELEASE)/pipe run pipelines/vindr-consensus-test.yaml

# The demo through deidentify; the secret is made once, randomly, outside the cache.
data/secret/deidentify.key:
	mkdir -p data/secret && chmod 700 data/secret
	head -c 32 /dev/urandom | base64 > $@ && chmod 600 $@

run-deidentified: build
	$(MAKE) --no-print-directory $(SYNTH)/truth/dicoms.parquet data/secret/deidentify.key
	$(RELEASE)/pipe run pipelines/demo-deidentified.yaml

test: venv test-deps
	cargo build --workspace --bins
	PIPE_REQUIRE_TORCH=1 PIPE_REQUIRE_CHROMIUM=1 cargo test --workspace --exclude pipe-torch -- --test-threads=2
	# One test thread: the optimiser tests compare LibTorch runs bit for bit, and with
	# two test threads in one process they disagree now and then (3 in 10 runs).
	cargo test -p pipe-torch -- --test-threads=1

# A single-node Slurm cluster (Debian's slurm-wlm, munge, slurmdbd on MariaDB) for the
# Slurm tests and for trying `pipe run --executor slurm`: scripts/slurm/README.md.
slurm-up:
	scripts/slurm/up.sh

slurm-down:
	scripts/slurm/down.sh

# What running stages on Slurm costs (needs `make slurm-up`): benches/slurm.py.
bench-slurm: build
	$(VENV)/bin/python benches/slurm.py --pipe $(RELEASE)/pipe $(BENCH_ARGS)

# The Slurm tests alone (make test runs them too), against the cluster of slurm-up.
test-slurm: venv
	cargo build --workspace --bins
	PIPE_REQUIRE_TORCH=1 PIPE_REQUIRE_SLURM=1 cargo test --test slurm

bench: build
	$(VENV)/bin/pip install --disable-pip-version-check -q -r benches/requirements.txt
	$(VENV)/bin/python benches/noop.py --pipe $(RELEASE)/pipe $(BENCH_ARGS)
	$(VENV)/bin/python benches/hospital.py --pipe $(RELEASE)/pipe $(BENCH_ARGS)
	$(VENV)/bin/python benches/dataset.py --pipe $(RELEASE)/pipe
	$(VENV)/bin/python benches/train.py --pipe $(RELEASE)/pipe
	$(VENV)/bin/python benches/codecs.py --pipe $(RELEASE)/pipe

lint:
	cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings

clean-cache:
	rm -rf cache/entries cache/tmp cache/views cache/stat cache/quarantine cache/logs cache/lock
