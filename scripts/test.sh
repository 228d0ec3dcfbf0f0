#!/usr/bin/env bash
# Sets up (packages, the real Kafka broker's jars, build) and runs the whole test suite
# with ctest; the suite starts its own Kafka, Redis and PostgreSQL servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --kafka
BUILD_DIR="${BUILD_DIR:-build}"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" --timeout 600
