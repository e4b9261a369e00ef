# `make demo` and `make test` install what they need (uv, the locked environment, test servers).
export UV_PYTHON_DOWNLOADS := never
UV := $(shell scripts/ensure-uv)
RUN := $(UV) run --frozen --all-extras
UNASYNCD := $(UV) tool run --from unasyncd==0.10.1 --with ruff==0.17.6 unasyncd --no-cache

.PHONY: demo test lock lint types sync check-sync servers bench check docs docs-serve serve loadtest

demo:
	$(RUN) dalkit demo

test: servers lock lint types check-sync
	$(RUN) pytest --cov=dalkit --cov-report= && $(RUN) python scripts/coverage-by-package --fail-under 90

lint:
	$(RUN) ruff check . && $(RUN) ruff format --check .

types:
	$(RUN) mypy --strict src tests examples/conduit/conduit

sync:
	$(UNASYNCD) --force

# unasyncd 0.10.1's --check never reports a stale twin (in check mode it compares nothing), so
# the check regenerates every twin (--force: its cache of the sources' stat would skip them) and
# fails when one changed; the regenerated files are left for you to commit
check-sync:
	@out=$$($(UNASYNCD) --force 2>&1); echo "$$out" | tail -n 1; \
	echo "$$out" | grep -q "^0 files transformed" || \
	{ echo "generated sync twins were stale: regenerated them; review and commit"; exit 1; }

lock:
	$(UV) lock --check

servers:
	scripts/ensure-servers

bench:
	$(UV) run --frozen --all-extras --group peers python -m bench

check: test

docs:
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict --site-dir site

docs-serve:
	$(RUN) mkdocs serve --dev-addr 127.0.0.1:8000

serve:
	cd examples/conduit && $(RUN) uvicorn conduit.app:app --host 127.0.0.1 --port 8000

loadtest: servers
	$(RUN) python -m bench.loadtest

.PHONY: bench-peers bench-floors
bench-peers:
	$(UV) run --frozen --all-extras --group peers python -m bench peers

bench-floors:
	$(UV) run --frozen --all-extras --group peers python -m bench.floors

.PHONY: test-scale
test-scale:
	$(RUN) pytest tests/scale -q

# Refresh the committed mermaid bundle (MIT) from the npm registry: `make docs` itself never needs npm or a CDN
.PHONY: docs-mermaid
docs-mermaid:
	$(RUN) python docs/_hooks/mermaid_update.py $(or $(MERMAID),11)
