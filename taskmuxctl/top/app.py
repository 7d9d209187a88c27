"""``taskmux top``: every project's tasks on one live screen (Textual), with the selected
task's log below and keys to act on it.

Imported only by the ``top`` command: Textual is heavy and the rest of the client stays fast.
The screen is refreshed when the daemon pushes an event (``events.subscribe``, in a thread)
and every ``REFRESH`` seconds for the CPU and memory figures; only cells that changed are
redrawn. Daemon calls run in worker threads, never on the screen's loop. The log pane follows
the selected task's log file (a ``stat`` every ``LOG_POLL`` seconds while nothing is new).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Input, Log, Static

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Method, RpcError
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable
from taskmuxctl.top import model

REFRESH = 5.0  # seconds between refreshes of the figures (events refresh at once)
LOG_POLL = 0.5  # seconds between looks at the followed log
LOG_TAIL = 200  # lines shown when a task is selected
LOG_READ = 256 * 1024  # bytes of log read at once at most


class LogFollower:
    """The new complete lines of one log file since the last look (rotation noticed)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ino: int | None = None
        self.pos = 0
        self.partial = b""

    def tail(self, lines: int) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                start = max(st.st_size - LOG_READ, 0)
                fh.seek(start)
                data = fh.read(LOG_READ)
        except OSError:
            return []
        self.ino, self.pos = st.st_ino, start + len(data)
        text = data.decode("utf-8", "replace").split("\n")
        self.partial = text.pop().encode()
        return text[-lines:]

    def new_lines(self) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if st.st_ino != self.ino or st.st_size < self.pos:  # rotated or truncated
            self.ino, self.pos, self.partial = st.st_ino, 0, b""
        if st.st_size == self.pos:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read(LOG_READ)
        except OSError:
            return []
        self.pos += len(data)
        parts = (self.partial + data).split(b"\n")
        self.partial = parts.pop()
        return [p.decode("utf-8", "replace") for p in parts]


class TopApp(App[None]):
    """The live view."""

    TITLE = "taskmux top"
    CSS = """
    #title { height: 1; background: $primary; color: $text; padding: 0 1; }
    #tasks { height: 2fr; }
    #logtitle { height: 1; background: $panel; padding: 0 1; }
    #log { height: 1fr; }
    #filter { display: none; }
    #filter.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "act('start')", "Start"),
        Binding("x", "act('stop')", "Stop"),
        Binding("r", "act('restart')", "Restart"),
        Binding("a", "attach", "Attach"),
        Binding("o", "open_url", "Open URL"),
        Binding("slash", "filter", "Filter"),
        Binding("p", "next_project", "Project"),
        Binding("escape", "clear_filter", "Clear", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, paths: Paths, project: str | None = None,
                 refresh: float = REFRESH) -> None:
        super().__init__()
        self.paths = paths
        self.project = project
        self.refresh_every = refresh
        self.text = ""
        self.rows: list[model.Row] = []
        self.shown: list[model.Row] = []
        self.projects: list[str] = []
        self.selected: str | None = None
        self.follower: LogFollower | None = None
        self.message = ""
        self.refreshes = 0
        self._call_lock = threading.Lock()
        self._client: Client | None = None
        self._stopping = threading.Event()

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        yield Input(placeholder="filter: words that must all appear; Enter keeps, Esc clears",
                    id="filter")
        with Vertical():
            yield DataTable(id="tasks", cursor_type="row", zebra_stripes=True)
            yield Static("", id="logtitle")
            yield Log(id="log", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#tasks", DataTable)
        for name in model.COLUMNS:
            table.add_column(name, key=name)
        table.focus()
        self.refresh_data()
        self.set_interval(self.refresh_every, self.refresh_data)
        self.set_interval(LOG_POLL, self.poll_log)
        threading.Thread(target=self._follow_events, name="top-events", daemon=True).start()

    def on_unmount(self) -> None:
        self._stopping.set()
        with self._call_lock:
            if self._client is not None:
                self._client.close()

    # -- talking to the daemon (worker threads) ------------------------------------------

    def _call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self._call_lock:
            if self._client is None:
                self._client = Client(self.paths, timeout=10.0).connect()
            try:
                return self._client.call(method, params)
            except DaemonUnavailable:
                self._client.close()
                self._client = None
                raise

    def _fetch(self) -> list[dict[str, Any]]:
        with self._call_lock:
            if self._client is None:
                self._client = Client(self.paths, timeout=10.0).connect()
            try:
                return model.fetch(self._client)
            except DaemonUnavailable:
                self._client.close()
                self._client = None
                raise

    @work(thread=True, exclusive=True, group="refresh")
    def refresh_data(self) -> None:
        try:
            statuses = self._fetch()
        except (DaemonUnavailable, RpcError) as exc:
            self.call_from_thread(self._show_message, f"daemon: {exc.message}")
            return
        self.call_from_thread(self._apply, statuses)

    def _follow_events(self) -> None:
        """Refresh as soon as the daemon pushes an event (reconnecting as needed)."""
        from taskmuxctl import eventfollow

        while not self._stopping.is_set():
            try:
                for _event in eventfollow.follow(self.paths, stopped=self._stopping.is_set):
                    if self._stopping.is_set():
                        return
                    self.call_from_thread(self.refresh_data)
            except (DaemonUnavailable, RpcError):
                self._stopping.wait(eventfollow.RETRY)
            except RuntimeError:  # the app is gone
                return

    # -- the screen -----------------------------------------------------------------------

    def _apply(self, statuses: list[dict[str, Any]]) -> None:
        self.refreshes += 1
        self.rows = model.rows_of(statuses)
        self.projects = sorted({st["project"] for st in statuses})
        if self.message.startswith("daemon:"):
            self.message = ""
        self._redraw()

    def _redraw(self) -> None:
        table = self.query_one("#tasks", DataTable)
        shown = model.visible(self.rows, self.project, self.text)
        if [r.key for r in shown] != [r.key for r in self.shown]:
            keep = self.selected
            table.clear()
            for r in shown:
                table.add_row(*r.cells(), key=r.key)
            if keep is not None and any(r.key == keep for r in shown):
                table.move_cursor(row=table.get_row_index(keep))
        else:
            for old, new in zip(self.shown, shown, strict=True):
                if old == new:
                    continue
                for name, was, now in zip(model.COLUMNS, old.cells(), new.cells(), strict=True):
                    if was != now:
                        table.update_cell(new.key, name, now)
        self.shown = shown
        if shown and self.selected not in {r.key for r in shown}:
            self._select(shown[min(table.cursor_row, len(shown) - 1)].key)
        self._title()

    def _title(self) -> None:
        running = sum(1 for r in self.rows if r.state == "running")
        where = self.project or "all projects"
        text = f"taskmux top — {where} — {running}/{len(self.rows)} running"
        if self.text:
            text += f" — filter: {self.text}"
        if self.message:
            text += f" — {self.message}"
        self.query_one("#title", Static).update(text)

    def _show_message(self, text: str) -> None:
        self.message = text
        self._title()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._select(str(event.row_key.value))

    def _select(self, key: str) -> None:
        if key == self.selected:
            return
        self.selected = key
        project, _, task = key.partition("/")
        self.follower = LogFollower(self.paths.task_log(project, task))
        log = self.query_one("#log", Log)
        log.clear()
        log.write_lines(self.follower.tail(LOG_TAIL))
        self.query_one("#logtitle", Static).update(f"log: {key}  ({self.follower.path})")

    def poll_log(self) -> None:
        if self.follower is not None:
            lines = self.follower.new_lines()
            if lines:
                self.query_one("#log", Log).write_lines(lines)

    def _current(self) -> model.Row | None:
        for r in self.shown:
            if r.key == self.selected:
                return r
        return None

    # -- keys -----------------------------------------------------------------------------

    def action_act(self, verb: str) -> None:
        row = self._current()
        if row is not None:
            self._act(verb, row.project, row.task)

    @work(thread=True, group="actions")
    def _act(self, verb: str, project: str, task: str) -> None:
        method = {"start": Method.PROJECT_START, "stop": Method.PROJECT_STOP,
                  "restart": Method.PROJECT_RESTART}[verb]
        self.call_from_thread(self._show_message, f"{verb} {project}/{task}…")
        try:
            out = self._call(method, {"project": project, "tasks": [task]})
            action = out.get("action") or verb
            self.call_from_thread(self._show_message, f"{project}/{task}: {action}")
        except (DaemonUnavailable, RpcError) as exc:
            self.call_from_thread(self._show_message, f"{project}/{task}: {exc.message}")
        self.call_from_thread(self.refresh_data)

    def action_attach(self) -> None:
        row = self._current()
        if row is None:
            return
        argv = [sys.executable, "-m", "taskmuxctl", "attach", row.task, "-p", row.project]
        with self.suspend():
            done = subprocess.run(argv, check=False)
        if done.returncode:
            self._show_message(f"attach {row.key} failed (exit {done.returncode})")
        self.refresh_data()

    def action_open_url(self) -> None:
        row = self._current()
        if row is None or row.url == "-":
            self._show_message("this task has no URL")
            return
        # `taskmux open` knows the browsers ($BROWSER may need this very terminal)
        argv = [sys.executable, "-m", "taskmuxctl", "open", row.task, "-p", row.project]
        with self.suspend():
            subprocess.run(argv, check=False, stdin=subprocess.DEVNULL)
        self._show_message(f"opened {row.url}")

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.text = event.value.strip()
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        del event
        self.query_one("#tasks", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.text = ""
        self.query_one("#tasks", DataTable).focus()
        self._redraw()

    def action_next_project(self) -> None:
        self.project = model.next_project(self.projects, self.project)
        self._redraw()


def run(paths: Paths, project: str | None = None) -> None:
    TopApp(paths, project).run()
