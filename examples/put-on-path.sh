#!/bin/sh
# Make `taskmux` a command you can type: link it into ~/.local/bin when that folder is on your
# PATH, else print the one line that puts it there. A file at ~/.local/bin/taskmux is replaced
# only when it is a link to some clone's .venv/bin/taskmux (one this script made).
# Usage: sh examples/put-on-path.sh /path/to/.venv/bin/taskmux
set -eu
target=$1
bindir="$HOME/.local/bin"
link="$bindir/taskmux"

found=$(command -v taskmux 2>/dev/null || true)
if [ "$found" = "$target" ]; then
  echo "taskmux is on your PATH: $target"
  exit 0
fi
case ":$PATH:" in
  *":$bindir:"*)
    ours=no
    if [ -L "$link" ]; then
      case "$(readlink "$link")" in */.venv/bin/taskmux) ours=yes ;; esac
    fi
    if [ "$ours" = yes ] || { [ ! -e "$link" ] && [ ! -L "$link" ]; }; then
      mkdir -p "$bindir"
      ln -sfn "$target" "$link"
      found=$(command -v taskmux 2>/dev/null || true)
      if [ "$found" = "$link" ]; then
        echo "taskmux is on your PATH: $link -> $target"
        exit 0
      fi
      echo "linked $link -> $target, but $found comes first on your PATH."
    else
      echo "$link exists and is not a link to a taskmux clone: left alone."
    fi
    ;;
esac
echo "To type taskmux by name in this shell: export PATH=\"$(dirname "$target"):\$PATH\""
