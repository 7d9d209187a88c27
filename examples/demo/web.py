"""The demo web page, served on $PORT; its script calls the API through its https URL."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>taskmux demo</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>taskmux demo</h1>
<p>This page is served by the <code>web</code> task at <code>{self_url}</code>.</p>
<p>The API task (<code>{api_url}</code>) says: <strong id="out">…</strong></p>
<script>
fetch("{api_url}/hello").then(r => r.json())
  .then(j => document.getElementById("out").textContent = j.message + " (hit " + j.hits + ")")
  .catch(e => document.getElementById("out").textContent = "unreachable: " + e);
</script>
</body></html>
"""


class Web(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        host = self.headers.get("X-Forwarded-Host") or self.headers.get("Host", "")
        project = os.environ.get("TASKMUX_PROJECT", "demo")
        suffix = ""
        if ":" in host:
            suffix = ":" + host.rsplit(":", 1)[1]
        body = PAGE.format(self_url=f"https://{host}",
                           api_url=f"https://api.{project}.localhost{suffix}").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"web: {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"web listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Web).serve_forever()
