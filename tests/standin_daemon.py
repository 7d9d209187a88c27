"""A stand-in for taskmuxd on a state directory's ``ctl.sock``, for the client's tests.

``python standin_daemon.py MODE HOME``: listens on HOME/ctl.sock, then records its pid in
HOME/daemon.pid (renamed into place whole: a test waits for that pid to know it listens), and
for each connection it accepts, records the count in HOME/standin.accepted before acting:

- ``reset``: reset the first connection without reading a byte (SO_LINGER 0) and exit, as a
  daemon killed while its socket still accepted;
- ``partial``: read the request, send the first bytes of a reply, close and exit (part of a
  reply was read: no retry);
- ``close``: read the request, close without answering, and stay alive (a live daemon with a
  protocol problem), for every connection until killed.
"""

from __future__ import annotations

import os
import socket
import struct
import sys


def record(path: str, text: str) -> None:
    with open(path + ".new", "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(path + ".new", path)


def main() -> None:
    mode, home = sys.argv[1], sys.argv[2]
    sock_path = os.path.join(home, "ctl.sock")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(8)
    record(os.path.join(home, "daemon.pid"), f"{os.getpid()}\n")
    accepted = 0
    while True:
        conn, _ = server.accept()
        accepted += 1
        record(os.path.join(home, "standin.accepted"), str(accepted))
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        read_request(conn)
        if mode == "partial":
            conn.sendall(b'{"jsonrpc": "2.0", "id": 1, "res')
            conn.close()
            return
        conn.close()


def read_request(conn: socket.socket) -> None:
    conn.settimeout(10)
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


if __name__ == "__main__":
    main()
