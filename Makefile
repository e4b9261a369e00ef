# `make demo` and `make test` install what they need (uv, the locked environment, test servers).
export UV_PYTHON_DOWNLOADS := never
UV := $(shell scripts/ensure-uv)
RUN := $(UV) run --frozen --all-extras
UNASYNCD := $(UV) tool run --from unasyncd==0.10.1 --with ruff==0.17.6 unasyncd --no-cache

.PHONY: demo test lint types sync check-sync servers bench check

demo:
	$(RUN) dalkit demo

test: servers lint types check-sync
	$(RUN) pytest

lint:
	$(RUN) ruff check . && $(RUN) ruff format --check .

types:
	$(RUN) mypy --strict src

sync:
	-$(UNASYNCD)
	$(UNASYNCD) --check

check-sync:
	$(UNASYNCD) --check

servers:
	scripts/ensure-servers

bench:
	$(RUN) python -m bench

check: test
