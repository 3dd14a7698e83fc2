#!/usr/bin/env bash
# CI, one script for every place it runs: .ci/run (a clean clone) and
# .github/workflows/ci.yml (GitHub Actions) call it, so the two cannot drift.
#   scripts/ci.sh            install from the lock, then the README's test command (the
#                            sample pipeline is among the tests)
#   scripts/ci.sh summary    markdown of what this commit changes against BASE (default
#                            main): params, committed metrics, the sample run's metrics
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if [ "${1:-}" = summary ]; then
    . .venv/bin/activate
    python scripts/ci_summary.py --base "${BASE:-main}" --sample "${SAMPLE_DIR:-.ci-sample}"
    exit 0
fi
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
pip install -q -c constraints.txt -e ".[dev,jax]"   # README: set-up (pinned versions)
# The page's browser test needs Debian's chromium and its driver (it skips without them).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    browser="env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver"
    { $browser || { apt-get update -q && $browser; }; } >/dev/null 2>&1 \
        || echo "ci: chromium could not be installed; the browser test will skip"
fi
echo "ci: installed in $(( $(date +%s) - start ))s"
# Tests copy ImageNet weights from ../shared into a temporary KERAS_HOME themselves; the
# sample pipeline's test leaves its metrics and params in $SAMPLE_DIR for the summary.
SAMPLE_DIR="${SAMPLE_DIR:-$PWD/.ci-sample}" pytest   # README: tests
echo "ci: finished in $(( $(date +%s) - start ))s"
