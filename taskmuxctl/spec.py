"""The command-line surface as data: every command, its arguments and its handler.

Both parsers read this table: argparse (help, errors, completion, anything unusual) and the
fast path in ``fastparse`` (the plain forms of the commands people and agents run most).
Handlers are named as ``module:function`` strings and imported only when run, so reading the
table costs nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


class Arg:
    """One argument of a command: the subset of argparse's vocabulary taskmux uses."""

    __slots__ = ("action", "choices", "complete", "default", "dest", "flags", "help", "metavar",
                 "nargs", "type")

    def __init__(self, flags: tuple[str, ...], help: str, *, dest: str | None = None,
                 action: str = "store", default: Any = None, nargs: str | int | None = None,
                 choices: tuple[str, ...] | None = None, metavar: str | None = None,
                 type: str | None = None, complete: str | None = None) -> None:
        self.flags = flags  # ("-p", "--project"), or ("task",) for a positional
        self.help = help
        self.dest = dest
        self.action = action  # store | store_true | append | count
        self.default = default
        self.nargs = nargs
        self.choices = choices
        self.metavar = metavar
        self.type = type  # "int" | "float"
        self.complete = complete  # a key of completers.COMPLETERS

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    @property
    def name(self) -> str:
        if self.dest:
            return self.dest
        if self.positional:
            return self.flags[0]
        longest = max(self.flags, key=len)
        return longest.lstrip("-").replace("-", "_")

    def default_value(self) -> Any:
        if self.action == "store_true":
            return False
        if self.action == "count":
            return 0 if self.default is None else self.default
        if self.nargs in ("*", "+") and self.default is None:
            return [] if self.nargs == "*" else None
        return self.default

    @property
    def optional_when_bare(self) -> bool:
        """True when the command may be given without this argument."""
        if not self.positional:
            return True
        return self.nargs in ("*", "?")


class Cmd:
    """A command: its words, its handler (``module:function``), help and arguments."""

    __slots__ = ("aliases", "args", "description", "handler", "help", "path")

    def __init__(self, path: tuple[str, ...], handler: str, help: str,
                 args: tuple[Arg, ...] = (), aliases: tuple[str, ...] = (),
                 description: str | None = None) -> None:
        self.path = path
        self.handler = handler
        self.help = help
        self.args = args
        self.aliases = aliases
        self.description = description


class Group:
    """Words that only lead to commands (``daemon``, ``config``)."""

    __slots__ = ("aliases", "default", "description", "help", "path")

    def __init__(self, path: tuple[str, ...], help: str, default: str | None = None) -> None:
        self.path = path
        self.help = help
        self.default = default  # the command the group word alone runs (else: usage)
        self.aliases: tuple[str, ...] = ()
        self.description: str | None = None


PROJECT = Arg(("-p", "--project"), "the project's name (default: the taskmux.toml here)",
              metavar="NAME", complete="projects")
TASKS = Arg(("tasks",), "task names (default: all)", nargs="*", metavar="TASK", complete="tasks")
TASK = Arg(("task",), "the task's name", complete="tasks")

GROUPS: tuple[Group, ...] = (
    # `taskmux daemon` alone runs the daemon in the foreground, as taskmux 0.6 did.
    Group(("daemon",), "run, stop and inspect the per-machine daemon (alone: `daemon run`)",
          default="run"),
    Group(("config",), "show and change the global settings (config.toml)"),
    Group(("ca",), "the local certificate authority behind the https task URLs"),
    Group(("dns",), "how *.localhost task names resolve"),
    Group(("fleet",), "other machines' daemons, over ssh (hosts in ~/.taskmux/fleet.toml)",
          default="status"),
)

# fleet start|stop|restart take the same arguments.
FLEET_ACTION_ARGS = (
    Arg(("tasks",), "task names (default: all)", nargs="*", metavar="TASK"),
    Arg(("-p", "--project"), "the project (default: every project of each machine)",
        metavar="NAME"),
    Arg(("-g", "--group"), "only the machines of this group (or this one machine)",
        metavar="GROUP"),
    Arg(("--deadline",), "seconds each machine has (default 30)", type="float",
        default=30.0, metavar="SECONDS"))

COMMANDS: tuple[Cmd, ...] = (
    Cmd(("version",), "taskmuxctl.commands.misc:version",
        "print the client's version (and the daemon's, when it runs)"),
    Cmd(("completion",), "taskmuxctl.commands.misc:completion",
        "print the shell code that enables tab completion",
        args=(Arg(("shell",), "the shell", choices=("bash", "zsh", "fish")),)),
    Cmd(("daemon", "start"), "taskmuxctl.commands.daemon:start",
        "start the daemon in the background if it is not running"),
    Cmd(("daemon", "stop"), "taskmuxctl.commands.daemon:stop",
        "stop the daemon (tasks keep running)"),
    Cmd(("daemon", "restart"), "taskmuxctl.commands.daemon:restart",
        "stop the daemon and start it again (tasks keep running)"),
    Cmd(("daemon", "status"), "taskmuxctl.commands.daemon:status",
        "is the daemon running? (exit 0 running, 3 not running, 1 dead, 4 not answering)"),
    Cmd(("daemon", "install"), "taskmuxctl.commands.service:install",
        "run the daemon as a service (systemd or launchd): started at boot, restarted on "
        "failure; re-running changes only what is not right",
        args=(Arg(("--user",), "the user the daemon works for (default: you, or whoever ran "
                  "sudo)", metavar="NAME"),
              Arg(("--system",), "the system service: starts as root, binds :443/:80 and "
                  "DNS, then drops to the user (the default as root)", action="store_true"),
              Arg(("--user-unit",), "a per-user service without root: the proxy uses "
                  "unprivileged ports (the default otherwise)", action="store_true"),
              Arg(("--dry-run",), "show the files and steps; change nothing",
                  action="store_true"))),
    Cmd(("daemon", "uninstall"), "taskmuxctl.commands.service:uninstall",
        "stop and remove the service (the state directory and tasks are kept)",
        args=(Arg(("--user",), "whose service (default: you, or whoever ran sudo)",
                  metavar="NAME"),
              Arg(("--system",), "the system service", action="store_true"),
              Arg(("--user-unit",), "the per-user service", action="store_true"))),
    Cmd(("daemon", "run"), "taskmuxctl.commands.daemon:run",
        "run the daemon in the foreground (same as `taskmuxd run`)",
        args=(Arg(("--log-file",), "log to this file instead of stderr", metavar="PATH"),)),
    Cmd(("doctor",), "taskmuxctl.commands.doctor:doctor",
        "check tmux, Python, the state directory, the daemon, the service, the proxy, DNS, "
        "the CA and updates; say how to fix what is wrong (exit 1 if anything failed)"),
    Cmd(("config", "show"), "taskmuxctl.commands.config:show",
        "show every setting with its value (defaults included)"),
    Cmd(("config", "set"), "taskmuxctl.commands.config:set_",
        "validate and write one setting (an empty value restores the default)",
        args=(Arg(("key",), "the setting", complete="settings"),
              Arg(("value",), "its new value"))),
    Cmd(("config", "path"), "taskmuxctl.commands.config:path", "print the settings file's path"),
    Cmd(("start",), "taskmuxctl.commands.project:start",
        "start the auto_start tasks (or the named ones and what they depend on) in dependency "
        "order", args=(TASKS, PROJECT,
                       Arg(("-m", "--monitor"), "then stream the project's events until Ctrl-C",
                           action="store_true"),
                       Arg(("-w", "--wait"), "then block until what it started is healthy "
                           "(running, without probes; completed, for one-shots); non-zero "
                           "with the reason when it cannot be", action="store_true"),
                       Arg(("--timeout",), "with --wait: give up after S seconds (default "
                           "120; exit 124)", type="float", default=120.0, metavar="S"),
                       Arg(("-d", "--daemon"), "accepted for taskmux 0.6 (the daemon always runs)",
                           action="store_true"),
                       Arg(("--force",), "take over the project name from another registered "
                           "taskmux.toml", action="store_true"))),
    Cmd(("run",), "taskmuxctl.commands.run:run",
        "start TASK (and what it depends on), wait for it to finish, print its log, stop what "
        "this started, and exit with TASK's exit code (CI: a test suite against the stack)",
        args=(TASK, PROJECT,
              Arg(("--timeout",), "give up after S seconds (exit 124; default: none)",
                  type="float", metavar="S"))),
    Cmd(("stop",), "taskmuxctl.commands.project:stop",
        "stop tasks: C-c, then SIGTERM, then SIGKILL; they stay stopped until started",
        args=(TASKS, PROJECT)),
    Cmd(("restart",), "taskmuxctl.commands.project:restart", "stop and start tasks again",
        args=(TASKS, PROJECT)),
    Cmd(("kill",), "taskmuxctl.commands.project:kill",
        "SIGKILL a task now and close its window", args=(TASK, PROJECT)),
    Cmd(("status",), "taskmuxctl.commands.project:status",
        "the project's tasks: state, pid, port, health, restarts, uptime, URL",
        args=(PROJECT,), aliases=("list", "ls")),
    Cmd(("wait",), "taskmuxctl.commands.wait:wait",
        "block until tasks are healthy (or running, or completed); non-zero with the reason "
        "when they cannot be",
        args=(Arg(("tasks",), "task names (default: the auto_start tasks)", nargs="*",
                  metavar="TASK", complete="tasks"), PROJECT,
              Arg(("--timeout",), "give up after S seconds (default 120)", type="float",
                  default=120.0, metavar="S"),
              Arg(("--for",), "the condition (default: healthy)", dest="condition",
                  choices=("healthy", "running", "completed"), default="healthy"))),
    Cmd(("inspect",), "taskmuxctl.commands.project:inspect", "a task's full state as JSON",
        args=(TASK, PROJECT)),
    Cmd(("health",), "taskmuxctl.commands.project:health", "the tasks' health checks",
        args=(PROJECT, Arg(("-v", "--verbose"), "show the probe and the failure reason",
                           action="store_true"))),
    Cmd(("url",), "taskmuxctl.commands.project:url", "print a task's https URL",
        args=(TASK, PROJECT)),
    Cmd(("check",), "taskmuxctl.commands.project:check",
        "validate taskmux.toml without starting anything",
        args=(Arg(("-c", "--config"), "the file (default: the taskmux.toml here or above)",
                  metavar="PATH"),)),
    Cmd(("add",), "taskmuxctl.commands.edit:add",
        "add a task to taskmux.toml (comments and layout kept)",
        args=(Arg(("task",), "the new task's name"), Arg(("command",), "the shell command"),
              Arg(("--cwd",), "working folder, relative to taskmux.toml", metavar="DIR"),
              Arg(("--host",), "serve it at https://HOST.PROJECT.localhost", metavar="HOST"),
              Arg(("--depends-on",), "a task it needs first (repeatable)", action="append",
                  metavar="TASK", complete="tasks"),
              Arg(("--no-auto-start",), "do not start it with the project",
                  action="store_true"),
              Arg(("--restart-policy",), "no, on-failure (default) or always",
                  choices=("no", "on-failure", "always")),
              Arg(("--health-url",), "HTTP health check URL ($PORT allowed)", metavar="URL"),
              Arg(("--health-check",), "shell health check command", metavar="CMD"),
              PROJECT)),
    Cmd(("remove",), "taskmuxctl.commands.edit:remove",
        "stop a task and remove it from taskmux.toml", args=(TASK, PROJECT)),
    Cmd(("logs",), "taskmuxctl.commands.logs:logs",
        "task logs (one task, or all interleaved by time); works while the daemon is down",
        args=(Arg(("task",), "one task (default: all)", nargs="?", complete="tasks"), PROJECT,
              Arg(("-n", "--lines"), "the last N lines", type="int", default=100, metavar="N"),
              Arg(("-f", "--follow"), "keep printing new lines (through rotation)",
                  action="store_true"),
              Arg(("-g", "--grep"), "only lines matching this regular expression",
                  metavar="PATTERN"),
              Arg(("-C", "--context"), "lines of context around --grep matches", type="int",
                  default=0, metavar="N"),
              Arg(("--since",), "only lines newer than 30s, 5m, 1h, 2d or an ISO time (UTC)",
                  metavar="WHEN"))),
    Cmd(("logs-clean",), "taskmuxctl.commands.logs:clean", "delete a task's (or all) log files",
        args=(Arg(("task",), "one task (default: all)", nargs="?", complete="tasks"),
              PROJECT)),
    Cmd(("events",), "taskmuxctl.commands.events:events",
        "the event history (starts, stops, exits, restarts, health, reloads)",
        args=(PROJECT, Arg(("--task",), "only this task", metavar="TASK", complete="tasks"),
              Arg(("--since",), "only events newer than 30s, 5m, 1h, 2d or an ISO time",
                  metavar="WHEN"),
              Arg(("-n", "--lines"), "the last N events", type="int", metavar="N"),
              Arg(("-f", "--follow"), "keep printing new events", action="store_true"),
              Arg(("--all-projects",), "every project, not just this one",
                  action="store_true"))),
    Cmd(("watch",), "taskmuxctl.commands.events:watch",
        "show config reloads (and what they start, stop, restart) as they happen",
        args=(PROJECT, Arg(("--all-projects",), "every project", action="store_true"))),
    Cmd(("init",), "taskmuxctl.commands.init:init",
        "write a taskmux.toml for this folder from what it finds (package.json dev script, "
        "manage.py, Procfile, compose file), then the agent block in CLAUDE.md/AGENTS.md; asks "
        "on a terminal",
        args=(Arg(("--defaults",), "take every proposal without asking", action="store_true"),
              Arg(("--force",), "replace an existing taskmux.toml (kept as taskmux.toml.bak)",
                  action="store_true"),
              Arg(("--no-agent-context",), "write agent_context = false and leave CLAUDE.md "
                  "and AGENTS.md alone", action="store_true"))),
    Cmd(("inject",), "taskmuxctl.commands.init:inject",
        "refresh the taskmux block in CLAUDE.md / AGENTS.md (existing ones; AGENTS.md is "
        "created when there is neither); agent_context = false removes it",
        args=(Arg(("--print",), "print the block; write nothing", action="store_true"),
              Arg(("-c", "--config"), "the taskmux.toml (default: here or above)",
                  metavar="PATH"))),
    Cmd(("send",), "taskmuxctl.commands.pane:send",
        "type into a task's pane: the text, then Enter; multi-line text is pasted as one "
        "(bracketed) paste",
        args=(TASK, Arg(("text",), "the text (words are joined with spaces)", nargs="*",
                        metavar="TEXT"),
              Arg(("--no-enter",), "do not press Enter after the text", action="store_true"),
              Arg(("--keys",), "then press these keys (tmux names: C-c, Enter, Up, Escape...)",
                  nargs="+", metavar="KEY"),
              PROJECT)),
    Cmd(("attach",), "taskmuxctl.commands.pane:attach",
        "attach this terminal to the project's tmux session at the task's window (inside "
        "tmux: switch to it)",
        args=(Arg(("task",), "the task's window (default: the session as it is)", nargs="?",
                  complete="tasks"), PROJECT)),
    Cmd(("top",), "taskmuxctl.commands.top:top",
        "live full-screen view of every project's tasks: state, health, CPU, memory, "
        "restarts, URL, last error, the selected task's log; keys to start, stop, restart, "
        "attach, open (also: bare `taskmux` on a terminal)",
        args=(Arg(("-p", "--project"), "show only this project (p switches in the view)",
                  metavar="NAME", complete="projects"),)),
    Cmd(("dashboard",), "taskmuxctl.commands.urls:dashboard",
        "open the web dashboard (https://taskmux.localhost) in the browser, with a session "
        "that may start, stop and restart",
        args=(Arg(("--print-url",), "print the one-time link instead of opening a browser",
                  action="store_true"),)),
    Cmd(("open",), "taskmuxctl.commands.urls:open_",
        "open a task's URL in the browser ($BROWSER, open or xdg-open), or print it",
        args=(TASK, PROJECT)),
    Cmd(("env",), "taskmuxctl.commands.urls:env",
        "print TASKMUX_PROJECT and TASKMUX_URL_<TASK> exports for eval, .envrc or scripts",
        args=(Arg(("--shell",), "the shell's syntax (default: from $SHELL, else bash)",
                  choices=("bash", "zsh", "fish")), PROJECT)),
    Cmd(("mcp",), "taskmuxctl.commands.mcp:serve",
        "run the MCP server on stdin/stdout (for coding agents; `mcp install` configures "
        "them)"),
    Cmd(("mcp", "install"), "taskmuxctl.commands.mcp:install",
        "add taskmux's MCP server to a coding agent's config (project-scoped where the agent "
        "supports it); re-running changes nothing",
        args=(Arg(("client",), "the agent", choices=("claude", "codex", "cursor", "opencode")),
              Arg(("--scope",), "project (this project's file) or user (your own config); "
                  "default: project, but user for codex", choices=("project", "user")),
              Arg(("--name",), "the server's name in the config (default: taskmux)",
                  metavar="NAME"))),
    Cmd(("daemon", "list"), "taskmuxctl.commands.registry:list_",
        "every registered project with its state and running tasks"),
    Cmd(("daemon", "register"), "taskmuxctl.commands.registry:register",
        "register the taskmux.toml here (or -c PATH) with the daemon",
        args=(Arg(("-c", "--config"), "the taskmux.toml to register", metavar="PATH"),
              Arg(("-f", "--force"), "replace another registration of the same name",
                  action="store_true"))),
    Cmd(("daemon", "unregister"), "taskmuxctl.commands.registry:unregister",
        "stop a project's tasks and forget it",
        args=(Arg(("name",), "the project's name", complete="projects"),)),
    Cmd(("ca", "install"), "taskmuxctl.commands.ca:install",
        "trust the local CA: system store (needs sudo) and browsers' NSS databases"),
    Cmd(("ca", "uninstall"), "taskmuxctl.commands.ca:uninstall",
        "remove the local CA from the trust stores"),
    Cmd(("ca", "mint"), "taskmuxctl.commands.ca:mint",
        "mint a fresh certificate for a project (default: the taskmux.toml here, else all)",
        args=(Arg(("project",), "the project's name", nargs="?", complete="projects"),)),
    Cmd(("ca", "path"), "taskmuxctl.commands.ca:path",
        "print the CA certificate's path (creating the CA on first use)"),
    Cmd(("dns", "install"), "taskmuxctl.commands.dns:install",
        "make *.localhost names resolve as host_resolver says (hosts block or resolver "
        "delegation; needs sudo)"),
    Cmd(("dns", "uninstall"), "taskmuxctl.commands.dns:uninstall",
        "remove the hosts block and the resolver delegation (needs sudo)"),
    Cmd(("dns", "query"), "taskmuxctl.commands.dns:query",
        "ask taskmux's DNS server directly",
        args=(Arg(("name",), "the name to look up"),
              Arg(("-t", "--type"), "record type (default: A)", default="A", metavar="TYPE"))),
    Cmd(("dns", "flush"), "taskmuxctl.commands.dns:flush", "flush the system's DNS caches"),
    Cmd(("fleet", "add"), "taskmuxctl.commands.fleet:add",
        "add (or change) a machine in fleet.toml",
        args=(Arg(("name",), "a short name for it"),
              Arg(("target",), "how to reach it: ssh://[USER@]HOST[:PORT]"),
              Arg(("-g", "--group"), "a group it belongs to (repeat for more)",
                  action="append", metavar="GROUP"))),
    Cmd(("fleet", "remove"), "taskmuxctl.commands.fleet:remove",
        "remove a machine from fleet.toml", args=(Arg(("name",), "its name"),)),
    Cmd(("fleet", "list"), "taskmuxctl.commands.fleet:list_", "the machines in fleet.toml"),
    Cmd(("fleet", "status"), "taskmuxctl.commands.fleet:status",
        "one table across the machines: reachable, daemon version, projects, tasks up, "
        "unhealthy tasks (asked in parallel; exit 1 unless every machine answered)",
        args=(Arg(("-g", "--group"), "only the machines of this group (or this one machine)",
                  metavar="GROUP"),
              Arg(("--deadline",), "seconds each machine has to answer (default 10)",
                  type="float", default=10.0, metavar="SECONDS"))),
    Cmd(("fleet", "start"), "taskmuxctl.commands.fleet:start",
        "start tasks on every machine (or a group's), in parallel; exit 1 unless all did",
        args=FLEET_ACTION_ARGS),
    Cmd(("fleet", "stop"), "taskmuxctl.commands.fleet:stop",
        "stop tasks on every machine (or a group's), in parallel",
        args=FLEET_ACTION_ARGS),
    Cmd(("fleet", "restart"), "taskmuxctl.commands.fleet:restart",
        "restart tasks on every machine (or a group's), in parallel",
        args=FLEET_ACTION_ARGS),
    Cmd(("fleet", "logs"), "taskmuxctl.commands.fleet:logs",
        "a project's task logs from every machine (or a group's) at once, each line marked "
        "with its machine",
        args=(Arg(("task",), "one task (default: all)", nargs="?"),
              Arg(("-p", "--project"), "the project", metavar="NAME"),
              Arg(("-g", "--grep"), "only lines matching this regular expression",
                  metavar="PATTERN"),
              Arg(("-n", "--lines"), "the last N lines of each", type="int", default=100,
                  metavar="N"),
              Arg(("-f", "--follow"), "keep printing new lines", action="store_true"),
              Arg(("--since",), "only lines newer than 30s, 5m, 1h, 2d or an ISO time",
                  metavar="WHEN"),
              Arg(("--group",), "only the machines of this group (or this one machine)",
                  metavar="GROUP"))),
    Cmd(("fleet", "events"), "taskmuxctl.commands.fleet:events",
        "the event history of every machine (or a group's), each marked with its machine",
        args=(Arg(("-p", "--project"), "only this project (default: every project)",
                  metavar="NAME"),
              Arg(("--since",), "only events newer than 30s, 5m, 1h, 2d or an ISO time",
                  metavar="WHEN"),
              Arg(("-n", "--lines"), "the last N events of each", type="int", metavar="N"),
              Arg(("-f", "--follow"), "keep printing new events", action="store_true"),
              Arg(("-g", "--group"), "only the machines of this group (or this one machine)",
                  metavar="GROUP"))),
    Cmd(("fleet", "update"), "taskmuxctl.commands.fleet:update",
        "roll a release out: canaries first, then waves, each machine watched for the soak "
        "time; halts at the first failure and marks the release bad on every machine",
        args=(Arg(("--to",), "the version (default: the newest one the machines' channel "
                  "offers)", metavar="VERSION"),
              Arg(("--canary",), "machines updated first, alone (default 1)", type="int",
                  default=1, metavar="N"),
              Arg(("--wave",), "machines updated at once after the canaries (default 1)",
                  type="int", default=1, metavar="SIZE"),
              Arg(("--soak",), "seconds each updated machine must stay well before the next "
                  "stage (default 60)", type="float", default=60.0, metavar="SECONDS"),
              Arg(("--settle",), "seconds a machine has to answer as the new version with "
                  "its tasks well (default 120)", type="float", default=120.0,
                  metavar="SECONDS"),
              Arg(("--timeout",), "seconds one machine's own update may take (default 900)",
                  type="float", default=900.0, metavar="SECONDS"),
              Arg(("--force",), "roll out a version marked bad somewhere, and downgrade "
                  "machines that run a newer one", action="store_true"),
              Arg(("-g", "--group"), "only the machines of this group (or this one machine)",
                  metavar="GROUP"))),
    Cmd(("dial-stdio",), "taskmuxctl.commands.remote:dial_stdio",
        "bridge this machine's daemon socket to stdin/stdout (what `--host ssh://...` runs "
        "on the other machine)",
        args=(Arg(("--protocol",), "the caller's protocol version (refused when it differs)",
                  type="int", metavar="N"),)),
    Cmd(("update",), "taskmuxctl.commands.update:update",
        "update taskmux to the latest signed release (tasks keep running)",
        args=(Arg(("--check",), "only say whether an update is available; change nothing "
                  "(exit 0 up to date, 10 update available)", action="store_true"),
              Arg(("--to",), "install exactly this version, older ones included",
                  metavar="VERSION"),
              Arg(("--rollback",), "switch back to the previous version and stay on it until "
                  "the next explicit update", action="store_true"),
              Arg(("--channel",), "read the release manifest (release.json) from this URL "
                  "instead of the release_url setting", metavar="URL"),
              Arg(("--auto",), "decide as auto-update does: never downgrade, skip versions "
                  "marked bad, keep a rollback pin", action="store_true"),
              Arg(("--timeout",), "give up the download after this many seconds (default 600)",
                  type="float", metavar="SECONDS"),
              Arg(("--mark-bad",), "record VERSION as bad here and change nothing else: "
                  "auto-update skips it, a plain update refuses it (what `fleet update` "
                  "does on every machine when a canary fails)", metavar="VERSION"),
              Arg(("--reason",), "with --mark-bad: why (shown by `update --check`)",
                  metavar="TEXT")),
        description="Fetch the release manifest, verify its Ed25519 signature, download and "
        "check the package, install it next to the running version, check that it loads, "
        "switch to it and restart the daemon onto it; a version that does not come up is "
        "rolled back and marked bad."),
)


# How `taskmux --help` groups the top-level words: what people run every day first.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("everyday commands", ("start", "stop", "restart", "status", "top", "logs", "events",
                           "attach")),
    ("more on tasks", ("health", "wait", "run", "inspect", "url", "open", "dashboard", "env",
                       "send", "kill", "watch", "logs-clean")),
    ("the project file (taskmux.toml)", ("init", "check", "add", "remove", "inject")),
    ("the daemon and the machine", ("daemon", "config", "doctor", "ca", "dns", "update",
                                    "mcp", "completion", "version", "fleet", "dial-stdio")),
)


def find(path: tuple[str, ...]) -> Cmd | None:
    for cmd in COMMANDS:
        if cmd.path == path:
            return cmd
    return None
