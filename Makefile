# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.11:
#   make run    creates .venv, installs voipgw, starts it on deploy/demo/voipgw.toml
#   make test   same set-up plus the SIP test peers, then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native
# The SIP core and B2BUA are compiled in place with mypyc (setup.py says why); a
# source edited since the last build triggers a rebuild before run, test and bench.
NATIVE_SOURCES := $(wildcard gateway/sip/*.py gateway/b2bua/*.py)

.PHONY: run demo test bench fuzz tools lint check-config clean native

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# interpreted here: the $(NATIVE) rule compiles the core once, and again on edits
	VOIPGW_PURE_PYTHON=1 $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Rebuilds the compiled core in place (VOIPGW_PURE_PYTHON=1: removes it, runs interpreted).
$(NATIVE): $(STAMP) setup.py $(NATIVE_SOURCES)
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $@

native: $(NATIVE)

run: $(NATIVE)
	$(BIN)/voipgw run --config deploy/demo/voipgw.toml

# The gateway with a PBX stand-in and answering emergency centres (README "First calls").
demo: $(NATIVE)
	$(BIN)/voipgw demo --config deploy/demo/voipgw.toml

check-config: $(STAMP)
	$(BIN)/voipgw check-config --config deploy/demo/voipgw.toml

# System tools the tests drive (sipp, sipsak, baresip, prometheus, ...); installs what is
# missing with apt-get when run as root, otherwise names what is missing.
tools:
	deploy/install-test-tools.sh

# The whole suite runs inside a loopback-only network namespace when the machine allows
# it: the torture messages name hosts in 192.0.2.0/24, which is this machine's own LAN.
test: tools $(NATIVE)
	deploy/loopback-only.sh $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: tools $(NATIVE)
	deploy/loopback-only.sh $(BIN)/python -m tests.bench

fuzz: $(NATIVE)
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	find gateway -name '*.so' -delete
