"""Real local receivers for the alert tests: an HTTP server that takes apprise's ``json://``
webhook posts, and an SMTP server (aiosmtpd) that takes its e-mail. Each keeps what it got."""

from __future__ import annotations

import email
import json
import socket
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpReceiver:
    """A webhook receiver on 127.0.0.1: ``messages`` are the JSON bodies posted to it.

    ``start()`` may be called after the port was handed out (a receiver that was down and
    comes up); ``stop()`` takes it down again.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    def url(self, credentials: str = "") -> str:
        """The apprise URL of this receiver (``credentials``: ``user:password`` to send)."""
        at = f"{credentials}@" if credentials else ""
        return f"json://{at}127.0.0.1:{self.port}/hook"

    def start(self) -> HttpReceiver:
        messages = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                messages.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class SmtpReceiver:
    """An SMTP server (aiosmtpd) on 127.0.0.1: ``mails`` are the messages it accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Message] = []
        self._controller = None

    def url(self) -> str:
        return (
            f"mailto://127.0.0.1:{self.port}?from=panel@example.com&to=ops@example.com"
            "&format=text"
        )

    def start(self) -> SmtpReceiver:
        from aiosmtpd.controller import Controller

        mails = self.mails

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                mails.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def texts(self) -> list[str]:
        """Each mail's subject and text."""
        return [f"{m['Subject']}\n{m.get_payload(decode=True).decode()}" for m in self.mails]
