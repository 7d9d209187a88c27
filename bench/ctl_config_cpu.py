"""CPU (user + system) of the taskmuxctl commands that read taskmux.toml or the settings, each
next to the same command at a reference commit and to the ``status`` fast path, in one run.

Run by hand: `.venv/bin/python bench/ctl_config_cpu.py [--runs N] [--ref COMMIT]`. The
reference tree (``git archive COMMIT``; default: the commit where this work started) is
unpacked into a temporary folder; both trees run through the same one-line shim with
PYTHONPATH naming their root, interleaved run by run so that drift in the machine's load hits
both alike. No daemon runs (``--no-daemon-start``): these figures are the client's own work.
CPU comes from ``wait4``'s rusage of the command's process, not wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BENCH_CONFIG, PYTHON

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "dea6084"  # main when this bench was written: the figure before the speed-up
SHIM = "import sys; from taskmuxctl.cli import main; sys.exit(main())"

PROJECT = """\
name = "shop"

[tasks.db]
command = "sleep 100"
health_check = "true"

[tasks.migrate]
command = "true"
type = "oneshot"
depends_on = ["db"]

[tasks.web]
command = "python3 -m http.server"
host = "@"
depends_on = { migrate = "completed_successfully", db = { condition = "healthy", restart = true } }
"""

# (label, folder ("proj" or "init"), argv after the global flags)
CASES: list[tuple[str, str, list[str]]] = [
    ("status (fast path)", "proj", ["status"]),
    ("--help", "proj", ["--help"]),
    ("check", "proj", ["check"]),
    ("config show", "proj", ["config", "show"]),
    ("config set", "proj", ["config", "set", "log_level", "info"]),
    ("init --defaults --force", "init", ["init", "--defaults", "--force"]),
    ("inject", "proj", ["inject"]),
    ("inject --print", "proj", ["inject", "--print"]),
    ("add", "proj", ["add", "extra", "true"]),
    ("remove", "proj", ["remove", "extra"]),
    ("doctor", "proj", ["doctor"]),
    ("dns install (noop)", "proj", ["dns", "install"]),
    ("update --check", "proj", ["update", "--check", "--channel", "https://127.0.0.1:9/release.json"]),
]


def cpu_of(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    """Seconds of CPU (user + system) the command's process used."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here; keep Popen from waiting again
    return usage.ru_utime + usage.ru_stime


def reference_tree(commit: str, into: str) -> str:
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "taskmuxctl", "taskmuxd"],
                             check=True, capture_output=True).stdout
    os.makedirs(into)
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--ref", default=BASE, help="the reference commit (default %(default)s)")
    parser.add_argument("--only", nargs="*", help="labels of the cases to run (default: all)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tmxcfgcpu-", dir="/tmp")
    try:
        ref = reference_tree(args.ref, os.path.join(work, "ref"))
        trees = {"now": ROOT, "ref": ref}
        for tree in trees.values():
            subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(tree, "taskmuxctl"),
                            os.path.join(tree, "taskmuxd")], check=True,
                           stdout=subprocess.DEVNULL)
        home = os.path.join(work, "home")
        folders = {"proj": os.path.join(work, "proj"), "init": os.path.join(work, "init")}
        for path in (home, *folders.values()):
            os.makedirs(path)
        with open(os.path.join(home, "config.toml"), "w", encoding="utf-8") as fh:
            fh.write(BENCH_CONFIG)
        with open(os.path.join(folders["proj"], "taskmux.toml"), "w", encoding="utf-8") as fh:
            fh.write(PROJECT)
        with open(os.path.join(folders["init"], "Procfile"), "w", encoding="utf-8") as fh:
            fh.write("web: python3 -m http.server $PORT\nworker: sleep 1000\n")
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("TASKMUX_", "PYTHON"))}
        base_env["TASKMUX_HOME"] = home
        envs = {name: {**base_env, "PYTHONPATH": tree} for name, tree in trees.items()}
        cases = [c for c in CASES if not args.only or c[0] in args.only]
        samples: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs + 1):  # the first round warms caches and is not counted
            for name in trees:  # each tree runs `add` then `remove` in turn
                for label, folder, argv in cases:
                    cpu = cpu_of([PYTHON, "-c", SHIM, "--no-daemon-start", *argv],
                                 folders[folder], envs[name])
                    if run:
                        samples.setdefault((label, name), []).append(cpu)
        status = median(samples[("status (fast path)", "now")]) * 1000
        print(f"CPU (user+sys) per process, median of {args.runs} runs; ref = {args.ref}")
        print(f"  {'command':<26} {'ref ms':>8} {'now ms':>8} {'now/ref':>8} {'now/status':>11}")
        for label, _, _ in cases:
            before = median(samples[(label, "ref")]) * 1000
            after = median(samples[(label, "now")]) * 1000
            print(f"  {label:<26} {before:8.1f} {after:8.1f} {after / before:8.2f} "
                  f"{after / status:11.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
