# The README's two commands are `make demo` and `make test`; keep them working word for word.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-deps test-fast lint leaderboard bench gpu-check mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,dali]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/eca submit jobs/demo_cpu.yaml
	@echo; echo "== the recorded run (eca runs) and the paper's public claims (eca claims --public)"
	$(BIN)/eca runs --limit 3
	$(BIN)/eca claims --public
	@echo; echo "next: make leaderboard, then open http://127.0.0.1:8501"

# The whole suite. The service tests' Debian packages (PostgreSQL, SLURM, Chromium) are installed first when missing
# and we are root; otherwise one line names them and those tests skip (under CI=true a skip fails: tests/conftest.py).
test: lint system-deps
	$(BIN)/python -m pytest tests -q --durations=20

system-deps:
	@bash scripts/install_system_deps.sh --if-root

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow and not slurm and not postgres and not browser and not gpu"

# ruff, then the layer contracts in pyproject.toml [tool.importlinter] (no import circle; models without Lightning;
# the leaderboard, store, claims and verification without torch).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

leaderboard: $(STAMP)
	$(BIN)/eca leaderboard

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The GPU acceptance check (one H100, < 8 min, one markdown table). No install step: a GPU node brings its own torch
# (PYTHON=... picks the interpreter); without a GPU it prints one line and exits 0.
gpu-check:
	bash benchmarks/gpu_check.sh

# Mutation testing (mutmut 3, [tool.mutmut] in pyproject.toml) of the modules whose mistakes would fake or lose a
# result: verification rule, exact sampler, recorder, ECA kernels, checkpoint loading, read-only store access. Prints
# killed/survived per module and fails below 90% killed. mutmut works in mutants/, a git-ignored copy: the sources
# are never modified. About 25 minutes on 2 cores (benchmarks/README.md, "Mutation testing").
mutation: $(STAMP)
	$(BIN)/python scripts/mutation_run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
