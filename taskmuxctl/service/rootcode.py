"""Does an installed system service make root run code a user could change?

``daemon install --system`` refuses such a program now, but a unit or LaunchDaemon written by
an older taskmux may still start a boot-guard or a virtualenv in a user's home: root runs it
at the next start, before taskmuxd's own check can refuse. ``doctor`` and ``daemon status``
read the installed file and judge its program here, with the rules the privileged half uses
(``taskmuxctl.core.system.rootfiles.code_problem``). The program is only looked at
(``lstat``, and the ``#!`` line of a script), never run.
"""

from __future__ import annotations

import os

SHEBANG_BYTES = 512
_SYSTEMD_PREFIXES = "-@:+!"  # ExecStart= prefixes (ignore failure, argv[0], privileges...)


def installed_program(manager: str, unit_file: str) -> list[str] | None:
    """The command the installed unit (ExecStart=) or plist (ProgramArguments) runs, up to
    the ``run`` word; None when the file cannot be read or names no program."""
    try:
        if manager == "launchd":
            import plistlib
            from xml.parsers.expat import ExpatError

            try:
                with open(unit_file, "rb") as fh:
                    args = [str(a) for a in plistlib.load(fh).get("ProgramArguments", [])]
            except ExpatError:  # not well-formed XML
                return None
        else:
            from taskmuxctl.service.escape import systemd_split

            args = []
            with open(unit_file, encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("ExecStart="):
                        args = systemd_split(line[len("ExecStart="):].strip())
            if args:
                args[0] = args[0].lstrip(_SYSTEMD_PREFIXES)
    except (OSError, ValueError, AttributeError):
        return None
    if "run" in args:
        args = args[: args.index("run")]
    return args or None


def script_interpreter(path: str) -> str | None:
    """The absolute interpreter named on the ``#!`` line of the script at ``path``."""
    if not os.path.isfile(path):
        return None  # a FIFO or device must not be opened (it could block)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = os.read(fd, SHEBANG_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words or not words[0].startswith(b"/"):
        return None
    return os.fsdecode(words[0])


def program_problem(program: list[str], packages: list[str] | None = None) -> str | None:
    """Why running ``program`` as root would run code a user can change, or None: each
    absolute file in it, the interpreter of a script among them, and the folders on the way
    to each must be root's alone; so must each folder it names (the boot-guard's ``--home``
    holds the versions it starts) and ``packages`` (Python packages it imports), when known.
    OSError when a path cannot be examined (a folder this user may not enter)."""
    from taskmuxctl.core.system.rootfiles import code_problem, folder_problem

    words = list(program)
    for word in program:
        if not os.path.isabs(word):
            continue
        if os.path.isdir(word):
            problem = folder_problem(word)
            if problem:
                return problem
        interpreter = script_interpreter(word)
        if interpreter is not None and interpreter not in words:
            words.append(interpreter)
    return code_problem(words, packages or [])


def this_installation_packages() -> list[str]:
    """The folders of the ``taskmuxd`` and ``taskmuxctl`` packages this program runs (found,
    not imported: the client imports no daemon module)."""
    from importlib.util import find_spec

    folders = []
    for name in ("taskmuxd", "taskmuxctl"):
        spec = find_spec(name)
        origin = spec.origin if spec is not None else None
        folders.append(os.path.dirname(os.path.abspath(origin or "")))
    return folders
