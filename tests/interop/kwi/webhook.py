"""A local webhook receiver on 127.0.0.1 that records every POST."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.posts: list[dict] = []  # {"t", "path", "body" (parsed JSON or raw text)}
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "WebhookReceiver":
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with recv.lock:
                    recv.posts.append({"t": time.time(), "path": self.path, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def bodies(self) -> list[dict]:
        with self.lock:
            return [dict(p) for p in self.posts]

    def dump(self, path) -> None:
        from pathlib import Path
        Path(path).write_text(json.dumps(self.bodies(), indent=1, default=str) + "\n")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
