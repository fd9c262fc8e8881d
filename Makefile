# Set-up, main job and tests. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned and installed before everything else: an unpinned torch, asked for by any
# package, would pull a multi-GB CUDA build. 2.14.1 (not 2.13.0) because the torchvision
# wheel on PyPI that the MNIST/CIFAR loaders and BackPACK need only imports beside it.
TORCH := torch==2.14.1 torchvision==0.29.1
OUT ?= results/demo

.PHONY: demo test test-slow bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[vision,test,ray,lightning,tensorboard]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gradconf study --out $(OUT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/gram.py

clean:
	rm -rf $(VENV) results
