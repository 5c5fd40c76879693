# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.11:
#   make run    creates .venv, installs voipgw, starts it on deploy/demo/voipgw.toml
#   make test   same set-up plus the SIP test peers, then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench fuzz tools lint check-config clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/voipgw run --config deploy/demo/voipgw.toml

check-config: $(STAMP)
	$(BIN)/voipgw check-config --config deploy/demo/voipgw.toml

# System tools the tests drive (sipp, sipsak, baresip, prometheus, ...); installs what is
# missing with apt-get when run as root, otherwise names what is missing.
tools:
	deploy/install-test-tools.sh

# The whole suite runs inside a loopback-only network namespace when the machine allows
# it: the torture messages name hosts in 192.0.2.0/24, which is this machine's own LAN.
test: $(STAMP) tools
	deploy/loopback-only.sh $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) tools
	deploy/loopback-only.sh $(BIN)/python -m tests.bench

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
