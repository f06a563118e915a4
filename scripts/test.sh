#!/usr/bin/env bash
# The test command; CI runs it (.ci/run). Each check below makes it exit non-zero when it fails.
#   bash scripts/test.sh          fresh .venv (removed and recreated), installed with constraints.txt; ruff,
#                                 ruff format --check, mypy (strict on core/), the whole pytest suite
#   bash scripts/test.sh --reuse  the same on the existing .venv (LOOM_REUSE_VENV=1 does the same)
#   bash scripts/test.sh --fast   reuses .venv; lint, type check, pytest -m "not slow"
# Other arguments go to pytest: bash scripts/test.sh --fast -x -k pipeline
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
reuse="${LOOM_REUSE_VENV:-0}"
fast=0
pytest_args=()
for arg in "$@"; do
    case "$arg" in
        --reuse) reuse=1 ;;
        --fast) fast=1 reuse=1 ;;
        *) pytest_args+=("$arg") ;;
    esac
done

if [ "$reuse" != 1 ]; then
    rm -rf .venv
fi
# a reused .venv is (re)installed when it is missing or was installed from another pyproject.toml / constraints.txt
stamp="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.loom-installed 2>/dev/null)" != "$stamp" ]; then
    start=$SECONDS
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
    echo "$stamp" >.venv/.loom-installed
    echo "installed .venv in $((SECONDS - start)) s"
fi

# tests/test_serve_browser.py drives Debian's chromium (Playwright cannot download its own browser offline). On CI
# (CI=true, as root, with apt) it is installed here; elsewhere the test is skipped, saying so, when it is missing.
if ! command -v chromium >/dev/null && [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    start=$SECONDS
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/loom-apt.log 2>&1; then
        echo "installed chromium in $((SECONDS - start)) s"
    else
        echo "chromium could not be installed (see /tmp/loom-apt.log): the browser test will be skipped"
    fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== ruff check" && .venv/bin/ruff check .
echo "== ruff format --check" && .venv/bin/ruff format --check .
echo "== mypy (strict on core/, see [tool.mypy])" && .venv/bin/mypy
echo "== pytest"
if [ "$fast" = 1 ]; then
    pytest_args=(-m "not slow" ${pytest_args[@]+"${pytest_args[@]}"})
fi
# two workers (LOOM_TEST_WORKERS; 0: one process): the CI machine has two cores. Each test file runs on one worker
# (--dist loadfile): a file's tests share its fixtures, and tests that must not run beside each other (the Ray tests'
# local clusters) sit in one file. (pytest-xdist's xdist_group marker does not group under pytest 9.2: checked.)
workers="${LOOM_TEST_WORKERS:-2}"
exec .venv/bin/python -m pytest -q --durations=25 -n "$workers" --dist loadfile ${pytest_args[@]+"${pytest_args[@]}"}
