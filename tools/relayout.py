"""Move taskmux's modules to the layered layout and rewrite every reference to them.

Re-runnable: on a tree where a move is already done it is skipped, and a reference already in
its new form is left alone, so running it twice changes nothing. Run it from the repository
root (``python tools/relayout.py``; ``--check`` only reports what it would do). It is meant to
be re-run after merging branches that still import the old paths.

What it does, in order:

1. ``git mv`` each entry of ``MOVES`` (a module ``a/b.py`` or a package ``a/b/``), creating the
   new packages listed in ``NEW_PACKAGES`` first. An entry whose source is gone and whose
   target exists is done already; one whose source and target both exist is reported (a merge
   brought the old file back: move its content by hand).
2. In every tracked or new file under the source trees, ``tests/``, ``bench/``, ``packaging/``,
   ``systemd/``, ``launchd/``, ``.ci/``, ``.github/`` and the top-level ``*.md``/``*.toml``:
   - ``from pkg import mod`` where ``pkg.mod`` moved: the import names the new package, and
     when the module's own name changed, the file's uses of it (``mod.attr``) are renamed too
     (or, when that is not provably safe, it is imported ``as`` the old name);
   - dotted paths anywhere (imports, ``python -m``, ``mock.patch("pkg.mod.attr")`` strings,
     prose): ``old.mod`` → ``new.mod``, longest match first;
   - file paths (``taskmuxd/x/y.py``, ``taskmuxctl/update/``) and quoted path components
     (``"taskmuxctl", "update", "keys.py"``).
3. ``ruff check --fix --select I`` on the Python files it changed (import order).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

# old dotted path → new dotted path. A package entry moves the whole package; an entry below it
# (listed after it) moves a module inside it again.
MOVES: list[tuple[str, str]] = [
    # The shared core: both programs import it; it imports neither.
    ("taskmuxctl.protocol", "taskmuxctl.core.protocol"),
    ("taskmuxctl.paths", "taskmuxctl.core.paths"),
    ("taskmuxctl.jsonio", "taskmuxctl.core.jsonio"),
    ("taskmuxctl.rpctypes", "taskmuxctl.core.rpctypes"),
    ("taskmuxctl.pidlock", "taskmuxctl.core.pidlock"),
    ("taskmuxctl.fsutil", "taskmuxctl.core.fsutil"),
    ("taskmuxctl.diskspace", "taskmuxctl.core.diskspace"),
    ("taskmuxctl.timefmt", "taskmuxctl.core.timefmt"),
    ("taskmuxctl.suggest", "taskmuxctl.core.suggest"),
    ("taskmuxctl.render", "taskmuxctl.core.humanize"),
    ("taskmuxctl.project", "taskmuxctl.core.whichproject"),
    ("taskmuxctl.eventlog", "taskmuxctl.core.eventread"),
    ("taskmuxd.events", "taskmuxctl.core.eventlog"),
    ("taskmuxd.errors", "taskmuxctl.core.errors"),
    ("taskmuxd.settings", "taskmuxctl.core.settings"),
    ("taskmuxd.settingsfile", "taskmuxctl.core.settingsfile"),
    ("taskmuxd.projects.config", "taskmuxctl.core.projectconfig"),
    ("taskmuxd.supervisor.order", "taskmuxctl.core.taskorder"),
    ("taskmuxctl.client", "taskmuxctl.core.rpcclient"),
    ("taskmuxctl.sshhost", "taskmuxctl.core.sshchannel"),
    ("taskmuxctl.result", "taskmuxctl.core.result"),
    ("taskmuxctl.daemonctl", "taskmuxctl.core.daemonctl"),
    ("taskmuxctl.service.program", "taskmuxctl.core.daemonprogram"),
    ("taskmuxctl.update", "taskmuxctl.core.update"),
    ("taskmuxctl.update.events", "taskmuxctl.core.update.progress"),
    # Doors to the machine's own configuration, used by `taskmuxctl ca|dns install` and by the
    # daemon's privileged half alike.
    ("taskmuxd.rootfiles", "taskmuxctl.core.system.rootfiles"),
    ("taskmuxd.trust", "taskmuxctl.core.system.truststore"),
    ("taskmuxd.dns.delegation", "taskmuxctl.core.system.resolver"),
    ("taskmuxd.dns.hosts", "taskmuxctl.core.system.hostsfile"),
    ("taskmuxd.dns.names", "taskmuxctl.core.system.hostnames"),
    # Names that collided.
    ("taskmuxd.projects.launcher", "taskmuxd.projects.windowbatch"),
    ("taskmuxd.projects.launching", "taskmuxd.projects.taskstart"),
    ("taskmuxd.projects.ports", "taskmuxd.projects.portscan"),
    ("taskmuxd.projects.portclaim", "taskmuxd.projects.taskport"),
    ("taskmuxd.health", "taskmuxd.healthprobes"),
    ("taskmuxd.projects.healthwatch", "taskmuxd.projects.probeactions"),
    ("taskmuxd.lock", "taskmuxd.daemonlock"),
    ("taskmuxd.methods_daemon", "taskmuxd.handlers.daemon"),
    ("taskmuxd.methods_proxy", "taskmuxd.handlers.network"),
    ("taskmuxd.projects.methods", "taskmuxd.handlers.projects"),
    ("taskmuxd.rpc.methods", "taskmuxd.rpc.registration"),
    ("taskmuxd.rpc.server", "taskmuxd.rpc.ctlsocket"),
    ("taskmuxd.dns.server", "taskmuxd.dns.sockets"),
    ("taskmuxd.proxy.server", "taskmuxd.proxy.frontend"),
    ("taskmuxctl.mcp.server", "taskmuxctl.mcp.stdioserver"),
    ("taskmuxctl.mcp.events", "taskmuxctl.mcp.eventfeed"),
    ("taskmuxctl.eventstream", "taskmuxctl.eventfollow"),  # the daemon's is taskmuxd.eventstream
]

NEW_PACKAGES: dict[str, str] = {
    "taskmuxctl.core": (
        "The shared core of taskmux: what the daemon and the client both need.\n\n"
        "The wire protocol, the state-directory paths, the settings and taskmux.toml schemas, the\n"
        "event log, the update engine, file helpers and the doors to the machine's own\n"
        "configuration (``system``). It imports neither program (an import-linter contract in\n"
        "pyproject.toml keeps it so); see ARCHITECTURE.md.\n"),
    "taskmuxctl.core.system": (
        "Doors to the machine's own configuration: the trust store, the resolver, the hosts file,\n"
        "and the checks on files that root reads or runs.\n\n"
        "Used by ``taskmuxctl ca|dns install`` and by the daemon's privileged half alike.\n"),
    "taskmuxd.handlers": (
        "The daemon's JSON-RPC handlers, one module per group of namespaces.\n\n"
        "They sit above the subsystems they call (``projects``, ``proxy``, ``dns``...) and below\n"
        "the ``Daemon`` that registers them.\n"),
}

ROOTS = ("taskmuxd", "taskmuxctl")
TEXT_SUFFIXES = (".py", ".toml", ".md", ".cfg", ".ini", ".txt", ".sh", ".service", ".conf",
                 ".plist", ".yml", ".yaml", ".json", ".in")
TEXT_DIRS = (".ci/", "systemd/", "launchd/", "packaging/", ".github/")
SKIP_DIRS = (".venv/", ".git/", "build/", "dist/")


def module_path(dotted: str) -> str:
    return dotted.replace(".", "/")


def where(dotted: str) -> str | None:
    """The file or package folder of ``dotted`` in the working tree, if there is one."""
    base = module_path(dotted)
    if os.path.isfile(base + ".py"):
        return base + ".py"
    if os.path.isfile(os.path.join(base, "__init__.py")):
        return base
    return None


def mapped(dotted: str, moves: list[tuple[str, str]]) -> str:
    """``dotted`` under the longest matching entry of ``moves`` (itself when none matches)."""
    best: tuple[str, str] | None = None
    for old, new in moves:
        if (dotted == old or dotted.startswith(old + ".")) and (best is None
                                                               or len(old) > len(best[0])):
            best = (old, new)
    if best is None:
        return dotted
    return best[1] + dotted[len(best[0]):]


def check_table() -> None:
    olds = [o for o, _ in MOVES]
    for _, new in MOVES:
        for old in olds:
            if re.search(r"(?<![\w.])" + re.escape(old) + r"(?!\w)", new):
                sys.exit(f"relayout: new name {new} contains the old name {old}")


# ---- 1. the moves -------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def ensure_package(dotted: str, dry: bool, notes: list[str]) -> None:
    parts = dotted.split(".")
    for i in range(2, len(parts) + 1):
        pkg = ".".join(parts[:i])
        init = os.path.join(module_path(pkg), "__init__.py")
        if os.path.isfile(init):
            continue
        doc = NEW_PACKAGES.get(pkg)
        if doc is None:
            sys.exit(f"relayout: {pkg} is not a package and NEW_PACKAGES has no docstring for it")
        notes.append(f"create {init}")
        if not dry:
            os.makedirs(module_path(pkg), exist_ok=True)
            with open(init, "w", encoding="utf-8") as fh:
                fh.write('"""' + doc + '"""\n')
            git("add", init)


def do_moves(dry: bool) -> list[str]:
    notes: list[str] = []
    for pkg in NEW_PACKAGES:
        if where(pkg.rsplit(".", 1)[0]) is not None or "." not in pkg:
            ensure_package(pkg, dry, notes)
    for i, (old, new) in enumerate(MOVES):
        others = MOVES[:i] + MOVES[i + 1:]
        sources = [s for s in (old, mapped(old, others)) if where(s) is not None]
        target = where(new)
        if not sources:
            if target is None:
                notes.append(f"warning: neither {old} nor {new} exists (removed by a merge?)")
            continue
        src = where(sources[0])
        assert src is not None
        if target is not None:
            notes.append(f"warning: both {src} and {target} exist: move {src}'s content by hand")
            continue
        dest = module_path(new) + (".py" if src.endswith(".py") else "")
        ensure_package(new.rsplit(".", 1)[0], dry, notes)
        notes.append(f"git mv {src} {dest}")
        if not dry:
            git("mv", src, dest)
    return notes


# ---- 2. the references --------------------------------------------------------------------


def candidate_files() -> list[str]:
    out = git("ls-files", "-co", "--exclude-standard", "-z")
    files = []
    for path in sorted(set(out.split("\0"))):
        if not path or path.startswith(SKIP_DIRS) or not os.path.isfile(path):
            continue
        if path == "tools/relayout.py":
            continue  # this table names the old paths on purpose
        if path.endswith(TEXT_SUFFIXES) or path.startswith(TEXT_DIRS):
            files.append(path)
    return files


def dotted_pattern(olds: list[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(o) for o in sorted(olds, key=len, reverse=True))
    return re.compile(r"(?<![\w.])(" + alts + r")(?![\w])")


def path_pattern(olds: list[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(module_path(o)) for o in sorted(olds, key=len, reverse=True))
    # a module file (a/b.py), or a package folder (a/b/ or a/b followed by a non-name).
    return re.compile(r"(?<![\w/.-])(" + alts + r")(\.py\b|/|(?![\w/.]))")


def is_module(dotted: str) -> bool:
    return where(dotted) is not None


def bindings_of(tree: ast.AST) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Per local name: the modules that imports bind to it (``from pkg import mod`` binds
    ``mod`` to ``pkg.mod``), and how many other bindings it has (assignments, args, defs)."""
    imported: dict[str, set[str]] = {}
    other: dict[str, int] = {}

    def bump(name: str) -> None:
        other[name] = other.get(name, 0) + 1

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bump(node.id)
        elif isinstance(node, ast.arg):
            bump(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bump(node.name)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                target = f"{node.module}.{a.name}" if node.module and not node.level else "?"
                imported.setdefault(a.asname or a.name, set()).add(target)
        elif isinstance(node, ast.Import):
            for a in node.names:
                imported.setdefault(a.asname or a.name.split(".")[0], set()).add(
                    a.name if a.asname else "?")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for n in node.names:
                bump(n)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bump(node.name)
    return imported, other


def rewrite_from_imports(text: str) -> str:
    """``from pkg import mod`` where ``pkg.mod`` moved to another package or name."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def pos(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        line = lines[lineno - 1]
        return offsets[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    edits: list[tuple[int, int, str]] = []
    renames: dict[str, str] = {}  # old local name → new local name (module uses to rename)
    imported, other = bindings_of(tree)

    def safe_to_rename(name: str, new_full: str, leaf: str) -> bool:
        targets = {mapped(t, MOVES) for t in imported.get(name, set())}
        return (targets == {new_full} and not other.get(name) and not other.get(leaf)
                and leaf not in imported)

    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level or not node.module or node.module.split(".")[0] not in ROOTS:
            continue
        base = mapped(node.module, MOVES)
        groups: dict[str, list[str]] = {}
        changed = base != node.module
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            new_full = mapped(full, MOVES)
            if new_full != full and (is_module(new_full) or is_module(full)):
                parent, leaf = new_full.rsplit(".", 1)
                changed = True
                if alias.asname:
                    item = f"{leaf} as {alias.asname}"
                elif leaf == alias.name:
                    item = leaf
                elif safe_to_rename(alias.name, new_full, leaf):
                    item = leaf
                    renames[alias.name] = leaf
                else:
                    item = f"{leaf} as {alias.name}"
            else:
                parent = base
                item = alias.name + (f" as {alias.asname}" if alias.asname else "")
            groups.setdefault(parent, []).append(item)
        if not changed:
            continue
        indent = lines[node.lineno - 1][:node.col_offset]
        start = pos(node.lineno, node.col_offset)
        assert node.end_lineno is not None and node.end_col_offset is not None
        end = pos(node.end_lineno, node.end_col_offset)
        stmts = [f"from {parent} import {', '.join(items)}" for parent, items in groups.items()]
        edits.append((start, end, ("\n" + indent).join(stmts)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in renames:
            start = pos(node.lineno, node.col_offset)
            edits.append((start, start + len(node.id), renames[node.id]))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def rewrite_text(path: str, text: str) -> str:
    olds = [o for o, _ in MOVES]
    if path.endswith(".py"):
        text = rewrite_from_imports(text)
    text = dotted_pattern(olds).sub(lambda m: mapped(m.group(1), MOVES), text)

    def fix_path(m: re.Match[str]) -> str:
        dotted = m.group(1).replace("/", ".")
        return module_path(mapped(dotted, MOVES)) + m.group(2)

    text = path_pattern(olds).sub(fix_path, text)

    def fix_parts(m: re.Match[str]) -> str:
        quote = m.group(1)
        parts = [p.strip().strip(quote) for p in m.group(0).split(",")]
        leaf_py = parts[-1].endswith(".py")
        dotted = ".".join(parts)[:-3] if leaf_py else ".".join(parts)
        new = mapped(dotted, MOVES)
        if new == dotted:
            return m.group(0)
        new_parts = new.split(".")
        if leaf_py:
            new_parts[-1] += ".py"
        return ", ".join(quote + p + quote for p in new_parts)

    return re.sub(r"""(["'])(?:taskmuxd|taskmuxctl)\1(?:\s*,\s*\1[\w.]+\1)+""", fix_parts, text)


def main() -> int:
    dry = "--check" in sys.argv[1:]
    if not os.path.isdir(".git") and not os.path.isfile(".git"):
        sys.exit("relayout: run me from the repository root")
    check_table()
    for note in do_moves(dry):
        print(note)
    changed_py = []
    for path in candidate_files():
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
        new = rewrite_text(path, text)
        if new != text:
            print(f"rewrite {path}")
            if not dry:
                with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
                    fh.write(new)
            if path.endswith(".py"):
                changed_py.append(path)
    if changed_py and not dry:
        ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
        subprocess.run([ruff if os.path.exists(ruff) else "ruff", "check", "--quiet", "--fix",
                        "--select", "I", *changed_py], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
