#!/bin/sh
# Builds the Debian package: build-deb/tokenaudit_<version>_<arch>.deb
# (Release build, CPack; cmake/Packaging.cmake says what goes in it).
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-deb -j"$(nproc)" --target tokenauditd tokenaudit
(cd build-deb && cpack -G DEB >/dev/null)
ls build-deb/tokenaudit_*.deb
