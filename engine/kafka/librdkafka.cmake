# librdkafka 2.15.1, built from source as a static library inside this build: target
# sm_rdkafka, linked by sm_kafka only. The source comes from scripts/librdkafka.sh (npm
# package @confluentinc/kafka-javascript 1.10.1, checked against a pinned sha512), which
# scripts/setup.sh runs. Not Debian 12's 2.0.2, which has bugs the engine hits: seek
# waits microseconds for the milliseconds passed (#4230), watermark queries never time out
# (#4460), metadata is asked of old leaders for 5 minutes (#4225), cooperative consumers
# hang on close (#4527), the cooperative-sticky assignor loops (#4800), the idempotent
# producer fails fatally after a disconnect (#4438), a cooperative-sticky consumer
# destroyed before its first assignment asserts (#4312); and it lacks
# fetch.queue.backoff.ms (2.2.0).
#
# That package's copy of librdkafka has the mklove build (configure + make) but not the
# packaging/ directory its CMakeLists.txt needs, so the build is an ExternalProject running
# mklove on a copy of the source in the build tree (mklove builds in its source tree; the
# cache stays untouched and serves every build tree). Features: zlib, zstd, lz4 (Debian's
# libraries, linked dynamically), OpenSSL (SSL, SASL PLAIN/SCRAM/OAUTHBEARER); no Cyrus
# SASL (GSSAPI) and no libcurl (OIDC). patches/ holds fixes applied to that copy.

set(SM_RDKAFKA_VERSION 2.15.1)
set(SM_RDKAFKA_VERSION_HEX 0x020f01ff)
if(DEFINED ENV{SM_RDKAFKA_DIR})
  set(_sm_rdkafka_default "$ENV{SM_RDKAFKA_DIR}")
elseif(DEFINED ENV{SM_CACHE_DIR})
  set(_sm_rdkafka_default "$ENV{SM_CACHE_DIR}/librdkafka-${SM_RDKAFKA_VERSION}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_sm_rdkafka_default "$ENV{XDG_CACHE_HOME}/streammetrics/librdkafka-${SM_RDKAFKA_VERSION}")
else()
  set(_sm_rdkafka_default "$ENV{HOME}/.cache/streammetrics/librdkafka-${SM_RDKAFKA_VERSION}")
endif()
set(STREAMMETRICS_RDKAFKA_SOURCE_DIR "${_sm_rdkafka_default}" CACHE PATH
    "librdkafka ${SM_RDKAFKA_VERSION}'s source tree (scripts/librdkafka.sh puts it there)")

set(_sm_rdkafka_header "${STREAMMETRICS_RDKAFKA_SOURCE_DIR}/src/rdkafka.h")
if(NOT EXISTS "${_sm_rdkafka_header}")
  message(FATAL_ERROR
    "librdkafka ${SM_RDKAFKA_VERSION}'s source is not in ${STREAMMETRICS_RDKAFKA_SOURCE_DIR}: "
    "run scripts/librdkafka.sh (scripts/setup.sh does), or point "
    "-DSTREAMMETRICS_RDKAFKA_SOURCE_DIR=... at the source tree.")
endif()
file(STRINGS "${_sm_rdkafka_header}" _sm_rdkafka_version_line
     REGEX "^#define RD_KAFKA_VERSION +0x[0-9a-fA-F]+")
if(NOT _sm_rdkafka_version_line MATCHES "${SM_RDKAFKA_VERSION_HEX}")
  message(FATAL_ERROR
    "${STREAMMETRICS_RDKAFKA_SOURCE_DIR} is not librdkafka ${SM_RDKAFKA_VERSION} "
    "(${_sm_rdkafka_version_line}); run scripts/librdkafka.sh.")
endif()

find_package(PkgConfig REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(ZLIB REQUIRED)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(LZ4 REQUIRED IMPORTED_TARGET liblz4)

include(ExternalProject)
include(ProcessorCount)
ProcessorCount(_sm_cores)
if(_sm_cores EQUAL 0)
  set(_sm_cores 1)
endif()
set(_sm_rdkafka_src "${CMAKE_BINARY_DIR}/_deps/librdkafka-src")
set(_sm_rdkafka_prefix "${CMAKE_BINARY_DIR}/_deps/librdkafka")
set(_sm_rdkafka_lib "${_sm_rdkafka_prefix}/lib/librdkafka.a")
set(_sm_rdkafka_patch "${CMAKE_CURRENT_LIST_DIR}/patches/librdkafka-coord-req-retry.patch")
ExternalProject_Add(librdkafka_build
  PREFIX "${CMAKE_BINARY_DIR}/_deps/librdkafka-ep"
  SOURCE_DIR "${_sm_rdkafka_src}"
  DOWNLOAD_COMMAND
    ${CMAKE_COMMAND} -E rm -rf "${_sm_rdkafka_src}"
    COMMAND ${CMAKE_COMMAND} -E copy_directory "${STREAMMETRICS_RDKAFKA_SOURCE_DIR}" "${_sm_rdkafka_src}"
  # Fixes carried until a release has them (each patch says what and why).
  PATCH_COMMAND patch -p1 --forward --quiet -i "${_sm_rdkafka_patch}"
  BUILD_IN_SOURCE ON
  # --no-download: mklove never fetches modules or dependencies; explicit --enable-*
  # make a missing library an error instead of a feature silently left out.
  CONFIGURE_COMMAND ./configure --no-download --no-cache --prefix=${_sm_rdkafka_prefix}
    --enable-ssl --enable-zlib --enable-zstd --enable-lz4-ext
    --disable-gssapi --disable-curl
  BUILD_COMMAND make -C src -j${_sm_cores} librdkafka.a
  INSTALL_COMMAND
    ${CMAKE_COMMAND} -E make_directory "${_sm_rdkafka_prefix}/include/librdkafka" "${_sm_rdkafka_prefix}/lib"
    COMMAND ${CMAKE_COMMAND} -E copy src/rdkafka.h src/rdkafka_mock.h "${_sm_rdkafka_prefix}/include/librdkafka/"
    COMMAND ${CMAKE_COMMAND} -E copy src/librdkafka.a "${_sm_rdkafka_lib}"
  BUILD_BYPRODUCTS "${_sm_rdkafka_lib}"
  LOG_CONFIGURE ON
  LOG_BUILD ON
  LOG_OUTPUT_ON_FAILURE ON
)

# A changed patch means a fresh copy of the source, patched again.
ExternalProject_Add_StepDependencies(librdkafka_build download "${_sm_rdkafka_patch}")

# The library and what it needs (mklove's LIBS for these features).
add_library(sm_rdkafka INTERFACE)
add_dependencies(sm_rdkafka librdkafka_build)
target_include_directories(sm_rdkafka SYSTEM INTERFACE "${_sm_rdkafka_prefix}/include")
target_link_libraries(sm_rdkafka INTERFACE "${_sm_rdkafka_lib}"
  PkgConfig::LZ4 PkgConfig::ZSTD OpenSSL::SSL OpenSSL::Crypto ZLIB::ZLIB
  Threads::Threads ${CMAKE_DL_LIBS} m rt)
