# lesion-course: two commands.
#   make course   create .venv, install, execute every notebook in order into build/notebooks/
#   make test     create the same .venv and run every test (unit tests and the notebooks)
# Settings come from the LESIONLIB_* variables (see lesionlib/settings.py), e.g.
#   LESIONLIB_DATA_SOURCE=../shared/data/ham10000 make course
#   (notebook 06 also reads LESIONLIB_EXTERNAL_SOURCE, a second collection to test on)

# Python: PYTHON=/path/to/python, or else the newest supported version that runs here (a
# pyenv shim on PATH for a version pyenv has not selected does not run, and is passed over).
SUPPORTED := 3.13 3.12 3.11
ifndef PYTHON
PYTHON := $(or $(firstword $(foreach v,$(SUPPORTED),$(shell python$(v) -c 'import sys; print(sys.executable)' 2>/dev/null))),python3)
endif
# uv installs the same pins as pip, faster (README); pip when uv is not there, or with UV=.
UV ?= $(shell command -v uv)
VENV := .venv
BIN := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb))
HOME_DIR := $(abspath $(or $(LESIONLIB_HOME),.))
BUILD := $(HOME_DIR)/build
SHARED := $(abspath ../shared)
TEST_HOME := $(abspath build/test-runs)

.PHONY: course test pins clean

$(VENV)/.installed: pyproject.toml requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if "%d.%d" % sys.version_info[:2] in "$(SUPPORTED)".split() else "lesion-course runs on Python $(SUPPORTED); found " + sys.version.split()[0] + " at " + sys.executable + ". Install one (python.org, or your package manager) and run: make PYTHON=/path/to/python3.13 $(MAKECMDGOALS)")' \
	  || { command -v $(PYTHON) >/dev/null || echo "lesion-course runs on Python $(SUPPORTED) and found none. Install one (python.org, or your package manager) and run: make PYTHON=/path/to/python3.13 $(MAKECMDGOALS)"; exit 1; }
ifneq ($(UV),)
	$(UV) venv --quiet --seed --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.txt -e ".[course,test]"
else
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e ".[course,test]"
endif
	touch $@

# Every pin has wheels for every supported Python on Linux, Windows and macOS (Apple silicon),
# not only for the Python and system installed here: uv (a test dependency) resolves the pins
# for each against the package index (all at once: it waits on the network) and installs nothing.
PLATFORMS := x86_64-manylinux_2_28 x86_64-pc-windows-msvc aarch64-apple-darwin
pins: $(VENV)/.installed
	@for v in $(SUPPORTED); do for p in $(PLATFORMS); do echo $$v $$p; done; done | xargs -n 2 -P 9 sh -c \
	  '$(BIN)/uv pip compile --quiet --no-header --only-binary :all: --python-version $$0 --python-platform $$1 \
	     -o /dev/null requirements.txt \
	   || { echo "requirements.txt does not resolve for Python $$0 on $$1 (or the package index is out of reach)"; exit 1; }'
	@echo "== the pins resolve for Python $(SUPPORTED) on $(PLATFORMS)"

course: $(VENV)/.installed
	@mkdir -p $(BUILD)/notebooks
	@: "notebook 05's web page runs the model with LiteRT.js, from npm (web/package-lock.json)"
	@if [ ! -d web/node_modules ]; then \
	  command -v npm >/dev/null && npm ci --prefix web --no-audit --no-fund --loglevel=error \
	  || echo "== no LiteRT.js (needs Node.js's npm and internet once): notebook 05 writes no web page"; fi
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  LESIONLIB_HOME=$(HOME_DIR) $(BIN)/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.timeout=7200 --output-dir $(BUILD)/notebooks $$nb \
	    || { echo "== $$nb stopped: its message is at the end of the output above"; exit 1; }; \
	  : "progress bars leave one line each, not one per update"; \
	  $(BIN)/jupyter nbconvert --to notebook --inplace --CoalesceStreamsPreprocessor.enabled=True \
	    $(BUILD)/notebooks/$$(basename $$nb) || exit 1; \
	  $(BIN)/jupyter nbconvert --to html --output-dir $(BUILD)/notebooks \
	    $(BUILD)/notebooks/$$(basename $$nb) || exit 1; \
	done
	@echo "Executed notebooks, HTML and figures are in $(BUILD)/"

# The notebooks run three times: on synthetic images (smoke profile, always), then on the
# real data in ../shared/ when it is there: HAM10000 with the CC0 ISIC Archive sample as the
# other collection of notebook 06, then (without notebook 05) the CC0 sample and PH2 together,
# two collections in one manifest, with HAM10000 held out. The two real passes share one home,
# as a learner who switches collections does: the second rebuilds data/ and build/ and reuses
# the bottleneck cache. The slowest steps are listed.
test: pins
	rm -rf $(TEST_HOME)
	env LESIONLIB_PROFILE=smoke LESIONLIB_DATA_SOURCE= LESIONLIB_BACKBONE= LESIONLIB_EXTERNAL_SOURCE= LESIONLIB_KERAS_WEIGHTS= \
	  LESIONLIB_HOME=$(TEST_HOME)/smoke $(BIN)/pytest --durations=15
	@if [ -d $(SHARED)/data/ham10000 ]; then \
	  for pair in ham10000:isic-cc0-sample isic-cc0-sample,ph2:ham10000; do \
	    source=$${pair%%:*}; other=$${pair##*:}; notebooks=notebooks; \
	    : "the second pass leaves out notebook 05 (deployment, which does not depend on the"; \
	    : "collection and runs on real data in the first pass): CI must stay under 30 minutes"; \
	    if [ $$source != ham10000 ]; then notebooks=$$(ls notebooks/[0-9][0-9]-*.ipynb | grep -v /05-); fi; \
	    echo "== notebooks on real data: $$source (and $$other in notebook 06)"; \
	    env LESIONLIB_PROFILE=workshop LESIONLIB_DATA_SOURCE=$$(echo $$source | sed 's|[^,]*|$(SHARED)/data/&|g') \
	      LESIONLIB_EXTERNAL_SOURCE=$(SHARED)/data/$$other \
	      LESIONLIB_BACKBONE=$(SHARED)/weights/tfhub/mobilenet_v2_100_224_feature_vector \
	      LESIONLIB_KERAS_WEIGHTS=$(SHARED)/weights/keras/mobilenet_v2_1.0_224_float_no_top.weights.h5 \
	      LESIONLIB_HOME=$(TEST_HOME)/real $(BIN)/pytest --durations=10 $$notebooks || exit 1; \
	  done; \
	else echo "== no $(SHARED): notebooks ran on synthetic data only"; fi

clean:
	rm -rf $(VENV) build
