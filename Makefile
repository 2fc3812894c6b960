# Every target builds its own virtualenv from nothing, so a fresh clone (or CI)
# needs only python3 and make.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/stateward/v1/*.proto)
PROTOC := $(BIN)/python -m grpc_tools.protoc -Iprotos
# Debian keeps initdb/pg_ctl off PATH; the PostgreSQL tests need them.
PG_BIN := $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))

# The strict editable install (which mypy needs) links each file at install
# time: a module added later stays invisible until a reinstall. So the install
# also depends on the *set* of package files, recorded here when it changes.
FILESET   := $(VENV)/.fileset
PKG_FILES := $(sort $(shell find protos/stateward server storage client -type f \
	\( -name '*.py' -o -name '*.pyi' -o -name '*.proto' -o -name py.typed \
	   -o -name '*.ini' -o -name '*.mako' \) -not -path '*/__pycache__/*' 2>/dev/null))
$(shell mkdir -p $(VENV); echo '$(PKG_FILES)' | cmp -s - $(FILESET) || echo '$(PKG_FILES)' > $(FILESET))

.PHONY: setup run test faults lint protos protos-check docs docs-check clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(FILESET)
	test -x $(BIN)/python || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q --upgrade pip; }
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $@

run: $(STAMP)
	$(BIN)/stateward serve $(ARGS)

# THE test command. ARGS passes through, e.g. make test ARGS='-m "not slow"'.
test: $(STAMP)
	$(if $(PG_BIN),PATH="$(PG_BIN):$$PATH") $(BIN)/pytest -q -p no:cacheprovider $(ARGS)

# The fault-injection suite at full counts (20 SQLite and 10 PostgreSQL crash cycles,
# longer outages, more subscription cuts); `make test` runs it at reduced counts.
faults: $(STAMP)
	$(if $(PG_BIN),PATH="$(PG_BIN):$$PATH") STATEWARD_FAULTS=full $(BIN)/pytest -q -p no:cacheprovider tests/faults $(ARGS)

lint: protos-check docs-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(if $(PROTOS),$(BIN)/buf lint,@echo "buf lint: no .proto files yet")
	$(BIN)/mypy -p stateward.server -p stateward.storage -p stateward.client

protos: $(STAMP)
	rm -f protos/stateward/v1/*_pb2.py protos/stateward/v1/*_pb2.pyi protos/stateward/v1/*_pb2_grpc.py
	$(PROTOC) --python_out=protos --grpc_python_out=protos --pyi_out=protos $(PROTOS)

# Regenerate into a temp dir and compare with what is committed.
protos-check: $(STAMP)
ifeq ($(PROTOS),)
	@echo "protos-check: no .proto files yet"
else
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/committed"; \
	cp protos/stateward/v1/*_pb2*.py* "$$tmp/committed/" 2>/dev/null || true; \
	$(PROTOC) --python_out="$$tmp" --grpc_python_out="$$tmp" --pyi_out="$$tmp" $(PROTOS); \
	if ! diff -ru "$$tmp/committed" "$$tmp/stateward/v1" > "$$tmp/diff"; then \
	  head -n 60 "$$tmp/diff"; \
	  echo "protos-check: generated code in protos/stateward/v1 is stale: run 'make protos' and commit it." >&2; \
	  exit 1; \
	fi; \
	echo "protos-check: generated code matches the .proto files"
endif

# docs/api.md is generated from the proto comments; docs-check fails when it is stale.
docs: $(STAMP)
	$(BIN)/python scripts/gen_api_docs.py

docs-check: $(STAMP)
	$(BIN)/python scripts/gen_api_docs.py --check

# Removing build/ breaks the strict editable install, so drop its stamp too.
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# Benchmarks (bench/README.md). ARGS passes through, e.g. make bench ARGS='--duration 2'.
.PHONY: bench bench-full
bench: $(STAMP)
	$(BIN)/python -m bench.run --quick $(ARGS)

bench-full: $(STAMP)
	$(if $(PG_BIN),PATH="$(PG_BIN):$$PATH") $(BIN)/python -m bench.run --full $(ARGS)
