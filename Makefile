# Two entry points for a fresh machine: `make demo` and `make test` (`make lint`: ruff). Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# glibc keeps large tensor buffers instead of returning them to the OS each batch: much faster CPU inference.
export MALLOC_MMAP_THRESHOLD_ ?= 4000000000
export MALLOC_TRIM_THRESHOLD_ ?= 4000000000

.PHONY: venv demo test lint clean-venv

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[effnet,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spectro demo --out checkpoints/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
