"""A real HTTP server on 127.0.0.1 that misbehaves on request, for the sources tests.

It serves bytes from memory, honours Range (or not), drops connections part-way, answers
queued error statuses, and redirects (a GitHub ``raw/`` URL of a Git LFS file answers 302 to
the LFS storage host). Every request is recorded with its headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class ServerState:
    """What the test server serves and how it misbehaves; requests are recorded."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, first request only
    fail_with: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to send first
    ranges: bool = True  # False: ignore Range headers and always answer 200
    bad_range_start: bool = False  # answer 206 with a Content-Range that starts at 0
    content_type: str = "application/octet-stream"
    redirects: dict[str, str] = field(default_factory=dict)  # path -> URL path to 302 to
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def ranged(self, path: str) -> list[str]:
        return [h["Range"] for p, h in self.requests if p == path and "Range" in h]

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        st = self.server.state
        path = urlsplit(self.path).path
        with st.lock:
            st.requests.append((path, dict(self.headers)))
            queued = st.fail_with.get(path)
            code = queued.pop(0) if queued else None
            drop = st.drop_after.pop(path, None)
        if code is not None:
            self.send_error(code)
            return
        if path in st.redirects:
            self.send_response(302)
            self.send_header("Location", st.base + st.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = st.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and st.ranges:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", st.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        if status == 206:
            first = 0 if st.bad_range_start else start
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if drop is not None:
            # Send part of the body, then cut the connection: the client sees a short read.
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextlib.contextmanager
def serve() -> Iterator[ServerState]:
    state = ServerState()
    httpd = _Server(state)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
