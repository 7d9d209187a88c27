"""A task's environment, built rather than inherited: the caller's environment (the shell
that ran ``taskmux start``), then ``env_file``, then ``env``, then ``PORT``."""

from __future__ import annotations

import re

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_DROP = ("TMUX", "TMUX_PANE", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
         "LISTEN_PID", "INVOCATION_ID", "JOURNAL_STREAM", "_ARGCOMPLETE")


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments, ``export``, single and double quotes (with
    backslash escapes and ``${VAR}`` left as written inside single quotes)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        m = _LINE.match(raw)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = (value.replace("\\n", "\n").replace("\\t", "\t")
                         .replace('\\"', '"').replace("\\\\", "\\"))
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key] = value
    return out


def build(base: dict[str, str], env_file_text: str | None, env: dict[str, str],
          port: int | None, extra: dict[str, str]) -> dict[str, str]:
    result = {k: v for k, v in base.items() if k not in _DROP}
    if env_file_text is not None:
        result.update(parse_dotenv(env_file_text))
    result.update(env)
    if port is not None:
        result["PORT"] = str(port)
    result.update(extra)
    return result
