#!/usr/bin/env bash
# Installs the Debian packages StreamMetrics needs (idempotent, quiet when all are present)
# and builds the project into build/. Usage: scripts/setup.sh [--no-build] [--kafka] [--fuzz]
# --kafka: also Java and Maven, and the real Kafka broker's jars (scripts/kafka.sh fetch)
# that the test suite and the benchmarks run against.
# --fuzz: also clang, and builds the libFuzzer targets into build-fuzz/ (STREAMMETRICS_FUZZ).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libabsl-dev libsimdjson-dev libprotobuf-dev protobuf-compiler libyaml-cpp-dev
  librocksdb-dev libhiredis-dev libpq-dev
  zlib1g-dev libzstd-dev liblz4-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libgoogle-perftools-dev
  redis-server postgresql kcat
)

BUILD=1
KAFKA=0
FUZZ=0
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD=0 ;;
    --kafka) KAFKA=1 ;;
    --fuzz) FUZZ=1 ;;
    *) echo "setup: unknown flag $arg" >&2; exit 2 ;;
  esac
done
if ((KAFKA)); then PACKAGES+=(openjdk-17-jre-headless maven); fi
if ((FUZZ)); then PACKAGES+=(clang); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# librdkafka 2.15.1's source, which the build compiles (idempotent; npm if missing).
bash scripts/librdkafka.sh

if ((KAFKA)); then bash scripts/kafka.sh fetch >/dev/null; fi
((BUILD)) || exit 0

BUILD_DIR="${BUILD_DIR:-build}"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"

if ((FUZZ)); then
  if [ ! -f build-fuzz/build.ninja ]; then
    CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSTREAMMETRICS_FUZZ=ON >/dev/null
  fi
  cmake --build build-fuzz -j "$(nproc)"
fi
