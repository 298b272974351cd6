#!/usr/bin/env bash
# Run every check: ruff, mypy (strict on service/), then pytest. Fails when any fails,
# and when pytest collects no test (its exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
echo "[test] ruff"
.venv/bin/ruff check store service trainer loopchat harness tests || exit 1
echo "[test] mypy"
.venv/bin/mypy || exit 1
if [ -f frontend/package.json ]; then
  echo "[test] web app: generated client current, typecheck, unit tests (vitest)"
  (
    cd frontend
    fresh="$(mktemp)"
    npx --no-install openapi-typescript openapi.json -o "$fresh" >/dev/null 2>&1
    cmp -s "$fresh" src/api/schema.d.ts \
      || { echo "src/api/schema.d.ts is stale: run npm run gen:api" >&2; rm -f "$fresh"; exit 1; }
    rm -f "$fresh"
    npm run --silent typecheck && npm test --silent
  ) || exit 1
fi
echo "[test] pytest"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
