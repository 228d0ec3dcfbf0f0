#!/usr/bin/env bash
# Puts the source of librdkafka 2.15.1 where the CMake build takes it from (idempotent:
# quiet and instant when it is already there). The source comes from the npm package
# @confluentinc/kafka-javascript 1.10.1, which ships librdkafka's complete release tree in
# package/deps/librdkafka/; the package is fetched with `npm pack` and checked against the
# sha512 pinned below before anything is extracted. Installs Debian's npm when npm is
# missing (root, or sudo otherwise).
#
# Usage: scripts/librdkafka.sh [--print-dir]
#   SM_RDKAFKA_DIR  where the source goes (default $SM_CACHE_DIR/librdkafka-2.15.1, with
#                   SM_CACHE_DIR defaulting to ${XDG_CACHE_HOME:-$HOME/.cache}/streammetrics);
#                   CMake's STREAMMETRICS_RDKAFKA_SOURCE_DIR has the same default.
#   --print-dir     prints that directory and does nothing else.
set -euo pipefail

readonly VERSION=2.15.1
readonly VERSION_HEX=0x020f01ff  # RD_KAFKA_VERSION in src/rdkafka.h
readonly PACKAGE=@confluentinc/kafka-javascript@1.10.1
readonly TARBALL=confluentinc-kafka-javascript-1.10.1.tgz
# The package's npm integrity (sha512 of the tarball, base64).
readonly INTEGRITY=sha512-KVePUBn21EqCVP9mfxzEuM3SYJHHEF7X+iiC2e43QQgDSyEaksInmCGooT3w5q+cNAdkSCrK71j0ICfqoSqZLw==

CACHE="${SM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streammetrics}"
DEST="${SM_RDKAFKA_DIR:-$CACHE/librdkafka-$VERSION}"
if [ "${1:-}" = "--print-dir" ]; then
  echo "$DEST"
  exit 0
fi

# The stamp is written last: a directory without it is an interrupted run and is redone.
STAMP="$DEST/.streammetrics-source"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$INTEGRITY" ]; then
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "librdkafka: installing npm"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
fi

PARENT="$(dirname "$DEST")"
mkdir -p "$PARENT"
WORK="$(mktemp -d "$PARENT/.librdkafka-$VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "librdkafka: fetching $PACKAGE (npm pack)"
(cd "$WORK" && npm pack --ignore-scripts --silent "$PACKAGE" >/dev/null)
[ -f "$WORK/$TARBALL" ] || { echo "librdkafka: npm pack did not produce $TARBALL" >&2; exit 1; }

want="$(printf '%s' "${INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
got="$(sha512sum "$WORK/$TARBALL" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  echo "librdkafka: $TARBALL has sha512 $got, expected $want; not using it" >&2
  exit 1
fi

tar -xzf "$WORK/$TARBALL" -C "$WORK" package/deps/librdkafka
SRC="$WORK/package/deps/librdkafka"
if ! grep -q "^#define RD_KAFKA_VERSION *$VERSION_HEX" "$SRC/src/rdkafka.h"; then
  echo "librdkafka: $PACKAGE does not hold librdkafka $VERSION ($VERSION_HEX)" >&2
  exit 1
fi
printf '%s\n' "$INTEGRITY" >"$SRC/.streammetrics-source"
rm -rf "$DEST"
mv "$SRC" "$DEST"
echo "librdkafka: $VERSION source in $DEST"
