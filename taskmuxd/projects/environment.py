"""A task's environment, built rather than inherited: the caller's environment (the shell
that ran ``taskmux start``), then ``env_file``, then ``env``, then ``PORT``. python-dotenv is
loaded with the first ``env_file`` read, not with the daemon."""

from __future__ import annotations

import io

_DROP = ("TMUX", "TMUX_PANE", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
         "LISTEN_PID", "INVOCATION_ID", "JOURNAL_STREAM", "_ARGCOMPLETE")


def parse_dotenv(text: str) -> dict[str, str]:
    """An ``env_file``, read by python-dotenv (the library whose format people write):
    ``export``, comments, single quotes (literal), double quotes (backslash escapes, values
    over several lines). Values are taken as written: ``${VAR}`` is not expanded. A bare
    ``KEY`` with no ``=`` sets nothing."""
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


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
