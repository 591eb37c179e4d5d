# Two commands do all the set-up on a fresh machine: `make demo` (the service, embedded broker) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: a bare `torch` requirement would pull a multi-gigabyte CUDA build.
TORCH ?= torch==2.13.0

$(BIN)/shillguard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/shillguard

# The service on the embedded broker, fed built-in attacked traffic; Ctrl-C stops it.
demo: install
	$(BIN)/shillguard up --demo

# The same pipeline offline over a file: simulate, replay, score against the simulator's truth.
replay-demo: install
	$(BIN)/shillguard simulate --data synthetic --attacks all --out out/demo
	$(BIN)/shillguard replay out/demo/events.jsonl --out out/demo/replay
	$(BIN)/shillguard evaluate out/demo/replay --truth out/demo/truth.json

test: install
	$(BIN)/pytest -q

.PHONY: install demo replay-demo test
