# Tessera: `make run` starts the app, `make test` runs the whole suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-deps
# Qt's offscreen/xcb platform libraries, a real Secret Service (gnome-keyring + D-Bus) for the
# keyring tests, a PostgreSQL server for the exchange's PostgreSQL tests, and Xvfb for the
# bundle's smoke test on a real X11 display; ICU's tools and binutils slim the bundle's ICU data.
APT_PACKAGES := gnome-keyring dbus dbus-user-session postgresql libegl1 libgl1 libxkbcommon0 \
	libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libxcb-cursor0 libxcb-icccm4 \
	libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-image0 \
	libxcb-render-util0 libglib2.0-0 xvfb icu-devtools binutils

.PHONY: install run test bench lint format installer demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,org]'
	touch $(STAMP)

$(SYSTEM_STAMP): | $(STAMP)
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		missing=""; for p in $(APT_PACKAGES); do \
			dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "Installing system packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		fi; \
	else \
		echo "note: install these system packages if Qt or keyring tests fail: $(APT_PACKAGES)"; \
	fi
	touch $(SYSTEM_STAMP)

install: $(STAMP) $(SYSTEM_STAMP)

run: install
	$(VENV)/bin/tessera gui

test: install
	QT_QPA_PLATFORM=offscreen TESSERA_KDF_TIME_COST=1 \
		tests/with_secret_service.sh tests/pg_server.sh $(PY) -m pytest -q -n 2 --dist loadfile

# Under a throwaway PostgreSQL so bench_exchange measures both of its databases.
bench: install
	@tests/pg_server.sh bash -c 'for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(PY) "$$script" || exit 1; done'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

installer: install
	$(PY) build_installer.py

demo: install
	$(VENV)/bin/tessera demo

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
