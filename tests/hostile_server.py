"""A hostile or broken server for the tests: ``Hostile`` writes the exact bytes a test chooses (status
line, reason phrase, headers, body), or closes without answering; ``http`` builds such an answer.  The
``hostile`` and ``make`` fixtures (conftest) start one and make Clients for it.  Importable on its own."""

import json
import socket
import threading

from fake_api import wav_header

KEY = "sk-probe-0123456789abcdefSECRET"
KEY_PIECE = KEY[:8]  # what a cut-off key would leave behind


def http(status=200, body=b"", reason="OK", headers=(), close=False):
    """One raw answer; ``None`` instead of it means: close without answering."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode("utf-8")
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    head += "Content-Length: %d\r\n" % len(body)
    for name, value in headers:
        head += "%s: %s\r\n" % (name, value)
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("utf-8") + body


def wav(size=2048):
    return wav_header(size) + b"\x01" * (size - 44)


class Hostile:
    """Answers each request with ``self.handler(method, path, body)``: raw bytes, ``(raw bytes,)`` to
    hang up after them, or None to hang up without a word."""

    def __init__(self, handler=None):
        self.handler = handler or (lambda method, path, body: http(404, {"detail": "Not Found"}))
        self.seen = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.base_url = "http://127.0.0.1:%d/apis" % self.port
        self.origin = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(10)
        reader = conn.makefile("rb")
        try:
            for _request in range(100):
                line = reader.readline(65536)
                if not line:
                    return
                method, path = line.decode("latin-1").split()[:2]
                length = 0
                for _header in range(100):
                    header = reader.readline(65536)
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = reader.read(length) if length else b""
                with self.lock:
                    self.seen.append((method, path, body))
                answer = self.handler(method, path, body)
                if answer is None:
                    return  # hang up without a word
                hang_up = isinstance(answer, tuple)  # (raw bytes,): write them, then hang up
                answer = answer[0] if hang_up else answer
                conn.sendall(answer)
                if hang_up or b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n")[0] + b"\r\n":
                    return
        except (OSError, ValueError):
            return
        finally:
            reader.close()
            conn.close()

    def requests(self, method=None, prefix=""):
        with self.lock:
            return [s for s in self.seen if (method is None or s[0] == method) and s[1].startswith(prefix)]

    def close(self):
        self.sock.close()
