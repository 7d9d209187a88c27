"""Every way a release can be wrong is refused before the switch, and nothing changes: not the
installed versions, not ``current``, not the running daemon."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from taskmuxctl.core.protocol import Code
from taskmuxctl.core.update import release as rel
from tests.fakegithub import Fault
from tests.update_fixtures import BASE, BROKEN_PREFLIGHT, GOOD, Installed

pytestmark = pytest.mark.timeout(360)  # the first one may wait for the shared builds

WHEEL = f"taskmux-{GOOD}-py3-none-any.whl"


def _wrong_sha(inst: Installed) -> None:
    inst.publish(GOOD, edit=lambda m: m.update(sha256="0" * 64))


def _bad_signature(inst: Installed) -> None:
    inst.publish(GOOD)
    sig = bytearray(inst.gh.releases[max(inst.gh.releases)].assets["release.json.sig"])
    sig[10] ^= 0x01
    inst.gh.releases[max(inst.gh.releases)].assets["release.json.sig"] = bytes(sig)


def _missing_signature(inst: Installed) -> None:
    inst.publish(GOOD, signature=False)


def _wrong_key(inst: Installed) -> None:
    inst.publish(GOOD, sign_with=Ed25519PrivateKey.generate())


def _tampered_manifest(inst: Installed) -> None:
    inst.publish(GOOD)
    release = inst.gh.releases[max(inst.gh.releases)]
    release.assets["release.json"] = release.assets["release.json"].replace(b"1.1.0", b"1.1.9")


def _truncated(inst: Installed) -> None:
    inst.publish(GOOD)
    inst.gh.faults[WHEEL] = Fault(truncate=4096)


def _oversize(inst: Installed) -> None:
    inst.publish(GOOD)
    body = inst.gh.releases[max(inst.gh.releases)].assets[WHEEL]
    inst.gh.faults[WHEEL] = Fault(replace=body + b"\0" * 100_000)


def _oversize_manifest(inst: Installed) -> None:
    inst.publish(GOOD, edit=lambda m: m.update(size=rel.MAX_PACKAGE_BYTES + 1))


def _stalls(inst: Installed) -> None:
    inst.publish(GOOD)
    inst.gh.faults[WHEEL] = Fault(stall=60)


def _downgrade(inst: Installed) -> None:
    inst.gh.publish("0.9.0", inst.builds.wheels[BASE], inst.key)


def _preflight_fails(inst: Installed) -> None:
    inst.publish(BROKEN_PREFLIGHT)


CASES: dict[str, tuple[Callable[[Installed], None], int, str]] = {
    "wrong-sha256": (_wrong_sha, Code.UPDATE_UNVERIFIED, "does not match the sha256"),
    "bad-signature": (_bad_signature, Code.UPDATE_UNVERIFIED, "not signed by a trusted key"),
    "missing-signature": (_missing_signature, Code.UPDATE_UNVERIFIED, "no signature"),
    "wrong-key": (_wrong_key, Code.UPDATE_UNVERIFIED, "not signed by a trusted key"),
    "tampered-manifest": (_tampered_manifest, Code.UPDATE_UNVERIFIED,
                          "not signed by a trusted key"),
    "truncated": (_truncated, Code.UPDATE_DOWNLOAD_FAILED, "ended after 4096 of"),
    "oversize": (_oversize, Code.UPDATE_UNVERIFIED, "the manifest says"),
    "oversize-manifest": (_oversize_manifest, Code.UPDATE_UNVERIFIED, "more than the"),
    "timeout": (_stalls, Code.UPDATE_DOWNLOAD_FAILED, "took longer than 2s"),
    "downgrade": (_downgrade, Code.UPDATE_REFUSED, "refusing to downgrade"),
    "preflight": (_preflight_fails, Code.UPDATE_INSTALL_FAILED, "taskmuxd version"),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "preflight"
                                  else c for c in CASES])
def test_refused_and_nothing_changed(installed: Installed, case: str) -> None:
    setup, code, message = CASES[case]
    assert installed.ctl("daemon", "start").returncode == 0
    pid = installed.daemon_pid()
    setup(installed)
    before = installed.snapshot()
    exit_code, out = installed.ctl_json("update", "--timeout", "2")
    assert exit_code == 1, out
    assert out["code"] == code, out
    assert message in out["error"], out["error"]
    assert installed.snapshot() == before
    assert installed.versions() == [BASE]
    assert installed.daemon_pid() == pid and installed.daemon_version() == BASE


def test_check_exit_codes_and_changes_nothing(installed: Installed) -> None:
    installed.publish(BASE)
    code, out = installed.ctl_json("update", "--check")
    assert code == 0 and out["available"] is False and out["current"] == BASE
    proc = installed.ctl("update", "--check")
    assert proc.returncode == 0 and proc.stdout.startswith("up to date: 1.0.0")
    installed.publish(GOOD)
    before = installed.snapshot()
    code, out = installed.ctl_json("update", "--check")
    assert code == 10, out
    assert (out["current"], out["offered"], out["available"]) == (BASE, GOOD, True)
    assert out["release"]["sha256"] == rel.file_sha256(installed.builds.wheels[GOOD])
    proc = installed.ctl("update", "--check")
    assert proc.returncode == 10 and "update available: 1.0.0 -> 1.1.0" in proc.stdout
    assert installed.snapshot() == before
    assert not any(WHEEL in line for line in installed.gh.log)  # never downloaded the package
    # A channel that cannot be trusted is an error, not "up to date".
    _wrong_key(installed)
    code, out = installed.ctl_json("update", "--check")
    assert code == 1 and out["code"] == Code.UPDATE_UNVERIFIED
    code, out = installed.ctl_json("update", "--check", "--channel",
                                   f"{installed.gh.base}/nowhere/release.json")
    assert code == 1 and out["code"] == Code.UPDATE_DOWNLOAD_FAILED and "404" in out["error"]


def test_update_needs_the_installed_layout(env: dict[str, str]) -> None:
    from tests.helpers import run_json

    code, out = run_json(["update", "--channel", "https://127.0.0.1:9/release.json"], env)
    assert code == 1 and out["code"] == Code.UPDATE_NOT_INSTALLED
    assert "install.sh" in out["error"]


def test_usage_errors(installed: Installed) -> None:
    for args, text in [(["--rollback", "--to", "1.0.0"], "--rollback takes no other option"),
                       (["--to", "latest"], "not a version"),
                       (["--timeout", "0"], "positive")]:
        code, out = installed.ctl_json("update", *args)
        assert code == 2 and text in out["error"], out


def test_insecure_channel_refused(installed: Installed) -> None:
    code, out = installed.ctl_json("update", "--channel", "http://example.org/release.json")
    assert code == 1 and out["code"] == Code.UPDATE_UNVERIFIED
    assert "https only" in out["error"]


def test_update_check_stays_light(env: dict[str, str]) -> None:
    """`update` may load cryptography, but not the daemon's machinery."""
    from tests.test_imports import imported_modules, top_level

    mods = top_level(imported_modules(["--json", "update", "--check", "--channel",
                                       "http://127.0.0.1:9/release.json"], env))
    assert "taskmuxctl" in mods
    assert not mods & {"asyncio", "pydantic", "libtmux", "jsonrpcserver", "tomlkit"}, mods


def test_wave_policy_and_marks_as_the_installed_client_reads_them(installed: Installed) -> None:
    """``auto_update = "wave"`` in config.toml holds a fresh release back from ``update
    --auto`` (and the daemon's check) for ``update_wave_delay`` seconds after its signed
    ``created`` time; ``update --mark-bad`` holds one back for good. Nothing is installed."""
    import os
    import time

    from taskmuxctl.core.update import bootguard

    inst = installed
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    inst.publish(GOOD, edit=lambda m: m.update(created=stamp))
    config = os.path.join(inst.home, "config.toml")
    with open(config, "a") as fh:
        fh.write('auto_update = "wave"\nupdate_wave_delay = 3600\n')
    code, out = inst.ctl_json("update", "--check", "--auto")
    assert code == 0 and out["available"] is False, out
    assert "after 1h (update_wave_delay), in 59m" in out["reason"] or \
        "after 1h (update_wave_delay), in 60m" in out["reason"], out["reason"]
    code, out = inst.ctl_json("update", "--auto")
    assert code == 0 and out["action"] == "none" and inst.current() == BASE
    code, out = inst.ctl_json("update", "--check")  # an explicit update does not wait
    assert code == 10 and out["available"] is True
    # The daemon's own auto-update check follows the same policy.
    from tests.helpers import call

    assert inst.ctl("daemon", "start").returncode == 0
    sock = os.path.join(inst.home, "ctl.sock")
    checked = call(sock, "update.check")
    assert checked["available"] is False and "update_wave_delay" in checked["reason"]
    status = call(sock, "update.status")
    assert status["auto_update"] == "wave" and status["wave_delay"] == 3600
    assert "auto-update in waves (after 3600s)" in status["summary"]
    with open(config) as fh:
        text = fh.read().replace("update_wave_delay = 3600", "update_wave_delay = 0")
    with open(config, "w") as fh:
        fh.write(text)
    code, out = inst.ctl_json("update", "--check", "--auto")
    assert code == 10 and out["available"] is True, out

    code, out = inst.ctl_json("update", "--mark-bad", GOOD, "--reason", "broke the canary")
    assert code == 0 and out["bad_versions"] == [GOOD]
    assert bootguard.bad_versions(inst.app)[GOOD]["reason"] == "broke the canary"
    code, out = inst.ctl_json("update", "--check", "--auto")
    assert code == 0 and out["available"] is False and "marked bad" in out["reason"]
    code, out = inst.ctl_json("update")
    assert code == 1 and out["code"] == Code.UPDATE_REFUSED and f"--to {GOOD}" in out["error"]
    for argv in (["--mark-bad", "nope"], ["--mark-bad", GOOD, "--auto"], ["--reason", "x"]):
        code, out = inst.ctl_json("update", *argv)
        assert code == 2 and out["kind"] == "usage", (argv, out)
    assert inst.current() == BASE and inst.versions() == [BASE]
