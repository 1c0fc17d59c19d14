# litseg developer commands. The README's two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck test-gpu test-wheel bench models clean

# PyTorch (training only). On PyPI, constraints.txt's torch pin is the CUDA build on Linux x86_64 (with several
# GB of nvidia-* wheels). On a machine without an NVIDIA GPU, `make demo TORCH_INDEX=cpu` (on a fresh .venv)
# adds PyTorch's CPU wheel index, where the same pin resolves to the CPU build (2.13.0+cpu); any other value is
# taken as an index URL. Without it pip uses its own configuration (here: the CPU wheel found on disk).
TORCH_INDEX ?=
TORCH_INDEX_URL := $(if $(filter cpu,$(TORCH_INDEX)),https://download.pytorch.org/whl/cpu,$(TORCH_INDEX))
PIP_ENV := $(if $(TORCH_INDEX_URL),PIP_EXTRA_INDEX_URL="$(strip $(PIP_EXTRA_INDEX_URL) $(TORCH_INDEX_URL))")

# A venv with everything (runtime, training, dev tools, Ray for litseg-batch); torch pinned through
# constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP_ENV) $(BIN)/pip install --quiet -c constraints.txt -e '.[train,dev,batch]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: a synthetic phantom DICOM series through litseg-run with the
# bundled liver-tumor model.
DEMO := build/demo
demo: $(STAMP)
	$(BIN)/litseg-phantom --out $(DEMO)/lits --cases 1 --seed 4242 --contrast portal-venous --tumors 4 --dicom
	$(BIN)/litseg-run $(DEMO)/lits/dicom/case-0 --out $(DEMO)/result --overwrite \
		--formats seg,nifti,json,overlay,mask-dicom
	@echo
	@echo "The litseg commands live in $(VENV)/bin. To call them by name: . $(VENV)/bin/activate"
	@echo "(the venv then also puts pynetdicom's storescp/storescu/echoscu first on PATH: call dcmtk's as /usr/bin/storescp)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy (strict on litseg.runtime) cannot follow setuptools' editable-install import hook, so it reads the
# packages through a link tree that gives them their import names (litseg.runtime -> runtime/, ...).
typecheck: $(STAMP)
	mkdir -p build/typecheck/litseg
	ln -sfn ../../../runtime build/typecheck/litseg/runtime
	ln -sfn ../../../train build/typecheck/litseg/train
	ln -sfn ../../../export build/typecheck/litseg/export
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p litseg.runtime -p litseg.train -p litseg.export

test: lint typecheck
	$(BIN)/python -m pytest -m "not gpu"

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu

# The runtime as users install it (part of `make test` too): sdist and wheel built, the wheel installed into a
# fresh venv without the train and dev extras, litseg-run on a synthetic series with the bundled model.
test-wheel: $(STAMP)
	$(BIN)/python -m pytest -m wheel

# Benchmarks with timing on (the test run executes each benchmark once, untimed).
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-json=build/benchmarks.json
	$(BIN)/python -m benchmarks.report build/benchmarks.json

# The recipe of the bundled default models (train/recipe.sh): phantoms + real slices -> HDF5 -> train ->
# export -> evaluate on held-out phantoms and the real report sets. Override e.g. CASES=4 EPOCHS=1 PATCHES=32
# for a dry run; rerun to go on after an interruption.
models: $(STAMP)
	bash train/recipe.sh

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
