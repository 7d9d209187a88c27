"""Running systemctl and launchctl: a small ``subprocess.run`` without subprocess.

``subprocess`` pulls in ``locale``, ``re`` and ``enum`` (about 15 ms, as much as the rest of
a ``daemon status`` call); ``os.posix_spawnp`` and ``select`` cost nothing, so the status of
an installed service stays fast.
"""

from __future__ import annotations

import os
import select
import time

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from collections.abc import Mapping


class Completed:
    __slots__ = ("argv", "returncode", "stderr", "stdout")

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"Completed({self.argv!r}, {self.returncode})"


def run(argv: list[str], timeout: float = 90.0, env: Mapping[str, str] | None = None
        ) -> Completed:
    """Run ``argv`` (looked up on PATH) with stdin from /dev/null; collect its output.

    Raises FileNotFoundError when the program is not found, TimeoutError (after killing it)
    when it runs past ``timeout`` seconds.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawnp(
            argv[0], argv, dict(os.environ if env is None else env),
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    open_fds = [out_r, err_r]
    deadline = time.monotonic() + timeout
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                import signal  # only on this rare path: the client's start-up stays light

                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"{' '.join(argv)} did not finish within {timeout:.0f}s")
            ready, _, _ = select.select(open_fds, [], [], left)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(out_r)
        os.close(err_r)
    code = os.waitstatus_to_exitcode(status)
    return Completed(argv, code, b"".join(chunks[out_r]).decode(errors="replace"),
                     b"".join(chunks[err_r]).decode(errors="replace"))
