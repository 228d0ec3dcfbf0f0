#!/usr/bin/env bash
# Sets up (packages + build) and runs the main job on the embedded default: the
# reference pipeline on the Kafka runtime with the dev broker and the built-in load
# generator in this process, printing progress every second and the latest per-service
# percentiles as 1-minute windows close, until Ctrl-C (which commits and exits 0).
# Extra flags go to `streammetrics run` (e.g. --load 50000, --duration 120).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${BUILD_DIR:-build}/apps/streammetrics" run --config config/embedded.yaml "$@"
