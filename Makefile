# The two commands a new user needs:
#   make demo   installs everything into .venv and runs the default scenario
#   make test   installs everything into .venv and runs the gate: ruff, mypy, pytest
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
# mkdocs-material prints a banner about mkdocs 2 on every build; it is no warning of ours.
export NO_MKDOCS_2_WARNING := 1
# pip's configured local indexes warn once per package when absent: its stderr goes to a log,
# shown only when an install fails.
PIP    := $(BIN)/python -m pip --quiet --disable-pip-version-check

# Debian packages the datasets read or run: speech synthesis for keyword spotting, Fashion-MNIST.
SYSTEM_PACKAGES := espeak-ng flite sox dataset-fashion-mnist
# ...and the tests': pty pairs, the MCU firmware's cross-compiler and its emulator (the serial
# bridge), a headless browser (report.html). Installed without recommends.
TEST_PACKAGES := socat gcc qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi chromium

.PHONY: demo docs test check lint typecheck pytest examples clean system-packages test-packages apt-install

# Installs only what is missing (as root, or through sudo); quick when all are there.
system-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(SYSTEM_PACKAGES)" APT_FLAGS=""

test-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(TEST_PACKAGES)" \
	  APT_FLAGS="--no-install-recommends"

apt-install:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(APT_FLAGS) $$missing >/dev/null || \
	  { echo "could not install:$$missing; run: sudo apt-get install$$missing"; exit 1; }; \
	fi

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build on the local disk (an unpinned torch pulls CUDA).
	$(PIP) install torch==2.13.0 2>$(VENV)/pip.log || (grep -v "is ignored" $(VENV)/pip.log; exit 1)
	$(PIP) install -e '.[dev,docs,trackers]' 2>$(VENV)/pip.log || (grep -v "is ignored" $(VENV)/pip.log; exit 1)
	$(BIN)/python -c "import torch, flwr, fedsim; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: system-packages $(STAMP)
	$(BIN)/fedsim run scenarios/quickstart.yaml --out results/demo --overwrite
	@echo "the report: $(CURDIR)/results/demo/report.html (open it in a browser)"

test: system-packages test-packages $(STAMP) lint typecheck docs pytest examples

# The documentation site, built offline into site/; --strict fails on any warning (a broken link,
# a page left out of the navigation, a docstring that does not render).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Two test workers (pytest-xdist), a file per worker at a time (--dist loadfile: a module's
# fixtures, e.g. a firmware build or a Ray cluster, are made once). Most of the suite waits on
# subprocesses (Ray, QEMU, SuperLinks): on two idle cores, 1,632 tests took 12.1 minutes on two
# workers where 1,419 took 22.6 in one process. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
pytest: system-packages test-packages $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The out-of-tree plugin example, installed as a user would (a wheel, not the source folder) and
# tested with fedsim's pytest plugin, in both execution modes.
examples: $(STAMP)
	$(PIP) install --no-deps --no-build-isolation --force-reinstall ./examples/custom-algorithm \
	  2>$(VENV)/pip.log || (grep -v "is ignored" $(VENV)/pip.log; exit 1)
	rm -rf examples/custom-algorithm/build examples/custom-algorithm/*.egg-info
	$(BIN)/pytest -p no:cacheprovider examples/custom-algorithm/tests

clean:
	rm -rf $(VENV) results site .mypy_cache .ruff_cache .pytest_cache
