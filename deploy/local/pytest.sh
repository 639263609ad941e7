#!/usr/bin/env bash
# Runs pytest and turns "no tests collected" (exit 5) into a loud failure: a suite that
# ran nothing must never pass as green.
set -uo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
