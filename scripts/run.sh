#!/usr/bin/env bash
# Sets up (packages + build) and runs the main job: the reference metrics pipeline over a
# built-in load generator, printing results as windows close. Extra flags go to
# `streammetrics demo` (e.g. --events 5000000 --rate 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${BUILD_DIR:-build}/apps/streammetrics" demo --config config/reference.yaml "$@"
