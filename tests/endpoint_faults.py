"""A local HTTP server that misbehaves on purpose, for the error paths of the endpoint client
(rate limits, server errors, hangs, malformed or oversized JSON). It serves no model: audits
are proven against a real vLLM server (tests/test_served.py); this only proves that what a
broken or hostile server sends becomes one line and exit code 2."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A reply: (status, headers, body bytes); a rule maps (method, path, body) to one, or None to
# fall through to ``upstream`` (a dict of path -> JSON value) when given.
Reply = tuple[int, dict[str, str], bytes]
Rule = Callable[[str, str, dict | None], Reply | None]


def json_reply(value, status: int = 200, headers: dict | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, \
        json.dumps(value).encode()


class FaultServer:
    """``rule`` decides every reply; ``requests`` lists (method, path, body, headers) seen;
    ``in_flight_max`` is the most requests handled at once."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.requests: list[tuple[str, str, dict | None, dict]] = []
        self.in_flight = self.in_flight_max = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with server._lock:
                    server.requests.append((method, self.path, body, dict(self.headers)))
                    server.in_flight += 1
                    server.in_flight_max = max(server.in_flight_max, server.in_flight)
                try:
                    status, headers, payload = server.rule(method, self.path, body)
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    if "Content-Length" not in headers and "X-No-Length" not in headers:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def posts(self, path: str) -> list[dict]:
        return [body for method, p, body, _ in self.requests if method == "POST" and p == path]


@contextmanager
def fault_server(rule: Rule) -> Iterator[FaultServer]:
    server = FaultServer(rule)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def slow(seconds: float, reply: Reply) -> Reply:
    time.sleep(seconds)
    return reply
