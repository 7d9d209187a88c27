"""A task for bench/hostile.py's smuggling attack: an HTTP/1.1 server on $PORT that records
every request it receives, one JSON line each, in the file named by its argument.

It parses as Python's http.server does (a bare LF ends a header line; the first of two
Content-Length headers wins; Transfer-Encoding: chunked wins over Content-Length), like many
dev servers: whatever the proxy lets through ambiguous, this backend reads its own way, so a
request hidden from the proxy shows up here as a request of its own. Standard library only.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading

_LOCK = threading.Lock()


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record_path = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            size = 0
            while True:
                line = self.rfile.readline(1024)
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return size
                size += len(self.rfile.read(n))
                self.rfile.readline(1024)
        return len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def _handle(self) -> None:
        try:
            body = self._body()
        except ValueError:
            self.send_error(400)
            return
        entry = {"method": self.command, "path": self.path, "body": body,
                 "headers": [[k, v] for k, v in self.headers.items()]}
        with _LOCK, open(self.record_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def main() -> None:
    Recorder.record_path = sys.argv[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Recorder)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
