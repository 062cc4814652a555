#!/bin/sh
# Quick start: install what is missing, build, create ./data with a first
# superadmin on the first run (its password is printed once), and start the
# gateway on 127.0.0.1:8080 in the foreground (Ctrl-C stops it cleanly).
set -eu
cd "$(dirname "$0")/.."
sh etc/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
DATA_DIR=${TOKENAUDIT_DATA_DIR:-./data}
if [ ! -d "$DATA_DIR" ]; then
    build/tokenaudit init --data-dir "$DATA_DIR" --admin-email "${ADMIN_EMAIL:-admin@example.com}"
fi
export TOKENAUDIT_DATA_DIR="$DATA_DIR"
export TOKENAUDIT_LISTEN="${TOKENAUDIT_LISTEN:-127.0.0.1:8080}"
echo "tokenaudit listening on http://$TOKENAUDIT_LISTEN (data in $DATA_DIR)"
exec build/tokenauditd -c etc/tokenaudit.conf
