# Two entry points: `make demo` (set up + whole pipeline on digits) and `make test` (set up + test suite).
# The environment is a venv in .venv built with the machine's Python 3.11 (or 3.10).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spikefold-installed
KERNELS := $(VENV)/.spikefold-kernels
INTEROP := $(VENV)/.spikefold-interop
NIRTOOLS := $(VENV)/.spikefold-nir-tools
PIP    := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: demo test test-all env clean

env: $(STAMP)

# torch is pinned first so that nothing pulls another build (this machine's pip finds the CPU wheel on disk;
# elsewhere install it first from https://download.pytorch.org/whl/cpu, see the README); lava-nc declares
# Python <3.11, so it is installed without its metadata checks (its dependencies are in pyproject.toml,
# pinned to versions that ship wheels for 3.11) and spikefold patches its one 3.11 incompatibility at import.
# SpikingJelly, snnTorch and loguru (benchmarks/gpu_wheels.txt, the "bench" extra) without their dependencies
# too: the GPU check's dry run runs them on the CPU.
$(STAMP): pyproject.toml Makefile benchmarks/gpu_wheels.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,sanafe]"
	$(PIP) --no-deps --ignore-requires-python lava-nc==0.10.0
	$(PIP) --no-deps tonic==1.7.0 aedat==2.3.0 tqdm importRosbag==1.0.4 requests urllib3 idna certifi dv-processing==2.0.4
	$(PIP) --no-deps -r benchmarks/gpu_wheels.txt
	$(PIP) --no-deps neurobench==2.3.0 snntorch==1.0.0
	touch $@

# Triton, for the fused neuron kernels (pyproject's "gpu" extra). Without a GPU the tests run the kernels on
# Triton's CPU interpreter. The wheel is about 285 MB (1 GB installed); it installed in about 10 s here.
$(KERNELS): $(STAMP)
	$(PIP) -e ".[gpu]"
	touch $@

# onnx and onnxruntime (the "onnx" extra), and lava-dl for the netx tests: it declares Python <3.11 and pins
# torch <2.4, so it is installed without its metadata checks or dependencies (netx uses none spikefold lacks;
# the CPU torch stays).
$(INTEROP): $(STAMP)
	$(PIP) -e ".[onnx]"
	$(PIP) --no-deps --ignore-requires-python lava-dl==0.6.0
	touch $@

# The NIR tools the interop tests run (pyproject's "nir-tools" extra), without their declared dependencies: those
# would pull another torch, and sinabs pins nir <= 1.0.4; what they need at import is in the list.
$(NIRTOOLS): $(STAMP)
	$(PIP) --no-deps snntorch==1.0.0 spikingjelly==2.0.0 "loguru>=0.7" norse==1.1.0 rockpool==3.1.0 \
		sinabs==3.1.3 "pbr>=6" nirtorch==2.6
	touch $@

# One CPU thread: the same figures on every run (reductions in a fixed order), and the fastest on a shared
# machine. --force: a rerun replaces the last demo's run folder.
demo: $(STAMP)
	$(BIN)/spikefold pipeline --out runs/demo --threads 1 --force

# Fast suite (about 5 minutes of tests on 2 idle cores; far longer when other jobs share them): everything except tests
# marked slow.
test: $(STAMP) $(KERNELS) $(INTEROP) $(NIRTOOLS)
	$(BIN)/python -m pytest -q -m "not slow"

# Everything, slow end-to-end runs included.
test-all: $(STAMP) $(KERNELS) $(INTEROP) $(NIRTOOLS)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
