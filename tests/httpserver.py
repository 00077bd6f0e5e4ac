"""A local HTTP server on 127.0.0.1 with misbehaving endpoints, for the download tests.

Paths: ``/good/<name>`` (Range supported), ``/norange/<name>`` (ignores Range), ``/truncated/<name>``
(announces the full length, sends half, closes), ``/corrupt/<name>`` (same length, other bytes),
``/interrupt/<name>`` (the first request breaks off halfway; later ones honour Range),
``/flaky/<name>`` (the first two requests answer 503), anything else 404.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultyServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.hits: dict[str, int] = defaultdict(int)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                parts = self.path.strip("/").split("/", 1)
                mode, name = [*parts, ""][:2]
                data = server.files.get(name)
                server.hits[self.path] += 1
                if data is None or mode not in (
                    "good",
                    "norange",
                    "truncated",
                    "corrupt",
                    "interrupt",
                    "flaky",
                ):
                    self.send_error(404)
                    return
                if mode == "flaky" and server.hits[self.path] <= 2:
                    self.send_error(503)
                    return
                if mode == "corrupt":
                    data = bytes(b ^ 0xFF for b in data)
                start = 0
                rng = self.headers.get("Range")
                if rng and mode in ("good", "interrupt", "flaky"):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "truncated" or (mode == "interrupt" and server.hits[self.path] == 1):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
