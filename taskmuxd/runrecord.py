"""The runner's spec and record: typed, versioned, read and written only here.

Two files cross the boundary between the daemon and a task's runner (two processes, possibly
of two taskmux versions during an update):

- the **spec** (``run/{task}.spec.json``, 0600): what the daemon asks one run to be: written
  by the daemon, read by the runner (at its start, and for a relaunch in place);
- the **record** (``run/{task}.json``): what the runner saw of the run: written by the
  runner (and sent along with its reports), read by the daemon, live or when it adopts.

Each carries ``format``. A reader takes its own format (and a file from before formats were
written, as format 1) and refuses any other with :class:`FormatError`, saying which it found
and which it reads; within a format, unknown keys are ignored and a value of the wrong type
reads as absent, so hostile or damaged input never reaches the code as the wrong type.

Standard library only and cheap to import: the runner (one per task) imports it, so the
classes are made by a small stand-in for ``dataclasses`` at run time (``dataclasses`` pulls in
``inspect`` and ``re``); type checkers see real dataclasses.
"""

from __future__ import annotations

from taskmuxctl.core import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass as typed_record
    from typing import Any, Literal, TypeVar

    RunStatus = Literal["starting", "running", "exited", "failed"]
    T = TypeVar("T")
else:
    def typed_record(cls):
        """A dataclass, for what this module needs of one: keyword or positional fields in
        order, defaults, equality and a readable repr."""
        names = tuple(cls.__annotations__)
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

        def __init__(self, *args, **kw):
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__} takes {len(names)} fields")
            for name, value in zip(names, args, strict=False):
                kw[name] = value
            for name in names:
                if name in kw:
                    setattr(self, name, kw.pop(name))
                elif name in defaults:
                    setattr(self, name, defaults[name])
                else:
                    raise TypeError(f"{cls.__name__}: missing field {name!r}")
            if kw:
                raise TypeError(f"{cls.__name__}: unknown field(s) {', '.join(kw)}")

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{cls.__name__}({inner})"

        cls.__init__, cls.__eq__, cls.__repr__ = __init__, __eq__, __repr__
        cls.__hash__ = None
        return cls

SPEC_FORMAT = 1
RECORD_FORMAT = 1
MAX_FILE = 4 * 1024 * 1024  # bytes of a spec or record read at most (a spec holds an env)


class FormatError(ValueError):
    """A spec or record this taskmux cannot read: another format version, or not one."""


@typed_record
class RunSpec:
    """One run, as the daemon asks it of the runner."""

    project: str
    task: str
    run_id: int
    command: str
    shell: str
    cwd: str
    env: dict[str, str]
    log: str  # the task's log file
    log_max_size: int
    log_max_files: int
    record: str  # where the runner keeps its record
    socket: str  # the daemon's ctl.sock, for reports
    marker: str | None = None  # TASKMUX_RUN of this run
    stop_grace_period: float = 10.0
    cgroup: str | None = None  # the task's delegated cgroup, when there is one
    relaunch_socket: str | None = None  # where to wait for a relaunch order (runrelaunch)
    notify_socket: str | None = None  # the task's NOTIFY_SOCKET
    ready: str | None = None  # "notify": the task says when it is ready
    ready_log_line: str | None = None
    watchdog_sec: float | None = None
    grant: str | None = None  # where the daemon may grant the next run at once (rungrant)
    ending: str | None = None  # the list of runs the daemon ends (runending, strangers)
    # The daemon checks sealed records: the runner may rewrite its record in place (see
    # ``sealed``); without it (an older daemon), every write is a new file renamed into place.
    record_in_place: bool = False
    format: int = SPEC_FORMAT


@typed_record
class RunRecord:
    """One run, as its runner saw it (times are wall-clock seconds)."""

    project: str = ""
    task: str = ""
    run_id: int = 0
    status: RunStatus = "starting"
    runner_pid: int | None = None
    runner_start: int | None = None  # the runner's start in clock ticks: its identity
    boot_id: str | None = None
    marker: str | None = None
    subreaper: bool = False
    cgroup: str | None = None
    pid: int | None = None  # the task's first process
    pgid: int | None = None
    pid_start: int | None = None
    started_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    exited_at: float | None = None  # when the first process ended (its tree stopped after)
    tree_clean: bool | None = None  # every process of the run is known to be gone
    ended_by: str | None = None  # exit, hangup, pane_write_failed, signal:NAME, runner_error
    error: str | None = None  # why the runner itself failed
    relaunch: str | None = None  # the runner waits here for a relaunch order (runrelaunch)
    ready_at: float | None = None
    ready_by: str | None = None  # "log" or "notify"
    ready_detail: str | None = None
    notify_status: str | None = None  # the task's last STATUS=
    watchdog_missed_at: float | None = None
    watchdog_reason: str | None = None
    # A run started at once on the daemon's grant (``rungrant``): the run it replaced, and
    # how that one ended (by itself, its whole tree gone).
    after_run: int | None = None
    after_code: int | None = None
    after_signal: int | None = None
    after_at: float | None = None
    unscanned: bool = False  # the daemon ended the run: it looks for the strangers itself
    format: int = RECORD_FORMAT


STATUSES = frozenset(("starting", "running", "exited", "failed"))


def _kinds(cls: type) -> dict[str, str]:
    """Each field's base type, from its annotation (``int | None`` → ``int``)."""
    return {name: str(ann).split("|")[0].split("[")[0].strip()
            for name, ann in cls.__annotations__.items()}


_SPEC_KINDS: dict[str, str] = {}
_RECORD_KINDS: dict[str, str] = {}


def _value(kind: str, value: object) -> object:
    """``value`` when it is of ``kind``, else None (read as absent)."""
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None  # type: ignore[arg-type]
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "dict":
        if not isinstance(value, dict):
            return None
        return {str(k): str(v) for k, v in value.items()}
    if kind in ("str", "RunStatus"):
        return value if isinstance(value, str) else None
    return None


def _fields(data: object, what: str, current: int, kinds: dict[str, str]
            ) -> dict[str, object]:
    if not isinstance(data, dict):
        raise FormatError(f"the {what} is not a JSON object")
    fmt = data.get("format", 1)  # written before formats were: the first format
    if fmt != current:
        raise FormatError(f"the {what} has format {fmt!r}; this taskmux reads format "
                          f"{current} (written by another taskmux version: restart the task "
                          f"with this one)")
    out: dict[str, object] = {}
    for name, kind in kinds.items():
        if name in data:
            value = _value(kind, data[name])
            if value is not None:
                out[name] = value
    return out


def spec_from_json(data: object) -> RunSpec:
    """A spec from its decoded JSON; FormatError when it is not one this version reads."""
    if not _SPEC_KINDS:
        _SPEC_KINDS.update(_kinds(RunSpec))
    fields = _fields(data, "run spec", SPEC_FORMAT, _SPEC_KINDS)
    missing = [n for n in ("project", "task", "run_id", "command", "shell", "cwd", "env",
                           "log", "log_max_size", "log_max_files", "record", "socket")
               if n not in fields]
    if missing:
        raise FormatError(f"the run spec lacks {', '.join(missing)}")
    return RunSpec(**fields)  # type: ignore[arg-type]


def record_from_json(data: object) -> RunRecord:
    """A record from its decoded JSON; FormatError when it is not one this version reads."""
    if not _RECORD_KINDS:
        _RECORD_KINDS.update(_kinds(RunRecord))
    fields = _fields(data, "run record", RECORD_FORMAT, _RECORD_KINDS)
    if fields.get("status", "starting") not in STATUSES:
        fields.pop("status")
    return RunRecord(**fields)  # type: ignore[arg-type]


def to_json(item: RunSpec | RunRecord) -> dict[str, Any]:
    """The JSON object of a spec or record (every field, in order)."""
    return {name: getattr(item, name) for name in item.__annotations__}


def dumps(item: RunSpec | RunRecord) -> str:
    return jsonio.dumps(to_json(item))


# -- sealed records: rewritten in place, a torn read told from a whole one --------------------
#
# A record the runner rewrites in place (one ``pwrite`` over the same file, no new file and
# no rename: nothing changes in the ``run/`` folder, where a hundred runners that a stop ends
# otherwise each allocate an inode and take the folder's lock) could be read half old, half
# new by a process reading it meanwhile, and such a mix can be valid JSON with wrong values.
# So it is sealed: it begins with ``{"check":"<16 hex digits>",`` and those digits are a
# digest of every byte that follows the check's closing quote (from the comma to the closing
# brace); spaces and a newline may follow (a shorter record written over a longer one pads to
# its length rather than truncating). A reader takes a sealed record only when its digest
# matches (else it reads again, and after ``READ_TRIES`` takes it as torn: none); a record
# that is not sealed (an older runner's, always replaced whole by a rename) is taken as it is.

SEAL_HEAD = b'{"check":"'
_SEAL_MOD = (1 << 61) - 1  # a Mersenne prime: the digest is the body, a number, modulo it
READ_TRIES = 3


def _digest(body: bytes) -> bytes:
    return b"%016x" % (int.from_bytes(body, "little") % _SEAL_MOD)


def sealed(record: RunRecord) -> bytes:
    """The record's sealed text (no newline)."""
    body = ("," + dumps(record)[1:]).encode()
    return SEAL_HEAD + _digest(body) + b'"' + body


def seal_holds(data: bytes) -> bool:
    """Whether ``data`` is whole: sealed with a matching digest, or not sealed at all."""
    if not data.startswith(SEAL_HEAD):
        return True
    end = len(SEAL_HEAD) + 16
    data = data.rstrip()
    return data[end:end + 2] == b'",' and data[len(SEAL_HEAD):end] == _digest(data[end + 1:])


def _bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise FormatError(f"{path} is larger than {MAX_FILE} bytes")
    return data


def _loads(path: str, data: bytes) -> object:
    try:
        return jsonio.loads(data)
    except ValueError as exc:
        raise FormatError(f"{path} is not JSON: {exc}") from None


def _read(path: str) -> object:
    return _loads(path, _bytes(path))


def read_spec(path: str) -> RunSpec:
    """The spec at ``path``; OSError when it cannot be read, FormatError when it is not one
    this version reads."""
    return spec_from_json(_read(path))


def read_record(path: str) -> RunRecord | None:
    """The record at ``path``, or None when there is none yet (or it is torn: a record is
    replaced atomically or sealed, so only a machine that lost power mid-write leaves one
    torn; a sealed record read while its runner rewrote it is read again).
    FormatError when it is another version's."""
    try:
        for _ in range(READ_TRIES):  # a sealed record read while its runner rewrote it
            raw = _bytes(path)
            if seal_holds(raw):
                break
        else:
            return None  # torn
        data = _loads(path, raw)
    except FileNotFoundError:
        return None
    except FormatError as exc:
        if "is not JSON" in str(exc):
            return None
        raise
    return record_from_json(data)
