"""A file is complete and checked, or it is not there: lengths the format declares, validators
on resume, the low-speed rule, what counts as audio, refusals by the storage, obstacles on disk.

Most tests talk to a small scripted storage on 127.0.0.1 that answers each GET with the next
reply of its script, so each misbehaviour is exact.
"""

import hashlib
import http.server
import os
import socket
import socketserver
import struct
import threading
import time

import pytest

import sound_bulk as sb
from fake_api import API_KEY, wav_header

# -- a scripted storage -------------------------------------------------------------------------


def reply(body, status=200, headers=(), length=True, cut=None, trickle=None):
    """One scripted answer: ``cut`` sends only that many bytes then closes; ``trickle`` sends
    the body one byte at a time with that many (real) seconds between bytes."""
    return {"body": body, "status": status, "headers": list(headers), "length": length, "cut": cut,
            "trickle": trickle}


def ranged(partial, plain):
    """Answer ``partial`` to a request with Range, ``plain`` to one without."""
    return {"range": partial, "plain": plain}


class _Threading(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class Storage:
    """Answers GETs from ``script`` in order (the last reply repeats) and records request headers."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                r = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                if "range" in r:
                    r = r["range"] if "Range" in self.headers else r["plain"]
                self.send_response(r["status"])
                for name, value in r["headers"]:
                    self.send_header(name, value)
                if r["length"]:
                    self.send_header("Content-Length", str(len(r["body"])))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                body = r["body"][:r["cut"]] if r["cut"] is not None else r["body"]
                try:
                    if r["trickle"] is None:
                        self.wfile.write(body)
                    else:
                        for i in range(min(len(body), 2000)):  # bounded, whatever the client does
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(r["trickle"])
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if r["cut"] is not None or not r["length"]:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        self.httpd = _Threading(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/bucket/audio.wav?X-Amz-Signature=abc" % self.httpd.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class Ticker:
    """A clock that moves ``step`` seconds each time it is read (no real waiting)."""

    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


@pytest.fixture
def client(sleeps):
    # The API is never asked in these tests unless a test says so: the URL is given.
    c = sb.Client(API_KEY, base_url="http://127.0.0.1:9/apis", sleep=sleeps, clock=sleeps.clock,
                  rand=lambda: 0.5, timeout=5)
    yield c
    c.close()


def wav(size, seed=b"a"):
    pattern = hashlib.sha256(seed).digest()
    data = wav_header(size)
    return data + (pattern * (size // len(pattern) + 1))[:size - len(data)]


def rf64(size, seed=b"r"):
    """An RF64 file: both 32-bit sizes are placeholders; ds64 holds the real ones."""
    data_size = size - 80
    head = (b"RF64" + b"\xff\xff\xff\xff" + b"WAVE" + b"ds64" + struct.pack("<I", 28)
            + struct.pack("<QQQI", size - 8, data_size, data_size // 2, 0)
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
            + b"data" + b"\xff\xff\xff\xff")
    assert len(head) == 80
    return head + (hashlib.sha256(seed).digest() * (size // 32 + 1))[:data_size]


def files(folder):
    return sorted(os.listdir(str(folder)))


# -- 1. the format's own length -----------------------------------------------------------------

@pytest.mark.parametrize("make", [wav, rf64], ids=["riff", "rf64"])
def test_a_body_cut_short_without_content_length_is_caught_by_the_header(client, tmp_path, make):
    # fails before: the half file was saved as 5.wav (http.client sees EOF as the end of the body).
    body = make(100_000)
    with Storage([reply(body, length=False, cut=50_000), reply(body, length=False)]) as storage:
        path, size = client.download(5, str(tmp_path), url=storage.url)
    assert size == len(body) and open(path, "rb").read() == body
    assert len(storage.seen) == 2 and "range" not in storage.seen[1]  # no length known: from the start


def test_a_body_always_cut_short_is_an_error_and_nothing_is_saved(client, tmp_path):
    # fails before: DID NOT RAISE (half a WAV saved).
    body = wav(100_000)
    with Storage([reply(body, length=False, cut=60_000)]) as storage:
        with pytest.raises(sb.DownloadError, match="truncated: got 60000 of the 100000 bytes its header declares"):
            client.download(5, str(tmp_path), url=storage.url)
    assert files(tmp_path) == []
    assert len(storage.seen) == client.max_attempts


def test_the_data_chunk_counts_when_the_riff_size_is_a_placeholder(client, tmp_path):
    # A streaming writer leaves the RIFF size as all ones, but the data chunk still tells.
    body = bytearray(wav(20_000))
    body[4:8] = b"\xff\xff\xff\xff"
    with Storage([reply(bytes(body), length=False, cut=10_000)]) as storage:
        with pytest.raises(sb.DownloadError, match="of the 20000 bytes"):
            client.download(5, str(tmp_path), url=storage.url)
    assert files(tmp_path) == []


def test_declared_lengths():
    assert sb._declared_length(wav(1000)) == 1000
    assert sb._declared_length(wav(1000)[:20]) == 1000  # the RIFF size alone
    assert sb._declared_length(rf64(5000)) == 5000
    assert sb._declared_length(b"RIFF\xff\xff\xff\xffWAVE") is None
    assert sb._declared_length(b"fLaC\x00\x00\x00\x22") is None
    aiff = b"FORM" + struct.pack(">I", 992) + b"AIFF"
    assert sb._declared_length(aiff) == 1000


# -- 2. resume only with a validator ------------------------------------------------------------

def test_no_validator_means_start_over_not_splice(client, tmp_path):
    # fails before: the file was the first half of A spliced to the second half of B
    # (a storage that ignores If-Range answers the Range request from a new object of the same size).
    a, b = wav(100_000, b"A"), wav(100_000, b"B")
    tail = "bytes 50000-99999/100000"
    with Storage([reply(a, cut=50_000),
                  ranged(reply(b[50_000:], status=206, headers=[("Content-Range", tail)]), reply(b))]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    got = open(path, "rb").read()
    assert got in (a, b), "spliced: %d bytes of A" % sum(1 for x, y in zip(got, a) if x == y)
    assert "range" not in storage.seen[1]


def test_a_206_without_the_validator_starts_over(client, tmp_path):
    # fails before: the 206 had no ETag, so nothing was compared and two objects were spliced.
    a, b = wav(100_000, b"A"), wav(100_000, b"B")
    with Storage([reply(a, headers=[("ETag", '"A"')], cut=50_000),
                  reply(b[50_000:], status=206, headers=[("Content-Range", "bytes 50000-99999/100000")]),
                  reply(b, headers=[("ETag", '"B"')])]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == b
    assert storage.seen[1]["if-range"] == '"A"' and "range" not in storage.seen[2]


def test_last_modified_is_a_validator_too(client, tmp_path):
    a = wav(100_000)
    stamp = ("Last-Modified", "Wed, 21 Oct 2026 07:28:00 GMT")
    with Storage([reply(a, headers=[stamp], cut=50_000),
                  reply(a[50_000:], status=206, headers=[stamp, ("Content-Range", "bytes 50000-99999/100000")])]) \
            as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert storage.seen[1]["range"] == "bytes=50000-" and storage.seen[1]["if-range"] == stamp[1]


@pytest.mark.parametrize("content_range", [None, "bytes 0-49999/100000", "bytes 50000-99999/200000",
                                           "bytes 50000-59999/100000", "items 50000-99999/100000"])
def test_a_206_that_does_not_continue_the_object_starts_over(client, tmp_path, content_range):
    # fails before for the short span (appended) and the unit that is not bytes (appended).
    a = wav(100_000)
    etag = ("ETag", '"A"')
    extra = [("Content-Range", content_range)] if content_range else []
    with Storage([reply(a, headers=[etag], cut=50_000),
                  reply(a[50_000:], status=206, headers=[etag] + extra),
                  reply(a, headers=[etag])]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert "range" not in storage.seen[2]


def test_416_on_resume_starts_over(client, tmp_path):
    # fails before: DownloadError "HTTP 416 Requested Range Not Satisfiable from storage".
    a = wav(100_000)
    etag = ("ETag", '"A"')
    with Storage([reply(a, headers=[etag], cut=50_000),
                  reply(b"", status=416, headers=[("Content-Range", "bytes */100000")]),
                  reply(a, headers=[etag])]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert "range" not in storage.seen[2]


# -- 3. the low-speed rule ----------------------------------------------------------------------

def test_a_trickling_body_is_broken_off_retried_and_reported(sleeps, tmp_path):
    # fails before: each read waits for a full buffer and every byte resets the per-read timeout,
    # so the client hangs as long as the trickle lasts (this server stops after 2000 bytes; a real
    # one need not).  Assumes only that a byte every 2 ms is slower than LOW_SPEED_LIMIT per
    # LOW_SPEED_TIME of the fake clock (which moves 10 s per reading).
    client = sb.Client(API_KEY, base_url="http://127.0.0.1:9/apis", sleep=sleeps, clock=Ticker(10.0),
                       rand=lambda: 0.5, timeout=5, max_attempts=2)
    with Storage([reply(wav(100_000), trickle=0.002)]) as storage:
        with pytest.raises(sb.DownloadError, match=r"too slow: \d+ bytes in 30 s .*after 2 tries"):
            client.download(5, str(tmp_path), url=storage.url)
    assert len(storage.seen) == 2
    assert files(tmp_path) == []


def test_a_slow_but_steady_body_is_not_broken_off(sleeps, tmp_path):
    body = wav(200_000)
    clock = Ticker(0.01)  # 64 KiB reads each 10 ms of fake time: far above the limit
    client = sb.Client(API_KEY, base_url="http://127.0.0.1:9/apis", sleep=sleeps, clock=clock, timeout=5)
    with Storage([reply(body)]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == body and len(storage.seen) == 1
