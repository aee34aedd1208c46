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
#          into PYTHON's environment;
#   * libutp's own `ucat`, the benchmark anchor (bench/suite.py), built from the libutp source
#          that utp-native ships (node_modules/utp-native/deps/libutp: Makefile, ucat.c) with
#          libutp's Makefile, out of tree: the source is copied to tests/peers/build/libutp/src
#          (git-ignored; UCAT_BUILD_DIR overrides tests/peers/build/libutp) and built there;
#          its `ucat-static` target is installed as build/libutp/ucat, next to ucat_shim.so
#          (from tests/peers/ucat_shim.c, an LD_PRELOAD library: socket buffers and timestamps,
#          see tests/peers/ucat.py). Needs make, a C and a C++ compiler; rebuilt only when the
#          sources (or this recipe) changed.
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
# --------------------------------------------------------------------- libutp's ucat (built)
UCAT_RECIPE=1  # bump when the build commands below change
libutp_src="$node_dir/node_modules/utp-native/deps/libutp"
ucat_dir=${UCAT_BUILD_DIR:-$here/build/libutp}

ucat_stamp() {
    # What the build is made from: libutp's files, the shim's source and the recipe.
    {
        (cd "$libutp_src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        sha256sum <"$here/ucat_shim.c"
        echo "recipe $UCAT_RECIPE"
    } | sha256sum | cut -d' ' -f1
}

ucat_ok() {
    local out rc=0
    out=$(LD_PRELOAD="$ucat_dir/ucat_shim.so" "$ucat_dir/ucat" -h 2>&1) || rc=$?
    [[ $rc -eq 1 && $out == *Usage:* && $out == *ucat-shim* ]]
}

[[ -f "$libutp_src/Makefile" && -f "$libutp_src/ucat.c" ]] \
    || fail "libutp's source is missing from utp-native ($libutp_src: Makefile, ucat.c); reinstall it (rm -rf $node_dir/node_modules)"
if [[ -x "$ucat_dir/ucat" && -f "$ucat_dir/ucat_shim.so" && -f "$ucat_dir/SOURCE.sha256" ]] \
    && [[ "$(cat "$ucat_dir/SOURCE.sha256")" == "$(ucat_stamp)" ]] && ucat_ok; then
    echo "setup_peers: libutp's ucat already built in $ucat_dir"
else
    command -v make >/dev/null 2>&1 || fail "make is not installed: it is needed to build libutp's ucat (the benchmark anchor) from $libutp_src"
    cc=$(command -v cc || command -v gcc) || fail "no C compiler (cc or gcc): it is needed to build libutp's ucat and tests/peers/ucat_shim.c"
    cxx=$(command -v c++ || command -v g++) || fail "no C++ compiler (c++ or g++): it is needed to build libutp (from $libutp_src)"
    echo "setup_peers: building libutp's ucat from $libutp_src in $ucat_dir"
    rm -rf "$ucat_dir/src" "$ucat_dir/ucat" "$ucat_dir/ucat_shim.so" "$ucat_dir/SOURCE.sha256"
    mkdir -p "$ucat_dir"
    cp -R "$libutp_src" "$ucat_dir/src"
    # libutp's Makefile as shipped (OPT=-O3; it names gcc/g++, so pass the compilers found).
    make -C "$ucat_dir/src" CC="$cc" CXX="$cxx" all >"$ucat_dir/build.log" 2>&1 \
        || { tail -n 30 "$ucat_dir/build.log" >&2; fail "make failed building libutp's ucat (log: $ucat_dir/build.log)"; }
    "$cc" -O2 -Wall -shared -fPIC -o "$ucat_dir/ucat_shim.so" "$here/ucat_shim.c" -ldl >>"$ucat_dir/build.log" 2>&1 \
        || { tail -n 30 "$ucat_dir/build.log" >&2; fail "could not build $here/ucat_shim.c (log: $ucat_dir/build.log)"; }
    cp "$ucat_dir/src/ucat-static" "$ucat_dir/ucat"
    ucat_ok || fail "the ucat built in $ucat_dir does not run (\`ucat -h\` with the shim preloaded)"
    ucat_stamp >"$ucat_dir/SOURCE.sha256"
    echo "setup_peers: libutp's ucat OK ($ucat_dir/ucat)"
fi
echo "setup_peers: all peers ready"
