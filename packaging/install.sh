#!/bin/sh
# taskmux installer:  curl -fsSL https://github.com/OWNER/REPO/releases/latest/download/install.sh | sh
#
# Installs the latest signed taskmux release into $TASKMUX_HOME/app (default ~/.taskmux/app):
# each version in its own virtual environment under app/versions/, `current` pointing at the
# one in use, `taskmuxctl` and `taskmux` on PATH through shims that run `current`. The release
# is verified exactly as updates are: its manifest's Ed25519 signature against the keys pinned
# below (by the same code, inlined further down), then the package's size and sha256.
# Re-running it repairs what is missing and updates to the latest release.
#
# Settings (environment):
#   TASKMUX_HOME             state directory (default ~/.taskmux)
#   TASKMUX_BIN_DIR          where the shims go (default ~/.local/bin)
#   TASKMUX_PYTHON           the Python (3.11+) to build on (default: the newest python3.x)
#   TASKMUX_RELEASE_URL      the release.json to install from
#   TASKMUX_TRUSTED_KEYS     extra Ed25519 public keys (base64) to trust, for forks
#   TASKMUX_INSTALL_SERVICE  yes | no | ask (default ask when there is a terminal, else no)
#   TASKMUX_AUTO_UPDATE      1 to let the daemon install new releases by itself
#
# This file is a template in the repository; `packaging/release.py` fills in the release URL,
# the pinned keys and the verifier when it builds a release.
set -eu

RELEASE_URL="${TASKMUX_RELEASE_URL:-__TASKMUX_RELEASE_URL__}"
PINNED_KEYS="__TASKMUX_PINNED_KEYS__"
TMX_HOME="${TASKMUX_HOME:-$HOME/.taskmux}"
BIN_DIR="${TASKMUX_BIN_DIR:-$HOME/.local/bin}"
SERVICE="${TASKMUX_INSTALL_SERVICE:-ask}"
APP="$TMX_HOME/app"

say() { printf 'taskmux: %s\n' "$*" >&2; }
die() { printf 'taskmux: error: %s\n' "$*" >&2; exit 1; }

case "$RELEASE_URL" in
  __TASKMUX_*) die "this is the install.sh template; run the install.sh attached to a release" ;;
esac

# -- requirements -----------------------------------------------------------------------------
find_python() {
  for candidate in ${TASKMUX_PYTHON:-} python3.13 python3.12 python3.11 python3; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    if "$path" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      printf '%s\n' "$path"
      return 0
    fi
  done
  return 1
}
PYTHON=$(find_python) || die "taskmux needs Python 3.11 or newer: install it (Debian/Ubuntu: \
apt install python3 python3-venv; macOS: brew install python) or set TASKMUX_PYTHON"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON cannot create virtual \
environments: install its venv module (Debian/Ubuntu: apt install python3-venv)"
command -v tmux >/dev/null 2>&1 || die "taskmux runs tasks in tmux, which is not installed: \
install it (Debian/Ubuntu: apt install tmux; macOS: brew install tmux)"
say "using $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])')), $(tmux -V)"

umask 077
mkdir -p "$APP"
TMP=$(mktemp -d "$APP/.install.XXXXXX")
BOOT="$TMP/bootstrap"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

# -- a trusted taskmux to install with --------------------------------------------------------
# The installed current version is trusted already; without one (a first install, or a broken
# one being repaired), verify the release here and run the installer from the verified package.
if [ -x "$APP/current/bin/python" ] && \
   "$APP/current/bin/python" -I -c 'import taskmuxctl.core.update.apply' 2>/dev/null; then
  RUNNER="$APP/current/bin/python"
  say "taskmux $(basename "$(readlink "$APP/current")") is installed; checking for a newer release"
else
  say "fetching and verifying $RELEASE_URL"
  # A throwaway environment. Made without ensurepip, which runs pip from its zipped wheel and
  # so compiles all of pip, for seconds of CPU: the interpreter's own pip wheel (the one
  # ensurepip would install) unpacked into it serves as well. Failing that, the ordinary way.
  if ! { "$PYTHON" -m venv --without-pip "$BOOT" && "$BOOT/bin/python" -I - <<'PIPEOF'
import ensurepip, glob, os, sys, sysconfig, zipfile
for folder in (os.path.join(os.path.dirname(ensurepip.__file__), "_bundled"),
               "/usr/share/python-wheels"):
    wheels = sorted(glob.glob(os.path.join(folder, "pip-*.whl")))
    if wheels:
        zipfile.ZipFile(wheels[-1]).extractall(sysconfig.get_paths()["purelib"])
        __import__("importlib").invalidate_caches()
        import pip  # noqa: F401
        sys.exit(0)
sys.exit(1)
PIPEOF
  } 2>/dev/null; then
    rm -rf "$BOOT"
    "$PYTHON" -m venv "$BOOT" || die "could not create a virtual environment with $PYTHON"
  fi
  "$BOOT/bin/python" -m pip install -q --disable-pip-version-check cryptography \
    || die "could not install cryptography (needed to check the release signature)"
  # The verifier, identical to taskmuxctl/core/update/release.py: signature, size, sha256.
  # shellcheck disable=SC2086
  VERIFIED=$("$BOOT/bin/python" - "$RELEASE_URL" "$TMP" $PINNED_KEYS <<'PYEOF'
# @@RELEASE_PY@@
PYEOF
  ) || die "the release did not verify; nothing was installed"
  WHEEL=$(printf '%s' "$VERIFIED" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["path"])')
  WHEEL_NAME=$(printf '%s' "$VERIFIED" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["file"])')
  mv "$WHEEL" "$TMP/$WHEEL_NAME"
  # Without its dependencies: installing runs only taskmuxctl.core.update, which needs nothing
  # beyond the standard library and cryptography (the version it installs gets them all).
  "$BOOT/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$TMP/$WHEEL_NAME" \
    || die "could not install the verified package"
  RUNNER="$BOOT/bin/python"
fi

# -- install into the versioned layout (the same code as `taskmuxctl update`) -----------------
TASKMUX_HOME="$TMX_HOME" "$RUNNER" -I -m taskmuxctl.core.update install --channel "$RELEASE_URL" \
  >"$TMP/result.json" || die "installing taskmux failed (see the messages above)"
CURRENT=$(basename "$(readlink "$APP/current")")

# -- shims on PATH ----------------------------------------------------------------------------
mkdir -p "$BIN_DIR"
for name in taskmuxctl taskmux; do
  shim="$BIN_DIR/$name"
  tmp_shim="$shim.tmp.$$"
  cat >"$tmp_shim" <<EOF
#!/bin/sh
# taskmux shim written by install.sh: runs the installed current version.
TASKMUX_HOME="\${TASKMUX_HOME:-$TMX_HOME}"; export TASKMUX_HOME
exec "$APP/current/bin/python" -I -c 'import sys; sys.argv[0] = "$name"; from taskmuxctl.cli import main; sys.exit(main())' "\$@"
EOF
  chmod 755 "$tmp_shim"
  mv -f "$tmp_shim" "$shim"
done
CTL="$BIN_DIR/taskmuxctl"
"$CTL" --no-daemon-start version >/dev/null || die "the installed taskmuxctl does not run"

if [ "${TASKMUX_AUTO_UPDATE:-}" = 1 ]; then
  "$CTL" config set release_url "$RELEASE_URL" >/dev/null
  "$CTL" config set auto_update true >/dev/null
  say "auto-update is on: the daemon installs new releases by itself"
fi

say "taskmux $CURRENT is installed in $APP/versions/$CURRENT"
case ":$PATH:" in
  *":$BIN_DIR:"*) ;;
  *) say "add $BIN_DIR to your PATH, e.g.: echo 'export PATH=\"$BIN_DIR:\$PATH\"' >> ~/.profile" ;;
esac

# -- the service ------------------------------------------------------------------------------
if "$CTL" daemon install --help >/dev/null 2>&1; then
  if [ "$SERVICE" = ask ]; then
    SERVICE=no
    if (exec </dev/tty) 2>/dev/null; then
      printf 'taskmux: run the daemon as a service (starts at boot, restarts on failure)? [Y/n] ' >&2
      read -r answer </dev/tty || answer=n
      case "$answer" in [nN]*) ;; *) SERVICE=yes ;; esac
    fi
  fi
  if [ "$SERVICE" = yes ]; then
    "$CTL" daemon install || die "installing the service failed; run \`taskmuxctl daemon install\` again to retry"
  else
    say "install the service later with: taskmuxctl daemon install"
  fi
else
  say "start the daemon with: taskmuxctl daemon start"
fi
