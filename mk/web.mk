# Web chat (assistant/rasa/webchat.py, docs/webchat.md): browser tests, benchmark and screenshots.
# Headless Chromium is Debian's package (Playwright's own browser download does not work offline), driven
# by Playwright for Python from .venv; axe-core comes from the npm registry into build/web-tools (git-ignored),
# injected only by the tests.

CHROMIUM ?= $(or $(CG81_CHROMIUM),/usr/bin/chromium)
AXE_VERSION := 4.14.1
WEB_TOOLS := build/web-tools
AXE_JS := $(WEB_TOOLS)/node_modules/axe-core/axe.min.js

$(AXE_JS): mk/web.mk
	@command -v npm >/dev/null || { echo "npm is needed to fetch axe-core: apt-get install -y npm (or install Node.js)"; exit 1; }
	mkdir -p $(WEB_TOOLS)
	npm install --prefix $(WEB_TOOLS) --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	  axe-core@$(AXE_VERSION)
	touch $@

.PHONY: install-browser
install-browser: $(VENV)/.installed $(AXE_JS) ## Chromium (Debian package), Playwright in .venv, axe-core for the browser tests
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "Chromium is missing: run 'sudo apt-get install -y chromium' (or set CG81_CHROMIUM to a Chromium/Chrome binary)"; exit 1; fi; \
	  echo "installing Debian's chromium (once)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || { \
	    echo "could not install chromium with apt-get: install a Chromium or Chrome and set CG81_CHROMIUM"; exit 1; }; \
	fi
	@$(PY) -c "import playwright" 2>/dev/null || $(VENV)/bin/pip install -q "$$(grep -E '^playwright==' requirements/core.lock)"
	@echo "browser tools: $$($(CHROMIUM) --version 2>/dev/null | head -1), playwright $$($(PY) -c 'from importlib.metadata import version; print(version("playwright"))'), axe-core $(AXE_VERSION)"

.PHONY: test-web
test-web: install-browser $(MODEL) $(INDEX) ## web chat in headless Chromium against the real servers (also run by test-e2e)
	$(PY) -m pytest -m browser -q

.PHONY: bench-web
bench-web: install-browser $(MODEL) $(INDEX) ## web chat: Enter -> answer card visible, p50/p95 over 50 questions, beside the REST turn
	$(PY) benchmarks/bench_web.py

.PHONY: screenshots
screenshots: install-browser $(MODEL) $(INDEX) ## web chat screenshots at 1280 and 360 px into docs/
	$(PY) scripts/web_screenshots.py --out docs
