"""The demo API: JSON over HTTP on $PORT (taskmux assigns the port)."""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()
HITS = {"count": 0}


class Api(BaseHTTPRequestHandler):
    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")  # the web page is on another host
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {"ok": True, "uptime": round(time.time() - STARTED, 1)})
        elif self.path == "/hello":
            HITS["count"] += 1
            self._json(200, {"message": "hello from the taskmux demo API",
                             "hits": HITS["count"], "pid": os.getpid()})
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"api: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}",
              flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"api listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Api).serve_forever()
