# Two commands do everything on a fresh machine with Python 3.11:
#   make run    create .venv, install, run the whole workflow on the bundled digits data, build the report
#   make test   create/update .venv and run the test suite
#   make test-kernels   the numeric tests again under another CPU kernel set (a stand-in for another CPU)
PYTHON ?= python3.11
VENV   ?= .venv
CORES  ?= 2
CONFIG ?=
SNAKEMAKE = $(VENV)/bin/snakemake
STAMP  = $(VENV)/.installed

.PHONY: run test test-kernels install report bench lint dag clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES) $(if $(CONFIG),--configfile $(CONFIG))
	name=$$($(VENV)/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' \
		$(or $(CONFIG),config/config.yaml)); \
	$(SNAKEMAKE) --cores $(CORES) $(if $(CONFIG),--configfile $(CONFIG)) --report results/$$name/report.html

# the tests on $(CORES) processes (pytest-xdist, one test file per worker, see tests/conftest.py); XDIST= runs them in one.
# pytest exits 5 when it collects no tests: that is a failure too
XDIST ?= -n $(CORES) --dist loadfile
test: $(STAMP)
	$(VENV)/bin/python -m pytest $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# the tests marked `numeric` (training numbers) once more with every float bit changed: ATen's scalar kernels,
# oneDNN capped at SSE4.1 and MKL's reproducible mode, as on a CPU other than the one the pins were recorded on
KERNELS ?= ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE
test-kernels: $(STAMP)
	env $(KERNELS) $(VENV)/bin/python -m pytest -m numeric -p no:cacheprovider $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no numeric tests" >&2; exit 1; fi; exit $$rc

# style: ruff, snakefmt --check and snakemake --lint through pre-commit (.pre-commit-config.yaml). The tools get their
# own venv: black (snakefmt's formatter) needs a `packaging` newer than Snakemake 9 accepts.
LINT_VENV ?= .venv-lint
LINT_TOOLS = ruff==0.17.6 snakefmt==2.1.0 pre-commit==4.7.0
$(LINT_VENV)/.installed: Makefile
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet $(LINT_TOOLS)
	touch $@

lint: $(STAMP) $(LINT_VENV)/.installed
	PATH="$(CURDIR)/$(LINT_VENV)/bin:$$PATH" $(LINT_VENV)/bin/pre-commit run --all-files --show-diff-on-failure

dag: $(STAMP)
	$(SNAKEMAKE) --rulegraph | dot -Tsvg > docs/rulegraph.svg

bench: $(STAMP)
	$(VENV)/bin/python bench/benchmark.py --out docs/benchmarks.md

clean:
	rm -rf results logs benchmarks .snakemake
