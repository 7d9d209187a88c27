#!/bin/sh
# The taskmux demo, from a fresh clone: install taskmux into .venv, start the daemon, start the
# example project in examples/demo (an API, a web page, a worker, a task that crashes now and
# then), and show its status with URLs. Re-running it is safe.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

command -v tmux >/dev/null 2>&1 || {
  echo "taskmux runs tasks in tmux, which is not installed: install it (apt install tmux," \
       "brew install tmux) and run this again" >&2
  exit 1
}
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e .
taskmux="$repo/.venv/bin/taskmux"

# Ports 443 and 80 need root. Without it, use unprivileged ones (unless already configured).
if [ "$(id -u)" != 0 ]; then
  config=$("$taskmux" config path)
  grep -q '^proxy_https_port' "$config" 2>/dev/null ||
    "$taskmux" config set proxy_https_port 8443 >/dev/null
  grep -q '^proxy_http_redirect_port' "$config" 2>/dev/null ||
    "$taskmux" config set proxy_http_redirect_port 8080 >/dev/null
  grep -q '^host_resolver' "$config" 2>/dev/null ||
    "$taskmux" config set host_resolver noop >/dev/null  # *.localhost resolves by itself
fi

"$taskmux" daemon start  # as root, it says once what that means and how to run as a user
cd examples/demo
"$taskmux" start
echo
"$taskmux" status
web=$("$taskmux" url web)
echo
sh "$repo/examples/put-on-path.sh" "$taskmux"
cat <<NEXT

The demo runs. Try, from examples/demo:
  taskmux logs -f            follow every task's log (Ctrl-C to stop)
  taskmux attach web         see the web task live in tmux (Ctrl-b d to detach)
  taskmux restart api        restart one task; the worker and web keep running
  taskmux events             what happened: starts, crashes, restarts, health
  curl -k $web    the web page through taskmux's HTTPS proxy
  taskmux ca install         trust taskmux's local CA so browsers accept $web
  taskmux stop               stop the demo's tasks (the daemon keeps running)
NEXT
