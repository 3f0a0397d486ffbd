# The two entry points of the README. Both create the venv and install everything themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= demo_out

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip takes these from the machine's local wheels (no CUDA download).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/ferwild demo --out $(OUT)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/bench_prepare.py

clean:
	rm -rf $(OUT) .pytest_cache
