#!/usr/bin/env bash
# Builds tipedge's C library (release) and installs it under PREFIX (default /usr/local):
#   PREFIX/include/tipedge.h
#   PREFIX/lib/libtipedge_c.so, PREFIX/lib/libtipedge_c.a
#   PREFIX/lib/pkgconfig/tipedge.pc              pkg-config --cflags --libs tipedge
#   PREFIX/lib/cmake/tipedge/tipedgeConfig.cmake find_package(tipedge) → target tipedge::tipedge
#
#   capi/install.sh [PREFIX] [--target TRIPLE]   (extra arguments go to cargo build)
# With --target (e.g. aarch64-unknown-linux-gnu, after cross/build.sh's prerequisites) the
# libraries are the cross-built ones. PROFILE=dev installs the test profile's build instead of
# the release one (CI: no second build of tract). CARGO_CMD replaces `cargo` (cross/build.sh:
# "cargo --config cross/config.toml"); STRIP the strip tool.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/usr/local
if [[ $# -gt 0 && $1 != -* ]]; then PREFIX=$1; shift; fi
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
profile=${PROFILE:-release}
dir=$profile
[[ $profile == dev ]] && dir=debug
out=$target_dir/$dir
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [[ ${args[i]} == --target ]] && out=$target_dir/${args[i + 1]}/$dir
done
${CARGO_CMD:-cargo} build --profile "$profile" -p tipedge-capi "$@"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' capi/Cargo.toml | head -1)
mkdir -p "$PREFIX/include" "$PREFIX/lib/pkgconfig" "$PREFIX/lib/cmake/tipedge"
install -m 0644 capi/include/tipedge.h "$PREFIX/include/tipedge.h"
install -m 0755 "$out/libtipedge_c.so" "$PREFIX/lib/libtipedge_c.so"
install -m 0644 "$out/libtipedge_c.a" "$PREFIX/lib/libtipedge_c.a"
# The release profile keeps debug info (for profiling); the installed libraries do not.
STRIP=${STRIP:-strip}
"$STRIP" --strip-debug "$PREFIX/lib/libtipedge_c.so" "$PREFIX/lib/libtipedge_c.a"
# What a static link needs besides the archive (rustc --print native-static-libs).
private="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
cat > "$PREFIX/lib/pkgconfig/tipedge.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: tipedge
Description: few-shot-adapted CLIP classification of camera frames (C ABI)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -ltipedge_c
Libs.private: $private
PC
cat > "$PREFIX/lib/cmake/tipedge/tipedgeConfig.cmake" <<CM
# find_package(tipedge) for tipedge $version: the imported target tipedge::tipedge (shared
# library) and tipedge::tipedge_static.
get_filename_component(_tipedge_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET tipedge::tipedge)
  add_library(tipedge::tipedge SHARED IMPORTED)
  set_target_properties(tipedge::tipedge PROPERTIES
    IMPORTED_LOCATION "\${_tipedge_prefix}/lib/libtipedge_c.so"
    INTERFACE_INCLUDE_DIRECTORIES "\${_tipedge_prefix}/include")
  add_library(tipedge::tipedge_static STATIC IMPORTED)
  set_target_properties(tipedge::tipedge_static PROPERTIES
    IMPORTED_LOCATION "\${_tipedge_prefix}/lib/libtipedge_c.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_tipedge_prefix}/include"
    INTERFACE_LINK_LIBRARIES "gcc_s;util;rt;pthread;m;dl;c")
endif()
set(tipedge_VERSION $version)
set(tipedge_FOUND TRUE)
CM
echo "installed tipedge $version under $PREFIX"
