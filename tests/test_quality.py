"""The quality gates run with the suite: ruff and mypy (strict) must be clean."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import BIN, REPO


def test_ruff_clean() -> None:
    proc = subprocess.run([f"{BIN}/ruff", "check", "taskmuxd", "taskmuxctl", "tests", "bench",
                           "packaging"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow(30)
def test_mypy_strict_clean() -> None:
    proc = subprocess.run([f"{BIN}/mypy"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
