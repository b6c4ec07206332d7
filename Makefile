# Every target installs what it needs first (idempotent), so each works on a fresh machine.
PYTHON ?= python3
PIP = $(PYTHON) -m pip --disable-pip-version-check
# One stamp per interpreter (its prefix), so switching PYTHON (e.g. to a venv) installs again.
STAMP = .make/installed-$(shell $(PYTHON) -c 'import sys, hashlib; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:10])')
DEMO_OUT ?= demo_out
# The CPU build of torch, named explicitly (its local version "+cpu"), so pip can never pick a
# CUDA build and download several GB. Where pip's index has no +cpu wheel, point it at PyTorch's
# CPU wheel index: make install TORCH_INDEX=<that index URL>. Another build: make TORCH=torch==X.
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?=

.PHONY: install demo test test-slow bench lint

$(STAMP): pyproject.toml
	# The CPU wheel of torch first: an unpinned torch would pull several GB of CUDA packages.
	@$(PIP) install -q "$(TORCH)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) || { \
	  echo "make: could not install $(TORCH): give pip PyTorch's CPU wheel index with" \
	       "make install TORCH_INDEX=URL (see the Makefile)" >&2; exit 1; }
	$(PIP) install -q -e ".[all,dev]"
	# compile the splat CPU rasterizer's kernel now (g++ with OpenMP), not in the first test
	$(PYTHON) -c "from flow3d.splat.backend_cpu import build_library; build_library()" || \
	  echo "make: the splat CPU kernel did not build; splat renders fall back to the slow reference" >&2
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m flow3d.demo --out $(DEMO_OUT)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m slow

bench: $(STAMP)
	$(PIP) install -q "flow_matching" "torchdiffeq>=0.2" --no-deps || true
	$(PYTHON) -m benchmarks.run_all

lint: $(STAMP)
	$(PYTHON) -m ruff check .
