#!/usr/bin/env bash
# Run every test. Fails when pytest fails, when it collects no test (exit 5), or when
# it skipped tests that CI must run (PostgreSQL, vLLM).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
