# litseg developer commands. The README's two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck test-gpu bench models clean

# A venv with everything (runtime, training, dev tools, Ray for litseg-batch); torch pinned through
# constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,dev,batch]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: a synthetic phantom DICOM series through litseg-run with the
# bundled liver-tumor model.
DEMO := build/demo
demo: $(STAMP)
	$(BIN)/litseg-phantom --out $(DEMO)/lits --cases 1 --seed 4242 --contrast portal-venous --tumors 4 --dicom
	$(BIN)/litseg-run $(DEMO)/lits/dicom/case-0 --out $(DEMO)/result --overwrite \
		--formats seg,nifti,json,overlay,mask-dicom

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

# Benchmarks with timing on (the test run executes each benchmark once, untimed).
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-json=build/benchmarks.json
	$(BIN)/python -m benchmarks.report build/benchmarks.json

# The recipe of the bundled default models (CPU, 2 cores; times in train/recipe.sh): phantoms -> HDF5 ->
# train -> export -> evaluate on held-out phantoms. Override e.g. CASES=10 EPOCHS_1=1 for a dry run.
models: $(STAMP)
	bash train/recipe.sh

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
