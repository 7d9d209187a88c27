"""Quoting values for the formats the service files are written in (pure functions).

systemd unit files: a value is one double-quoted word with C-style escapes; ``%`` starts a
specifier (written ``%%``) and, in a command's arguments, ``$`` starts a variable (written
``$$``). The program's own path is stricter: systemd expands specifiers in it but not
variables, and refuses quotes, backslashes and control characters there outright.
Property lists are XML: ``&``, ``<`` and ``>`` become entities; characters XML cannot hold at
all are refused rather than silently changed.
"""

from __future__ import annotations

_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
              "\b": "\\b", "\f": "\\f", "\v": "\\v"}


class UnrepresentableError(ValueError):
    """A value the target format cannot carry (NUL bytes, undecodable file names...)."""


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise UnrepresentableError(f"{what} contains a NUL character: {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnrepresentableError(
            f"{what} is not valid UTF-8 (a file name with undecodable bytes?): {value!r}"
        ) from None


def systemd_word(value: str, *, command: bool = False) -> str:
    """``value`` as one double-quoted systemd word that systemd reads back unchanged.

    ``command`` is for the arguments of ExecStart= and friends, where ``$`` would expand a
    variable.
    """
    _check_text(value, "a value for the unit file")
    out = ['"']
    for ch in value:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and command:
            out.append("$$")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def systemd_command(argv: list[str]) -> str:
    """A command line for ExecStart= whose words systemd passes on exactly as given."""
    if not argv or not argv[0].startswith("/"):
        raise UnrepresentableError(f"the program must be an absolute path, got {argv!r}")
    program = argv[0]
    if any(ch in "\\\"'" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in program):
        raise UnrepresentableError(
            f"systemd cannot run a program whose path holds quotes, backslashes or control "
            f"characters: {program!r}; install taskmux somewhere else")
    return " ".join([systemd_word(program), *(systemd_word(w, command=True) for w in argv[1:])])


def systemd_assignment(name: str, value: str) -> str:
    """``NAME=value`` for Environment=, quoted as one word (``$`` is literal there)."""
    if not name or not (name[0].isalpha() or name[0] == "_") or \
            not all(c.isalnum() or c == "_" for c in name):
        raise UnrepresentableError(f"not a valid environment variable name: {name!r}")
    return systemd_word(f"{name}={value}")


_C_UNESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "a": "\a",
                "b": "\b", "f": "\f", "v": "\v", "s": " "}


def systemd_split(line: str) -> list[str]:
    """Split a command line the way systemd reads ExecStart= (the inverse of
    ``systemd_command`` for what it writes): quotes, C escapes, ``%%``, and ``$$`` in the
    arguments.

    Specifiers other than ``%%`` are kept as written (``%i`` stays ``%i``).
    """
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quote: str | None = None
        while i < n:
            ch = line[i]
            if quote is None and ch in " \t":
                break
            if ch in "\"'" and (quote is None or quote == ch):
                quote = None if quote else ch
                i += 1
                continue
            if ch == "\\" and i + 1 < n:
                nxt = line[i + 1]
                if nxt == "x" and i + 3 < n:
                    word.append(chr(int(line[i + 2:i + 4], 16)))
                    i += 4
                    continue
                word.append(_C_UNESCAPES.get(nxt, nxt))
                i += 2
                continue
            if (ch == "%" or (ch == "$" and words)) and line[i + 1:i + 2] == ch:
                word.append(ch)
                i += 2
                continue
            word.append(ch)
            i += 1
        words.append("".join(word))
    return words


def xml_text(value: str) -> str:
    """``value`` as XML character data (for a plist ``<string>``)."""
    _check_text(value, "a value for the property list")
    for ch in value:
        code = ord(ch)
        if (code < 0x20 and ch not in "\t\n\r") or code in (0xFFFE, 0xFFFF) or \
                0xD800 <= code <= 0xDFFF:
            raise UnrepresentableError(
                f"a value for the property list holds a character XML cannot carry: {value!r}")
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
