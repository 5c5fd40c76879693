# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.11:
#   make run    creates .venv, installs voipgw, starts it on deploy/demo/voipgw.toml
#   make test   same set-up plus the SIP test peers, then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native
TOOLS  := $(VENV)/.build-tools
TEST_STAMP := $(VENV)/.installed-test
# The SIP core and B2BUA are compiled in place with mypyc (setup.py says why); a
# source edited since the last build triggers a rebuild before run, test and bench.
NATIVE_SOURCES := $(wildcard gateway/sip/*.py gateway/b2bua/*.py) \
	gateway/ops/sip_traffic.py gateway/service/pump.py gateway/transport/manager.py

.PHONY: run demo cluster test bench fuzz tools lint check-config clean native setup setup-test

# The build tools first (setuptools, mypy's mypyc): the project then installs without
# an isolated build environment, and the core compiles while the dependencies install.
$(TOOLS):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'setuptools>=70.1' 'mypy==2.4.1'
	touch $@

# Editable, and not compiled here: the $(NATIVE) rule compiles the core in place.
$(STAMP): pyproject.toml $(TOOLS)
	VOIPGW_DEFER_NATIVE=1 $(BIN)/pip install --quiet --no-build-isolation -e .
	touch $(STAMP)

# The test, bench and lint tools on top (run and demo don't wait for them).
$(TEST_STAMP): $(STAMP)
	VOIPGW_DEFER_NATIVE=1 $(BIN)/pip install --quiet --no-build-isolation -e '.[test]'
	touch $(TEST_STAMP)

# Rebuilds the compiled core in place (VOIPGW_PURE_PYTHON=1: removes it, runs interpreted).
# It needs only the build tools (the compiled modules import nothing else).
$(NATIVE): $(TOOLS) setup.py $(NATIVE_SOURCES)
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $@

# Installs and compiles as two jobs at once, whatever -j make itself was given: on a
# fresh clone this is most of `make run`'s time to the first answered OPTIONS.
setup:
	$(MAKE) --no-print-directory --jobs=2 $(STAMP) $(NATIVE)

setup-test:
	$(MAKE) --no-print-directory --jobs=2 $(TEST_STAMP) $(NATIVE)

native: $(NATIVE)

run: setup
	$(BIN)/voipgw run --config deploy/demo/voipgw.toml

# The gateway with a PBX stand-in and answering emergency centres (README "First calls").
demo: setup
	$(BIN)/voipgw demo --config deploy/demo/voipgw.toml

# Kamailio's dispatcher (127.0.0.2:5060) in front of two instances sharing one embedded
# PostgreSQL (deploy/cluster/, deploy/OPERATIONS.md "Several instances"); foreground,
# Ctrl-C stops everything. Needs kamailio (make tools).
cluster: setup
	$(BIN)/python deploy/cluster/run.py

check-config: $(STAMP)
	$(BIN)/voipgw check-config --config deploy/demo/voipgw.toml

# System tools the tests drive (sipp, sipsak, baresip, prometheus, ...); installs what is
# missing with apt-get when run as root, otherwise names what is missing.
tools:
	deploy/install-test-tools.sh

# The whole suite runs inside a loopback-only network namespace when the machine allows
# it: the torture messages name hosts in 192.0.2.0/24, which is this machine's own LAN.
test: tools setup-test
	deploy/loopback-only.sh $(BIN)/pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: tools setup-test
	deploy/loopback-only.sh $(BIN)/python -m tests.bench

fuzz: setup-test
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	find gateway -name '*.so' -delete
	rm -f voipgw_core__mypyc*.so
