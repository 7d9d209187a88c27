"""Rendering the unit files and property lists for a target (pure, given the templates).

Templates live in the repository's ``systemd/`` and ``launchd/`` folders (and inside the
wheel under ``taskmuxctl/service/templates/``). A placeholder is ``@NAME@``; every value is
escaped for its format here, so a home directory with a space, a ``%`` or an ``&`` in it
comes out right.
"""

from __future__ import annotations

import os

from taskmuxctl.service import escape
from taskmuxctl.service.target import LAUNCHD, SYSTEM, SYSTEMD, Target

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from collections.abc import Mapping

TEMPLATES = {
    (SYSTEMD, SYSTEM): "systemd/taskmuxd@.service",
    (SYSTEMD, "drop-in"): "systemd/taskmuxd@.service.d-taskmux.conf",
    (SYSTEMD, "user"): "systemd/taskmuxd.service",
    (LAUNCHD, SYSTEM): "launchd/daemon.plist",
    (LAUNCHD, "user"): "launchd/agent.plist",
}
# Where launchd jobs look for programs: Homebrew (Apple silicon, then Intel) before the
# system's own folders; the folder holding the tmux found at install time comes first.
LAUNCHD_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


class TemplateError(Exception):
    pass


def template_root() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    packaged = os.path.join(here, "templates")
    if os.path.isdir(packaged):
        return packaged
    source = os.path.dirname(os.path.dirname(here))  # a source checkout or editable install
    if os.path.isdir(os.path.join(source, "systemd")):
        return source
    raise TemplateError(f"the unit templates are missing: neither {packaged} nor "
                        f"{source}/systemd exists; reinstall taskmux")


def load_template(key: tuple[str, str], root: str | None = None) -> str:
    path = os.path.join(root or template_root(), TEMPLATES[key])
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``@NAME@`` by ``values[NAME]``; unknown or unused names are errors."""
    out: list[str] = []
    used: set[str] = set()
    pos = 0
    while True:
        start = template.find("@", pos)
        if start < 0:
            break
        end = template.find("@", start + 1)
        name = template[start + 1:end] if end > 0 else ""
        if end < 0 or not name or not all(c.isupper() or c == "_" for c in name):
            out.append(template[pos:start + 1])  # a literal @ (as in taskmuxd@.service)
            pos = start + 1
            continue
        if name not in values:
            raise TemplateError(f"the template has an unknown placeholder @{name}@")
        out.append(template[pos:start])
        out.append(values[name])
        used.add(name)
        pos = end + 1
    out.append(template[pos:])
    unused = set(values) - used
    if unused:
        raise TemplateError(f"the template lacks the placeholders {sorted(unused)}")
    return "".join(out)


def _plist_strings(template: str, placeholder: str, words: list[str]) -> str:
    """Replace the line holding ``placeholder`` by one ``<string>`` line per word."""
    lines = template.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == placeholder:
            indent = line[: len(line) - len(line.lstrip())]
            lines[i:i + 1] = [f"{indent}<string>{escape.xml_text(w)}</string>" for w in words]
            return "\n".join(lines)
    raise TemplateError(f"the property list template has no line {placeholder}")


def launchd_path(tmux: str | None) -> str:
    dirs = [os.path.dirname(tmux)] if tmux else []
    dirs += [d for d in LAUNCHD_PATH if d not in dirs]
    return ":".join(dirs)


class FileSpec:
    """A file the installation consists of: where, what, whose, and whether other
    installations share it (the systemd template serves every user's instance)."""

    __slots__ = ("content", "gid", "mode", "path", "shared", "uid")

    def __init__(self, path: str, content: str, uid: int, gid: int, mode: int = 0o644,
                 shared: bool = False) -> None:
        self.path = path
        self.content = content
        self.uid = uid
        self.gid = gid
        self.mode = mode
        self.shared = shared


def render(target: Target, program: list[str], tmux: str | None = None,
           templates: str | None = None) -> list[FileSpec]:
    """Every file of the installation for ``target``, running ``program``."""
    home_env = escape.systemd_assignment("TASKMUX_HOME", target.state_dir)
    owner = (0, 0) if target.scope == SYSTEM else (target.uid, target.gid)
    if target.manager == SYSTEMD:
        exec_start = escape.systemd_command(program)
        if target.scope == SYSTEM:
            unit = fill(load_template((SYSTEMD, SYSTEM), templates), {"EXEC_START": exec_start})
            drop_in = fill(load_template((SYSTEMD, "drop-in"), templates),
                           {"ENVIRONMENT": home_env})
            assert target.drop_in is not None
            return [FileSpec(target.unit_file, unit, *owner, shared=True),
                    FileSpec(target.drop_in, drop_in, *owner)]
        unit = fill(load_template((SYSTEMD, "user"), templates),
                    {"EXEC_START": exec_start, "ENVIRONMENT": home_env})
        return [FileSpec(target.unit_file, unit, *owner)]
    for word in program:
        escape.xml_text(word)
    if not program or not program[0].startswith("/"):
        raise escape.UnrepresentableError(f"the program must be an absolute path: {program!r}")
    template = load_template((LAUNCHD, target.scope if target.scope == SYSTEM else "user"),
                             templates)
    template = _plist_strings(template, "@PROGRAM_ARGUMENTS@", program)
    assert target.log_file is not None
    values = {"LABEL": escape.xml_text(target.unit),
              "TASKMUX_HOME": escape.xml_text(target.state_dir),
              "PATH": escape.xml_text(launchd_path(tmux)),
              "LOG": escape.xml_text(target.log_file)}
    if target.scope == SYSTEM:
        values["USER"] = escape.xml_text(target.user)
    return [FileSpec(target.unit_file, fill(template, values), *owner)]
