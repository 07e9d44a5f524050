#!/usr/bin/env bash
# Print a working Python 3.10 interpreter (Rasa 3.6 needs 3.8-3.10): pyenv's 3.10.x, python3.10 on
# PATH, or one installed by uv. Exit 1 with a hint when there is none.
set -u
candidates=()
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for d in "$root"/versions/3.10.*; do candidates+=("$d/bin/python3.10"); done
fi
candidates+=("$(command -v python3.10 2>/dev/null || true)")
if command -v uv >/dev/null 2>&1; then candidates+=("$(uv python find 3.10 2>/dev/null || true)"); fi
for p in "${candidates[@]}"; do
  if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    echo "$p"; exit 0
  fi
done
echo "no Python 3.10 found: install it (pyenv install 3.10, or uv python install 3.10)" >&2
exit 1
