"""Self-update from signed releases: check, download, verify, install, switch, roll back.

Only ``taskmuxctl update``, the daemon's auto-update loop and ``install.sh`` import this
package; it may use ``cryptography`` (inside functions), so the client's hot path never loads it.
Modules: ``release`` (the signed manifest and the download), ``decide`` (the pure decision),
``layout`` (``app/``: versions, ``current``/``previous``, state), ``bootguard`` (the launcher that
undoes a release that cannot start), ``install`` (a version's virtual environment and
preflight), ``restart`` (bouncing the daemon), ``apply`` (the whole update), ``keys``, ``lock``,
``progress`` (what each step reports).
"""

# The project's GitHub repository is not settled yet: this is where the release workflow
# publishes once it is (change it here and in install.sh together).
DEFAULT_RELEASE_URL = "https://github.com/taskmux/taskmux/releases/latest/download/release.json"
