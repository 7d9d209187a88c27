"""``python -m taskmuxctl.core.update install [--channel URL]``: the first install, for install.sh.

install.sh runs this from a bootstrap environment holding a release it has already verified;
it installs the latest release into ``$TASKMUX_HOME/app`` exactly as an update would (and, when
taskmux is installed already, updates it: re-running the installer converges). Trusted keys:
the pinned ones, ``trusted_keys`` from config.toml, and ``$TASKMUX_TRUSTED_KEYS``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _setting(config: str, key: str, default: Any) -> Any:
    """One key of config.toml (tomllib only; an unreadable file gives the default)."""
    import tomllib

    try:
        with open(config, "rb") as fh:
            return tomllib.load(fh).get(key, default)
    except (OSError, tomllib.TOMLDecodeError):
        return default


def main(argv: list[str]) -> int:
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.result import CommandError
    from taskmuxctl.core.update import DEFAULT_RELEASE_URL, apply, progress
    from taskmuxctl.core.update.keys import trusted_keys

    if argv[:1] != ["install"] or len(argv) not in (1, 3) or (len(argv) == 3
                                                            and argv[1] != "--channel"):
        print("usage: python -m taskmuxctl.core.update install [--channel URL]", file=sys.stderr)
        return 2
    paths = Paths.from_env()
    channel = argv[2] if len(argv) == 3 else str(_setting(paths.config, "release_url",
                                                          DEFAULT_RELEASE_URL))
    extra = _setting(paths.config, "trusted_keys", [])
    extra = list(extra) if isinstance(extra, list) else []
    extra += os.environ.get("TASKMUX_TRUSTED_KEYS", "").replace(",", " ").split()
    paths.ensure()
    progress.add_sink(progress.event_log_sink(paths.events))
    progress.add_sink(lambda event, details: print(f"  {event} {json.dumps(details)}",
                                                 file=sys.stderr))
    try:
        opts = apply.Options(channel=channel, keys=trusted_keys(extra))
        result = apply.update(paths, opts, first_install=True)
        result["repaired"] = apply.repair(paths)
    except (CommandError, ValueError) as exc:
        print(f"taskmux install: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
