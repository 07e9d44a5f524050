#!/usr/bin/env bash
# Start the action server (.venv, rasa-sdk) and the Rasa server (.venv-rasa) with the REST channel and
# the web chat (http://127.0.0.1:$RASA_PORT/webhooks/web/, printed when ready; nothing is opened).
# Ports: RASA_PORT (5005), ACTIONS_PORT (5055). TERM or Ctrl-C stops both. With --chat, a terminal
# chat over the REST channel runs in the foreground and leaving it stops both servers; with
# --exec CMD..., CMD runs against the ready servers, which stop when it ends (its exit code is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
export RASA_PORT=${RASA_PORT:-5005} ACTIONS_PORT=${ACTIONS_PORT:-5055}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
MODEL=${RASA_MODEL:-models/cg81.tar.gz}
LOG_DIR=${LOG_DIR:-build/logs}
mkdir -p "$LOG_DIR"
[ -f "$MODEL" ] || { echo "no trained model at $MODEL: run 'make train'" >&2; exit 1; }
# Conversation and lock stores (TRACKER_STORE_URL, default the SQLite file var/tracker.db; REDIS_URL):
# a wrong, unreachable or credential-less setting stops here with one line naming it (docs/service.md).
.venv-rasa/bin/python -m assistant.rasa.service_config || exit 78

# Rasa reads the action server's address from an endpoints file: write one for the chosen port
# (a private file, so two instances on different ports do not overwrite each other's).
# Rasa authenticates to the action server with a shared secret (CG81_ACTION_TOKEN; a fresh random one per
# run when it is not set), and the action server listens on loopback only unless ACTIONS_HOST says otherwise.
export CG81_ACTION_TOKEN=${CG81_ACTION_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}
export SANIC_HOST=${ACTIONS_HOST:-127.0.0.1}
# REST and web chat require CG81_API_TOKEN (bearer) unless this is local development: this script binds Rasa
# to loopback, so without a token it runs in development mode, which accepts only loopback clients.
[ -n "${CG81_API_TOKEN:-}" ] || export CG81_DEV_MODE=1
ENDPOINTS=$(mktemp --suffix=.yml "${TMPDIR:-/tmp}/cg81-endpoints.XXXXXX")
sed -e "s/\${ACTIONS_PORT}/$ACTIONS_PORT/" -e "s/\${CG81_ACTION_TOKEN}/$CG81_ACTION_TOKEN/" endpoints.yml >"$ENDPOINTS"

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$ENDPOINTS"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

.venv/bin/python -m rasa_sdk --actions actions --port "$ACTIONS_PORT" >"$LOG_DIR/actions.log" 2>&1 &
pids+=($!)
.venv-rasa/bin/rasa run --model "$MODEL" --endpoints "$ENDPOINTS" --credentials credentials.yml \
  --port "$RASA_PORT" --interface 127.0.0.1 >"$LOG_DIR/rasa.log" 2>&1 &
pids+=($!)
echo "starting: actions on :$ACTIONS_PORT, Rasa on :$RASA_PORT (logs in $LOG_DIR)"
.venv/bin/python scripts/wait_ready.py --rasa "http://127.0.0.1:$RASA_PORT" \
  --actions "http://127.0.0.1:$ACTIONS_PORT" --timeout "${READY_TIMEOUT:-120}" || {
  echo "servers did not become ready; see $LOG_DIR/*.log" >&2; tail -n 20 "$LOG_DIR"/*.log >&2; exit 1; }
WEB_URL="http://127.0.0.1:$RASA_PORT/webhooks/web/"
if [ "${1:-}" = "--chat" ]; then
  echo "web chat: $WEB_URL (also open while this terminal chat runs)"
  .venv/bin/python -m assistant.chat_client --url "http://127.0.0.1:$RASA_PORT"
elif [ "${1:-}" = "--exec" ]; then
  shift
  "$@"
else
  echo "web chat: open $WEB_URL in a browser"
  echo "ready: POST http://127.0.0.1:$RASA_PORT/webhooks/rest/webhook (Ctrl-C to stop)"
  wait -n "${pids[@]}"
fi
