"""Turning argv into (command, arguments), from the table in ``spec``.

``fast`` handles the plain forms of commands without importing argparse (which brings ``re``
and ``gettext``, more than the rest of a status call costs). It accepts only what argparse
would parse the same way and returns None for anything else: help, abbreviations,
``--opt=value``, errors. ``build_parser`` builds the argparse parser from the same table.
"""

from __future__ import annotations

from taskmuxctl.spec import COMMANDS, GROUPS, SECTIONS, Arg, Cmd, Group

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any


GLOBAL_FLAGS = ("--json", "--no-daemon-start")
PROJECT_FLAGS = ("-p", "--project")
USAGE = "%(prog)s [-h] [--json] [-p NAME] [--no-daemon-start] COMMAND ..."


class Args:
    """The parsed arguments (attribute access, like argparse.Namespace)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __eq__(self, other: object) -> bool:
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Args({vars(self)!r})"


def split_globals(argv: list[str]) -> tuple[list[str], set[str]]:
    """Remove the global flags wherever they appear before ``--``; move ``-p NAME`` (also
    ``--project NAME``, ``--project=NAME``) to just after the command's words, where both
    parsers take it, so that it may be given before the command or anywhere after it."""
    found: set[str] = set()
    out: list[str] = []
    project: list[str] = []
    tail: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            tail = argv[i:]
            break
        if tok in GLOBAL_FLAGS:
            found.add(tok)
        elif tok in PROJECT_FLAGS and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            project = ["-p", argv[i + 1]]
            i += 1
        elif tok.startswith("--project=") and len(tok) > len("--project="):
            project = ["-p", tok[len("--project="):]]
        else:
            out.append(tok)
        i += 1
    if project:
        matched = _match(out)
        at = matched[1] if matched else len(out)
        out[at:at] = project
    return out + tail, found


def _match(tokens: list[str]) -> tuple[Cmd, int] | None:
    best: tuple[Cmd, int] | None = None
    for cmd in COMMANDS:
        n = len(cmd.path)
        if len(tokens) < n or tuple(tokens[: n - 1]) != cmd.path[:-1]:
            continue
        last = tokens[n - 1]
        if (last == cmd.path[-1] or last in cmd.aliases) and (best is None or n > best[1]):
            best = (cmd, n)
    return best


def _convert(arg: Arg, text: str) -> Any:
    if arg.choices is not None and text not in arg.choices:
        raise ValueError(text)
    if arg.type == "int":
        return int(text)
    if arg.type == "float":
        return float(text)
    return text


def defaults(cmd: Cmd) -> dict[str, Any]:
    return {arg.name: arg.default_value() for arg in cmd.args}


def fast(tokens: list[str]) -> tuple[Cmd, Args] | None:
    """Parse ``tokens`` without argparse when that is sure to give argparse's answer."""
    found = _match(tokens)
    if found is None:
        return None
    cmd, n = found
    values = defaults(cmd)
    flags = {flag: arg for arg in cmd.args if not arg.positional for flag in arg.flags}
    positionals = [arg for arg in cmd.args if arg.positional]
    seen_positional: dict[str, bool] = {}
    rest = tokens[n:]
    i = 0
    try:
        while i < len(rest):
            tok = rest[i]
            if tok.startswith("-") and tok != "-":
                arg = flags.get(tok)
                if arg is None:
                    return None
                if arg.action == "store_true":
                    values[arg.name] = True
                elif arg.action == "count":
                    values[arg.name] += 1
                else:
                    if i + 1 >= len(rest) or rest[i + 1].startswith("-") or arg.nargs:
                        return None
                    value = _convert(arg, rest[i + 1])
                    if arg.action == "append":
                        values[arg.name] = [*(values[arg.name] or []), value]
                    else:
                        values[arg.name] = value
                    i += 1
            else:
                if not positionals:
                    return None
                arg = positionals[0]
                if arg.nargs == "*":
                    if seen_positional.get(arg.name):
                        return None  # argparse would not take a second run after an option
                    seen_positional[arg.name] = True
                    while i < len(rest) and not rest[i].startswith("-"):
                        values[arg.name] = [*values[arg.name], _convert(arg, rest[i])]
                        i += 1
                    positionals.pop(0)
                    continue
                if arg.nargs not in (None, "?"):
                    return None
                values[arg.name] = _convert(arg, tok)
                positionals.pop(0)
            i += 1
    except ValueError:
        return None
    if any(not arg.optional_when_bare for arg in positionals):
        return None
    return cmd, Args(**values)


class UsageError(Exception):
    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


def unknown_command(tokens: list[str], prog: str = "taskmux") -> UsageError | None:
    """A UsageError naming the first word that is no command (with the closest one, when
    one is close), or None when the words are all known (argparse checks the rest)."""
    entries: list[Group | Cmd] = [*GROUPS, *COMMANDS]
    path: tuple[str, ...] = ()
    for tok in tokens:
        if tok.startswith("-"):
            return None
        here = [e for e in entries if len(e.path) == len(path) + 1 and e.path[:-1] == path]
        names = {e.path[-1]: e for e in here}
        names.update({alias: e for e in here for alias in e.aliases})
        entry = names.get(tok)
        if entry is None:
            if path and not any(isinstance(e, Group) and e.path == path for e in entries):
                cmd = next(c for c in COMMANDS if c.path == path)
                if any(a.positional for a in cmd.args):
                    return None  # `mcp WORD`: argparse says what is wrong
            from taskmuxctl.core.suggest import closest

            best = closest(tok, sorted(names))
            words = " ".join((*path, tok))
            hint = (f"did you mean `{prog} {' '.join((*path, best))}`?" if best else
                    f"`{prog} {' '.join((*path, '--help'))}` lists the commands")
            usage = USAGE.replace("%(prog)s", prog).replace("COMMAND",
                                                            " ".join((*path, "COMMAND")))
            return UsageError(f"unknown command {words!r}; {hint}", f"usage: {usage}")
        path = entry.path
        if isinstance(entry, Cmd) and not any(
                len(e.path) > len(path) and e.path[:len(path)] == path for e in entries):
            return None
    return None


def sections_help(prog: str) -> str:
    """The top-level commands, grouped as ``spec.SECTIONS`` says, for ``--help``."""
    import textwrap

    entries: list[Group | Cmd] = [*GROUPS, *COMMANDS]
    helps = {e.path[0]: e.help for e in entries if len(e.path) == 1}
    aliases = {c.path[0]: c.aliases for c in COMMANDS if len(c.path) == 1 and c.aliases}

    width = max(len(name) for _, names in SECTIONS for name in names) + 2
    out: list[str] = []
    for title, names in SECTIONS:
        out.append(f"{title}:")
        for name in names:
            text = helps[name]
            if name in aliases:
                text += f" (also: {', '.join(aliases[name])})"
            out.extend(textwrap.wrap(text, 96, initial_indent=f"  {name.ljust(width)}",
                                     subsequent_indent=" " * (width + 2)))
        out.append("")
    out.append(f"`{prog} COMMAND --help` shows a command's options.")
    return "\n".join(out)


def _remember_translations(argparse: Any) -> None:
    """argparse asks gettext for each of its labels (about 200 for the whole tree), and gettext
    looks for catalogue files on disk every time: ~6 ms of CPU for ``--help`` or a usage error.
    A label's translation cannot change within a run, so each is looked up once."""
    import functools

    if not hasattr(argparse._, "cache_info"):
        argparse._ = functools.cache(argparse._)
        argparse.ngettext = functools.cache(argparse.ngettext)


def build_parser(prog: str = "taskmux") -> argparse.ArgumentParser:
    import argparse

    _remember_translations(argparse)

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            raise UsageError(message, self.format_usage())

    root = Parser(prog=prog, usage=USAGE, epilog=sections_help(prog),
                  formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                      "taskmux: run a project's servers, watchers and workers in tmux, "
                      "supervised by one daemon\nper machine. Every command takes --json."))
    root.add_argument("--json", action="store_true", help="print one JSON object: "
                      '{"ok": true, ...} or {"ok": false, "error": ..., "code": N}')
    project = root.add_argument("-p", "--project", metavar="NAME", default=argparse.SUPPRESS,
                                help="the project's name (default: the taskmux.toml here); "
                                "before or after the command")
    project.completer = _completer("projects")  # type: ignore[attr-defined]
    root.add_argument("--no-daemon-start", action="store_true",
                      help="do not start the daemon when a command needs it")
    subparsers: dict[tuple[str, ...], Any] = {
        (): root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser,
                                help=argparse.SUPPRESS)}
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    order = {name: i for i, name in enumerate(n for _, names in SECTIONS for n in names)}
    entries: list[Group | Cmd] = sorted([*GROUPS, *COMMANDS],
                                        key=lambda e: (len(e.path), order.get(e.path[0], 99)))
    for entry in entries:
        parent = subparsers[entry.path[:-1]]
        aliases = list(getattr(entry, "aliases", ()))
        parser = parent.add_parser(entry.path[-1], help=entry.help, aliases=aliases,
                                   description=getattr(entry, "description", None) or entry.help)
        parsers[entry.path] = parser
        if isinstance(entry, Cmd):
            parser.set_defaults(_cmd=entry)
            for arg in entry.args:
                _add(parser, arg)
            if any(e.path[:len(entry.path)] == entry.path and len(e.path) > len(entry.path)
                   for e in entries):  # a command that also leads to others (`mcp install`)
                subparsers[entry.path] = parser.add_subparsers(
                    dest="_".join(entry.path) + "_command", metavar="[COMMAND]",
                    parser_class=Parser)
        else:
            subparsers[entry.path] = parser.add_subparsers(
                dest="_".join(entry.path) + "_command", metavar="COMMAND", parser_class=Parser)
            parser.set_defaults(_group=entry, _parser=parser)
    root.set_defaults(_parser=root)
    return root


def _add(parser: argparse.ArgumentParser, arg: Arg) -> None:
    kwargs: dict[str, Any] = {"help": arg.help}
    if arg.action != "store":
        kwargs["action"] = arg.action
    if arg.action not in ("store_true", "count") and arg.metavar:
        kwargs["metavar"] = arg.metavar
    if arg.nargs is not None:
        kwargs["nargs"] = arg.nargs
    if arg.choices is not None:
        kwargs["choices"] = arg.choices
    if arg.type is not None:
        kwargs["type"] = {"int": int, "float": float}[arg.type]
    default = arg.default_value()
    if arg.action != "store_true" and not (arg.positional and arg.nargs is None):
        kwargs["default"] = default
    if not arg.positional:
        kwargs["dest"] = arg.name
    action = parser.add_argument(*arg.flags, **kwargs)
    if arg.complete:
        action.completer = _completer(arg.complete)  # type: ignore[attr-defined]


def _completer(name: str) -> Any:
    from taskmuxctl.completers import COMPLETERS

    return COMPLETERS[name]


def slow(tokens: list[str], prog: str) -> tuple[Cmd, Args]:
    """Parse with argparse. Raises UsageError; ``--help`` prints and exits 0 as usual."""
    unknown = unknown_command(tokens, prog)
    if unknown is not None:
        raise unknown
    parser = build_parser(prog)
    ns = parser.parse_args(tokens)
    cmd = getattr(ns, "_cmd", None)
    if cmd is None:
        group = getattr(ns, "_group", None)
        if group is not None and group.default and tokens and tokens[-1] == group.path[-1]:
            return slow([*tokens, group.default], prog)
        group_parser = getattr(ns, "_parser", parser)
        raise UsageError("choose a command", group_parser.format_help())
    values = {arg.name: getattr(ns, arg.name) for arg in cmd.args}
    return cmd, Args(**values)
