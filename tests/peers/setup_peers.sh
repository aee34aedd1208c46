#!/usr/bin/env bash
# Install the real uTP peers used by the interoperability tests, from the package
# registries only, and check that each one loads. Idempotent: a peer that is already
# installed at the pinned version is left alone.
#
#   tests/peers/setup_peers.sh [PYTHON]
#
# PYTHON is the interpreter of the environment that runs the tests (default: the
# project's .venv/bin/python). Installs:
#
#   * npm  utp-native 2.5.3 (libutp inside; prebuilt linux-x64 N-API binary, no compiler)
#          into tests/peers/node/node_modules, from tests/peers/node/package-lock.json
#          (`npm ci`; `npm install` only when the lock file is missing);
#   * PyPI libtorrent 2.1.1 (libtorrent-rasterbar's own uTP, independent of libutp)
#          into PYTHON's environment.
#
# Any peer that cannot be installed or loaded makes the script exit non-zero with a
# message naming what is missing. It never skips a peer silently.
set -euo pipefail

UTP_NATIVE_VERSION=2.5.3
LIBTORRENT_VERSION=2.1.1

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
node_dir="$here/node"
python=${1:-$root/.venv/bin/python}

fail() {
    echo "setup_peers: ERROR: $*" >&2
    exit 1
}

# --------------------------------------------------------------------- utp-native (npm)
command -v node >/dev/null 2>&1 || fail "node is not installed: it is needed to run the utp-native peer"
command -v npm >/dev/null 2>&1 || fail "npm is not installed: it is needed to install utp-native $UTP_NATIVE_VERSION"

utp_native_ok() {
    (cd "$node_dir" && node -e '
        const want = process.argv[1];
        const pkg = require("utp-native/package.json");
        if (pkg.version !== want) { console.error("utp-native " + pkg.version + " found, " + want + " wanted"); process.exit(1); }
        const utp = require("utp-native");
        if (typeof utp.createServer !== "function") process.exit(1);
    ' "$UTP_NATIVE_VERSION") >/dev/null 2>&1
}

if utp_native_ok; then
    echo "setup_peers: utp-native $UTP_NATIVE_VERSION already installed"
else
    echo "setup_peers: installing utp-native $UTP_NATIVE_VERSION (npm) into $node_dir"
    # --ignore-scripts: the package's install script would only try to compile libutp
    # when no prebuilt binary fits; the load check below tells us if that happens.
    if [[ -f "$node_dir/package-lock.json" ]]; then
        (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund) \
            || fail "npm ci failed: could not install utp-native $UTP_NATIVE_VERSION from the npm registry"
    else
        (cd "$node_dir" && npm install --ignore-scripts --no-audit --no-fund "utp-native@$UTP_NATIVE_VERSION") \
            || fail "npm install failed: could not install utp-native $UTP_NATIVE_VERSION from the npm registry"
    fi
    if ! utp_native_ok; then
        (cd "$node_dir" && node -e 'require("utp-native")') >&2 || true
        fail "utp-native $UTP_NATIVE_VERSION is installed but does not load (no prebuilt binary for $(node -p 'process.platform + "-" + process.arch')?)"
    fi
    echo "setup_peers: utp-native $UTP_NATIVE_VERSION OK"
fi

# --------------------------------------------------------------------- libtorrent (PyPI)
[[ -x "$python" ]] || fail "python interpreter '$python' not found (create the venv first, e.g. ./run-tests.sh, or pass one)"

libtorrent_ok() {
    "$python" - "$LIBTORRENT_VERSION" >/dev/null 2>&1 <<'EOF'
import sys
import libtorrent
want = sys.argv[1]
if not libtorrent.__version__.startswith(want + "."):
    sys.exit(1)
EOF
}

if libtorrent_ok; then
    echo "setup_peers: libtorrent $LIBTORRENT_VERSION already installed"
else
    echo "setup_peers: installing libtorrent $LIBTORRENT_VERSION (PyPI) with $python"
    "$python" -m pip install --quiet --disable-pip-version-check "libtorrent==$LIBTORRENT_VERSION" \
        || fail "pip could not install libtorrent==$LIBTORRENT_VERSION from PyPI (no wheel for this Python/platform?)"
    if ! libtorrent_ok; then
        "$python" -c 'import libtorrent; print(libtorrent.__version__)' >&2 || true
        fail "libtorrent $LIBTORRENT_VERSION is installed but does not import in $python"
    fi
    echo "setup_peers: libtorrent $LIBTORRENT_VERSION OK"
fi
echo "setup_peers: all peers ready"
