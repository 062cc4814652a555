#!/bin/sh
# Installs the Debian 12 packages tokenaudit needs to build, test and run.
# Only packages that are missing are installed; run as root (or with sudo).
set -eu
pkgs="build-essential cmake pkg-config libh2o-evloop-dev libcurl4-openssl-dev liblmdb-dev
      libjansson-dev libjwt-dev libssl-dev libcmocka-dev lmdb-utils python3 python3-h2 openssl curl
      ca-certificates chromium"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# The web console is built with Node.js and npm, and the OpenAI SDK test runs
# on them; any installed node (>= 18) will do. Chromium (above) runs the
# console's browser tests.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
