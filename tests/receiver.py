"""A webhook receiver for tests: a local http.server in a thread, answering from a script.

``Receiver(answers)`` answers each request with the next scripted answer (the
last one repeats): a status code, or ``(status, headers)``, or
``(status, headers, delay_seconds)`` to answer late (read timeouts). Every
request is kept: method, path, headers (lower-case names) and raw body.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], float]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, answers: list[Answer], tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(
                        Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                status, headers, delay = _parts(answer)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (a read timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/herald"

    def answer(self, *answers: Answer) -> None:
        with self.lock:
            self.answers = list(answers)


def _parts(answer: Answer) -> tuple[int, dict[str, str], float]:
    if isinstance(answer, int):
        return answer, {}, 0.0
    if len(answer) == 2:
        return answer[0], answer[1], 0.0
    return answer  # type: ignore[return-value]


@contextmanager
def receiving(*answers: Answer, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A running receiver (stopped afterwards)."""
    receiver = Receiver(list(answers) or [200], tls)
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
