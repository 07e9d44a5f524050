#!/bin/sh
# Rasa server entrypoint: check the store settings (one line and exit 78 when one is wrong), write the
# endpoints file from the environment (ACTION_ENDPOINT_URL, CG81_ACTION_TOKEN...), then run Rasa.
set -eu
ENDPOINTS=/tmp/endpoints.yml
python -m assistant.rasa.service_config --endpoints /app/endpoints.yml "$ENDPOINTS"
exec rasa run --model "${RASA_MODEL:-/app/models/cg81.tar.gz}" --endpoints "$ENDPOINTS" \
  --credentials /app/credentials.yml --port "${RASA_PORT:-5005}" --interface 0.0.0.0 "$@"
