#!/usr/bin/env bash
# Offline validation of the deployment files (make validate-deploy): nothing is built, pulled or run.
#   yamllint      every YAML file under deploy/ (deploy/.yamllint.yml)
#   dclint        deploy/docker-compose.yml against the Compose Specification schema (npm package)
#   kubernetes-validate  deploy/k8s/*.yaml against the Kubernetes 1.30 OpenAPI schemas, strict
#   hadolint      deploy/docker/Dockerfile.*
#   nginx -t      deploy/docker/nginx.conf, with the service host names mapped to 127.0.0.1
#   consistency   kustomization resources exist; the images copy files that exist; ports agree
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${SERVICE_TOOLS:-build/service-tools}
fail=0
step() { printf '%-22s' "$1"; }
ok() { echo "ok${1:+ ($1)}"; }
bad() { echo "FAILED"; echo "$1" | sed 's/^/    /'; fail=1; }

step "yamllint"
if out=$("$TOOLS/bin/yamllint" -f parsable -c deploy/.yamllint.yml deploy/ 2>&1); then ok; else bad "$out"; fi

step "compose schema"
if out=$("$TOOLS/node/node_modules/.bin/dclint" deploy/docker-compose.yml -q --color=false \
          --disable-rule no-unbound-port-interfaces 2>&1) && ! grep -q error <<<"$out"; then ok "dclint"; else bad "$out"; fi

step "kubernetes schema"
manifests=$(ls deploy/k8s/*.yaml | grep -v kustomization.yaml)
# shellcheck disable=SC2086
if out=$("$TOOLS/bin/kubernetes-validate" --strict --quiet -k 1.30.0 $manifests 2>&1); then
  ok "$(echo "$manifests" | wc -l) files, Kubernetes 1.30, strict"; else bad "$out"; fi

step "kustomization"
missing=$("$TOOLS/bin/python" - <<'PY'
import yaml, pathlib
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
print(" ".join(r for r in k["resources"] if not pathlib.Path("deploy/k8s", r).exists()))
PY
)
if [ -z "$missing" ]; then ok; else bad "missing resources: $missing"; fi

step "hadolint"
if out=$("$TOOLS/bin/hadolint" deploy/docker/Dockerfile.rasa deploy/docker/Dockerfile.actions 2>&1); then ok; else bad "$out"; fi

step "Dockerfile sources"
absent=""
for f in deploy/docker/Dockerfile.*; do
  while read -r src; do
    for s in $src; do [ -e "$s" ] || case "$s" in models/*|build/*) ;; *) absent="$absent $f:$s";; esac; done
  done < <(grep '^COPY ' "$f" | grep -v -- '--from=' | sed 's/^COPY \(--[a-z]*=[^ ]* \)*//' | awk '{$NF=""; print}')
done
if [ -z "$absent" ]; then ok "models/, build/index and build/model come from make train / make build"; else bad "absent:$absent"; fi

step "nginx -t"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then bad "nginx is not installed: make install-service-deps"; else
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  sed -e 's/server rasa-[0-9]*:5005/server 127.0.0.1:5005/' -e 's/server actions-[0-9]*:5055/server 127.0.0.1:5055/' \
      -e "s#/tmp/#$tmp/#g" -e 's#access_log /dev/stdout#access_log /dev/null#' deploy/docker/nginx.conf >"$tmp/nginx.conf"
  if out=$("$NGINX" -t -q -p "$tmp" -c "$tmp/nginx.conf" 2>&1); then ok; else bad "$out"; fi
fi

step "ports agree"
if grep -q 'ACTION_ENDPOINT_URL: http://proxy:5055/webhook' deploy/docker-compose.yml \
   && grep -q 'listen 5055;' deploy/docker/nginx.conf && grep -q 'listen 8080;' deploy/docker/nginx.conf \
   && grep -q 'http://cg81-actions:5055/webhook' deploy/k8s/configmap.yaml; then ok; else
  bad "ACTION_ENDPOINT_URL, nginx listen ports and the k8s Service disagree"; fi

if [ "$fail" != 0 ]; then echo "validate-deploy: FAILED"; exit 1; fi
echo "validate-deploy: all checks passed"
