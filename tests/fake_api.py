"""A fake of the text-to-sound API and of its object storage, on 127.0.0.1 only.

Written from ../shared/api-contract.md.  Two origins: the API (key check, the
5-ID limit, FastAPI-style 422s, every documented way a run can be not ready,
the task endpoints) and the storage behind the presigned URLs (WAV bodies made
on the fly and streamed, Range, ETag, S3-style expiry).  Faults are switched on
per call.  Standard library only, importable on its own::

    python tests/fake_api.py --runs 101-160 --size 1048576     # prints the base URL

Used by the tests, the benchmark and the README's offline try-out.
"""

import hashlib
import http.server
import itertools
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse

API_KEY = "test-key-not-a-secret"
WAV_HEADER = 44
_BLOCK = 64 * 1024


def wav_header(size):
    """A 44-byte RIFF/WAVE header for a file of ``size`` bytes (16-bit mono 16 kHz PCM)."""
    data = max(0, size - WAV_HEADER)
    return (b"RIFF" + struct.pack("<I", size - 8) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
            + b"data" + struct.pack("<I", data))


#: One MPEG-1 Layer III frame header (128 kbit/s, 44.1 kHz): its frames are 417 bytes long.
MP3_FRAME = b"\xff\xfb\x90\x00"


def _pattern(run_id, kind="wav"):
    """The block that repeats after the head; for MP3 it is one frame, so frames follow frames."""
    seed = hashlib.sha256(str(run_id).encode()).digest()
    block = (seed * (_BLOCK // len(seed) + 1))[:_BLOCK]
    return MP3_FRAME + block[:417 - len(MP3_FRAME)] if kind == "mp3" else block


_MAGIC = {"flac": b"fLaC\x00\x00\x00\x22", "ogg": b"OggS\x00\x02", "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
          "html": b"<!DOCTYPE html><html><body>Error</body></html>", "xml": b"<?xml version=\"1.0\"?><Error>"}


def body_bytes(run_id, size, kind="wav", start=0, end=None):
    """Yield the bytes ``start:end`` of a run's body, in blocks; the same bytes every time."""
    end = size if end is None else min(end, size)
    if kind == "wav":
        head = wav_header(size)
    else:
        head = _MAGIC[kind]
    head = head[:size]
    pattern = _pattern(run_id, kind)
    pos = start
    while pos < end:
        if pos < len(head):
            piece = head[pos:min(end, len(head))]
        else:
            offset = (pos - len(head)) % len(pattern)
            piece = pattern[offset:offset + min(end - pos, len(pattern) - offset)]
        yield piece
        pos += len(piece)


def body_sha256(run_id, size, kind="wav"):
    h = hashlib.sha256()
    for piece in body_bytes(run_id, size, kind):
        h.update(piece)
    return h.hexdigest()


class Run:
    """A run the fake knows: ``state`` ready/pending/failed, how it is shown, its audio."""

    def __init__(self, run_id, state="ready", size=4096, kind="wav", shape=None, ready_after=0):
        self.run_id = run_id
        self.state = state
        self.size = size
        self.kind = kind
        self.shape = shape
        self.ready_after = ready_after  # bulk calls that see it pending before it is ready


class FakeCamb:
    """Both servers, their state, the faults to inject, and what they saw.

    Fault queues hold one entry per call and are consumed in order:
    ``bulk_faults`` for bulk calls, ``storage_faults[run_id]`` for downloads (a name, or
    ``("status", code[, body])``), ``storage_faults["post"]`` for POSTs that reach the storage.
    """

    def __init__(self, api_key=API_KEY, tls=None, connect_delay=0.0, request_delay=0.0,
                 api_port=0, storage_port=0, admin=False, api_delay=0.0):
        self.api_key = api_key
        self.runs = {}
        self.tasks = {}
        self.bulk_faults = []
        self.storage_faults = {}
        self.range_support = True
        self.send_etag = True
        self.slow_delay = 0.5
        self.stalled = 0  # "slow" downloads whose headers are out and whose body is being held back
        self.connect_delay = connect_delay
        self.request_delay = request_delay
        self.api_delay = api_delay  # added to API requests only: a far-away API, storage close by
        # per created task: ("success", polls) | ("error", polls, reason) | ("answer", polls, body)
        self.task_plan = []
        self.default_task_plan = ("success", 1)  # for tasks the plan list does not cover
        # per task poll, in order: an HTTP status, or (status, headers), to answer instead (not counted as a poll)
        self.poll_faults = []
        # per creation: ("after", status) creates, then answers status; ("before", status) does not;
        # ("answer", body) creates, then answers 200 with that body
        self.create_faults = []
        self.requests = []
        self.connections = {"api": 0, "storage": 0}
        self.api_active = self.api_peak = 0  # API requests being served at once, and the most seen
        self.api_gate = None  # if set, each API request calls it (no arguments) before it is answered
        self.issued = {}
        self._tokens = itertools.count(1)
        self._task_ids = itertools.count(1)
        self._next_run = itertools.count(900001)
        self.born_expired = {}
        self.lock = threading.Lock()
        self._tls = tls
        self.api = _Server(self, "api", api_port)
        self.storage = _Server(self, "storage", storage_port)
        # Plain-http side door for another process (the benchmark): GET /stats, POST /reset.
        self.admin = _Server(self, "admin", 0, tls=False) if admin else None

    # -- set-up helpers --------------------------------------------------------
    def add_run(self, run_id, state="ready", **kw):
        self.runs[run_id] = Run(run_id, state, **kw)
        return self.runs[run_id]

    def add_runs(self, run_ids, **kw):
        for rid in run_ids:
            self.add_run(rid, **kw)

    def expire_next_urls(self, run_id, count):
        """The next ``count`` URLs issued for the run are already expired when used."""
        self.born_expired[run_id] = count

    @property
    def scheme(self):
        return "https" if self._tls else "http"

    @property
    def base_url(self):
        return "%s://127.0.0.1:%d/apis" % (self.scheme, self.api.port)

    @property
    def storage_origin(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.storage.port)

    def seen(self, origin, method=None, path_prefix=""):
        with self.lock:
            return [r for r in self.requests if r["origin"] == origin and (method is None or r["method"] == method)
                    and r["path"].startswith(path_prefix)]

    def _servers(self):
        return [s for s in (self.api, self.storage, self.admin) if s is not None]

    def start(self):
        for server in self._servers():
            server.start()
        return self

    def stop(self):
        for server in self._servers():
            server.stop()

    def stats(self):
        with self.lock:
            counts = {"api": 0, "storage": 0}
            for r in self.requests:
                counts[r["origin"]] += 1
            return {"connections": dict(self.connections), "requests": counts}

    def reset_counts(self):
        with self.lock:
            self.requests = []
            self.connections = {"api": 0, "storage": 0}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- behaviour ------------------------------------------------------------
    def presign(self, run):
        token = "fakesig%06d" % next(self._tokens)
        expired = False
        with self.lock:
            left = self.born_expired.get(run.run_id, 0)
            if left:
                self.born_expired[run.run_id] = left - 1
                expired = True
            self.issued[token] = (run.run_id, expired)
        ext = run.kind if run.kind in ("flac", "ogg", "mp3") else "wav"
        return "%s/bucket/audio_%d.%s?X-Amz-Expires=3600&X-Amz-Signature=%s" % (
            self.storage_origin, run.run_id, ext, token)

    def bulk_entry(self, rid):
        """The value for one run in a bulk answer, or ``...`` for "leave the key out"."""
        run = self.runs.get(rid)
        if run is None:
            return ...
        if run.state == "ready" and run.ready_after > 0:
            run.ready_after -= 1
            return {"status": "PENDING"}
        if run.state == "ready":
            return {"output_url": self.presign(run)}
        if run.state == "pending":
            return {"absent": ..., "no_url": {}, "null_url": {"output_url": None}, "empty_url": {"output_url": ""},
                    "status_pending": {"status": "PENDING"}, "null": None}[run.shape or "status_pending"]
        if run.state == "failed":
            return {"status_error": {"status": "ERROR", "message": "generation failed: model overloaded"},
                    "error_message": {"error": "prompt rejected"}}[run.shape or "status_error"]
        raise ValueError(run.state)


class _Server:
    def __init__(self, fake, role, port, tls=True):
        self.fake = fake
        self.role = role
        handler = type("Handler", (_Handler,), {"fake": fake, "role": role})
        self.httpd = _ThreadingServer(("127.0.0.1", port), handler)
        self.httpd.fake, self.httpd.role = fake, role
        if fake._tls and tls:
            self.httpd.tls = fake._tls
        self.port = self.httpd.server_address[1]
        self.thread = None

    def start(self):
        start_serving(self.httpd)

    def stop(self):
        stop_serving(self.httpd)


def start_serving(httpd):
    """Serves ``httpd`` (a socketserver server) on a new thread until ``stop_serving(httpd)``.

    A blocking accept loop rather than ``serve_forever``, which polls: serve_forever notices a shutdown
    only at its next poll, and every test that starts a server pays for stopping it.  Each connection is
    handled as ``httpd.process_request`` says (ThreadingMixIn: a thread of its own)."""
    def accept_until_stopped():
        while True:
            try:
                request, address = httpd.get_request()
            except OSError:
                if httpd.stopping:
                    return
                continue  # one connection that failed: on to the next
            if httpd.stopping:  # the wake-up call of stop_serving
                httpd.shutdown_request(request)
                return
            try:
                httpd.process_request(request, address)
            except Exception:
                httpd.handle_error(request, address)
                httpd.shutdown_request(request)

    httpd.stopping = False
    httpd.serving = threading.Thread(target=accept_until_stopped, daemon=True)
    httpd.serving.start()


def stop_serving(httpd):
    """Ends what ``start_serving(httpd)`` started, at once, and closes the server.  On Linux, shutting
    down a listening socket wakes the accept() blocked on it; elsewhere a connection does."""
    httpd.stopping = True
    try:
        httpd.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    httpd.serving.join(0.1)
    if httpd.serving.is_alive():
        try:
            socket.create_connection(httpd.server_address[:2], timeout=1).close()
        except OSError:
            pass
        httpd.serving.join(10)
    httpd.server_close()


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):  # http.server has this from 3.7 on
    daemon_threads = True
    allow_reuse_address = True
    tls = None
    request_queue_size = 64

    def get_request(self):
        sock, addr = super().get_request()
        # Like real API servers: no Nagle delay on small writes (http.server writes the headers and
        # the body separately, which with delayed ACKs stalls kept-alive connections by ~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.role != "admin":
            with self.fake.lock:
                self.fake.connections[self.role] += 1
        return sock, addr

    def handle_error(self, request, client_address):
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, socket.timeout)):
            super().handle_error(request, client_address)  # a client hanging up is not news

    def finish_request(self, request, client_address):
        if self.fake.connect_delay:
            time.sleep(self.fake.connect_delay)  # a simulated handshake round trip
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None
    role = None

    def log_message(self, *args):
        pass

    # -- plumbing -------------------------------------------------------------
    def _record(self, body=None):
        entry = {"origin": self.role, "method": self.command, "path": self.path,
                 "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        with self.fake.lock:
            self.fake.requests.append(entry)
        delay = self.fake.request_delay + (self.fake.api_delay if self.role == "api" else 0.0)
        if delay:
            time.sleep(delay)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reset(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()

    def do_POST(self):
        body = self._read_body()
        if self.role == "admin":
            self.fake.reset_counts()
            return self._send(200, self.fake.stats())
        if self.role == "storage":
            self._record(body)
            return self._storage_post(body)
        self._counted(self._api, body)

    def do_GET(self):
        if self.role == "admin":
            return self._send(200, self.fake.stats())
        if self.role == "storage":
            self._record()
            return self._storage_get()
        self._counted(self._api, None)

    def _counted(self, serve, body):
        """Serve an API request, counting how many are served at once (``api_peak``)."""
        fake = self.fake
        with fake.lock:
            fake.api_active += 1
            fake.api_peak = max(fake.api_peak, fake.api_active)
        try:
            if fake.api_gate is not None:
                fake.api_gate()
            self._record(body)
            serve(body)
        finally:
            with fake.lock:
                fake.api_active -= 1

    # -- the API ----------------------------------------------------------------
    def _api(self, raw):
        fake = self.fake
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/apis/"):
            return self._send(404, {"detail": "Not Found"})
        if self.headers.get("x-api-key") != fake.api_key:
            return self._send(401, {"detail": "Invalid API key"})
        route = path[len("/apis/"):]
        if route == "redirect-probe":  # a GET that redirects to the storage origin, for redirect tests
            return self._send(302, b"", headers=[("Location", self.fake.storage_origin + "/probe")])
        if route == "text-to-sound-results" and self.command == "POST":
            return self._bulk(raw)
        if route == "text-to-sound" and self.command == "POST":
            return self._create_task(raw)
        if route.startswith("text-to-sound/") and self.command == "GET":
            return self._task_status(urllib.parse.unquote(route[len("text-to-sound/"):]))
        return self._send(404, {"detail": "Not Found"})

    def _bulk(self, raw):
        fake = self.fake
        with fake.lock:
            fault = fake.bulk_faults.pop(0) if fake.bulk_faults else None
        if fault is not None:
            if self._bulk_fault(fault):
                return
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._send(422, {"detail": [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]})
        ids = data.get("run_ids") if isinstance(data, dict) else None
        if not isinstance(ids, list):
            return self._send(422, {"detail": [
                {"loc": ["body", "run_ids"], "msg": "Field required", "type": "missing"}]})
        errors = [{"loc": ["body", "run_ids", i], "msg": "Input should be a valid integer", "type": "int_type"}
                  for i, v in enumerate(ids) if not isinstance(v, int) or isinstance(v, bool)]
        if errors:
            return self._send(422, {"detail": errors})
        if len(ids) > 5:
            return self._send(422, {"detail": [{"loc": ["body", "run_ids"], "msg": "List should have at most 5 items",
                                                "type": "too_long"}]})
        answer = {}
        for rid in ids:
            entry = fake.bulk_entry(rid)
            if entry is not ...:
                answer[str(rid)] = entry
        self._send(200, answer)

    def _bulk_fault(self, fault):
        """Serve an injected fault; False means "carry on normally"."""
        kind = fault[0]
        if kind == "status":
            _, status, headers = (fault + ((),))[:3]
            self._send(status, {"detail": "injected %d" % status}, headers=headers)
        elif kind == "drop":
            self._drop()
        elif kind == "html":
            status = fault[1] if len(fault) > 1 else 502
            self._send(status, b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                       "text/html")
        elif kind == "body":  # ("body", bytes[, status]): any body, 200 unless said
            self._send(fault[2] if len(fault) > 2 else 200, fault[1])
        elif kind == "redirect":
            status, where = fault[1], fault[2]
            target = {"cross": self.fake.storage_origin + "/apis/text-to-sound-results",
                      "same": "/apis/text-to-sound-results"}.get(where, where)  # or any URL
            self._send(status, b"", headers=[("Location", target)])
        elif kind == "short":  # promises a body, sends a piece of it, hangs up
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"1": {"output_')
            self.wfile.flush()
            self._drop()
        elif kind == "echo_key":
            self._send(500, {"detail": "bad key %s" % self.headers.get("x-api-key")})
        else:
            raise ValueError(kind)
        return True

    def _create_task(self, raw):
        fake = self.fake
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
            return self._send(422, {"detail": [
                {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]})
        duration = data.get("duration", 8)
        if data.get("audio_type", "sound") == "sound" and (not isinstance(duration, (int, float)) or duration > 10):
            return self._send(422, {"detail": [{"loc": ["body", "duration"], "msg": "at most 10", "type": "le"}]})
        with fake.lock:
            fault = fake.create_faults.pop(0) if fake.create_faults else None
        if fault and fault[0] == "before":
            return self._send(fault[1], {"detail": "rejected before creating anything"})
        with fake.lock:
            plan = fake.task_plan.pop(0) if fake.task_plan else fake.default_task_plan
            task_id = "task-%04d" % next(fake._task_ids)
            fake.tasks[task_id] = {"plan": plan, "polls": 0, "prompt": data["prompt"], "run_id": None}
        if fault and fault[0] == "after":  # a proxy's error page after the API did create the task
            return self._send(fault[1], b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if fault and fault[0] == "answer":  # created, then a 200 of another shape: ("answer", body)
            return self._send(200, fault[1])
        self._send(200, {"task_id": task_id})

    def _task_status(self, task_id):
        fake = self.fake
        with fake.lock:
            fault = fake.poll_faults.pop(0) if fake.poll_faults else None
        if fault is not None:
            status, headers = (fault, ()) if isinstance(fault, int) else fault
            return self._send(status, {"detail": "injected %d" % status}, headers=headers)
        with fake.lock:
            task = fake.tasks.get(task_id)
            if task is None:
                return self._send(404, {"detail": "Task not found"})
            task["polls"] += 1
            plan = task["plan"]
            if plan[0] == "success" and task["polls"] > plan[1]:
                if task["run_id"] is None:
                    task["run_id"] = next(fake._next_run)
                    fake.runs[task["run_id"]] = Run(task["run_id"], "ready", size=2048)
                answer = {"status": "SUCCESS", "run_id": task["run_id"], "exception_reason": None, "message": None}
            elif plan[0] == "answer" and task["polls"] > plan[1]:
                answer = plan[2]
            elif plan[0] == "error" and task["polls"] > plan[1]:
                answer = {"status": "ERROR", "run_id": None, "exception_reason": plan[2], "message": None}
            else:
                answer = {"status": "PENDING", "run_id": None, "exception_reason": None, "message": None}
        self._send(200, answer)

    # -- the storage -----------------------------------------------------------
    def _storage_post(self, raw):
        # Target of the cross-origin redirect fault: answers like the API but demands no key,
        # so a test can see whether the key came along.
        with self.fake.lock:
            queue = self.fake.storage_faults.get("post") or []
            fault = queue.pop(0) if queue else None
        if fault is not None:  # storage_faults["post"]: ("status", code) answers for these POSTs, in order
            return self._send(fault[1], {"detail": "injected %d" % fault[1]})
        ids = json.loads(raw.decode("utf-8")).get("run_ids", []) if raw else []
        self._send(200, {str(rid): {"status": "PENDING"} for rid in ids})

    def _storage_get(self):
        fake = self.fake
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        token = (query.get("X-Amz-Signature") or [""])[0]
        with fake.lock:
            issued = fake.issued.get(token)
        if issued is None:
            return self._send(403, b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>",
                              "application/xml")
        rid, expired = issued
        if expired:
            return self._send(403, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
                                   b"<Message>Request has expired</Message></Error>", "application/xml")
        run = fake.runs[rid]
        with fake.lock:
            queue = fake.storage_faults.get(rid) or []
            fault = queue.pop(0) if queue else None
        if fault == "reset":
            return self._reset()
        if fault == "503":
            return self._send(503, b"<Error><Code>SlowDown</Code></Error>", "application/xml")
        if fault == "html200":
            return self._send(200, _MAGIC["html"] * 4, "text/html")
        if isinstance(fault, tuple) and fault[0] == "status":  # ("status", code[, body]): any answer at all
            return self._send(fault[1], fault[2] if len(fault) > 2 else b"<Error><Code>Injected</Code></Error>",
                              "application/xml")
        if fault == "no_content_range":  # a 206 for the range asked, without the header that says which
            headers_206 = [("ETag", '"%s"' % hashlib.md5(("%d-%d" % (rid, run.size)).encode()).hexdigest())]
            first = int((self.headers.get("Range") or "bytes=0-").split("=")[1].split("-")[0])
            return self._send(206, b"".join(body_bytes(rid, run.size, run.kind, first)), "audio/wav", headers_206)
        size, kind = run.size, run.kind
        start, end, status = 0, size, 200
        etag = '"%s"' % hashlib.md5(("%d-%d" % (rid, size)).encode()).hexdigest()
        rng = self.headers.get("Range")
        if rng and fake.range_support:
            if_range = self.headers.get("If-Range")
            if not if_range or if_range == etag:
                first = int(rng.split("=")[1].split("-")[0])
                if first < size:
                    start, status = first, 206
        headers = [("Accept-Ranges", "bytes")] if fake.range_support else []
        if fake.send_etag:
            headers.append(("ETag", etag))
        if status == 206:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size)))
        self.send_response(status)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(end - start))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        cut = start + (end - start) // 2 if fault == "truncate" else None
        sent = start
        try:
            for piece in body_bytes(rid, size, kind, start, end):
                if cut is not None and sent + len(piece) > cut:
                    self.wfile.write(piece[:cut - sent])
                    self.wfile.flush()
                    return self._drop()
                if fault == "slow":
                    self.wfile.flush()
                    with fake.lock:
                        fake.stalled += 1
                    time.sleep(fake.slow_delay)
                    fault = None
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def tls_context(certfile, keyfile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def _parse_ids(text):
    """``"101-110,200"`` -> [101, ..., 110, 200]; ValueError with a message a person can act on."""
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, sep, last = part.partition("-")
        if not first.strip().isdigit() or (sep and not last.strip().isdigit()):
            raise ValueError("%r is not a run ID or a range of them (like 101 or 101-110)" % part)
        a, b = int(first), int(last) if sep else int(first)
        if b < a:
            raise ValueError("%r is an empty range: the first ID is larger than the last" % part)
        if b - a >= 1000000:
            raise ValueError("%r is more than a million runs" % part)
        ids.extend(range(a, b + 1))
    return ids


def _id_list(text):
    import argparse
    try:
        return _parse_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError("%r is not a number of seconds more than 0" % text)
    return value


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        description="Run the fake text-to-sound API on 127.0.0.1 until Ctrl-C (or --seconds).")
    parser.add_argument("--runs", type=_id_list, default="101-110", help="ready run IDs, e.g. 101-160,200")
    parser.add_argument("--pending", type=_id_list, default="", help="run IDs that stay pending")
    parser.add_argument("--failed", type=_id_list, default="", help="run IDs whose generation failed")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per WAV file")
    parser.add_argument("--port", type=int, default=0, help="API port (storage uses the next free one)")
    parser.add_argument("--cert", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--key", help="the certificate's private key (PEM)")
    parser.add_argument("--connect-delay", type=float, default=0.0, help="seconds added to each new connection")
    parser.add_argument("--request-delay", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument("--api-delay", type=float, default=0.0,
                        help="seconds added to each API request only (on top of --request-delay)")
    parser.add_argument("--seconds", type=_seconds, default=None,
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--demo", metavar="DIR", nargs="?", const="sound_bulk-demo",
                        help="try sound_bulk offline: start the fake, fetch its runs into DIR, stop")
    args = parser.parse_args(argv)
    if args.demo:
        return demo(args.demo)
    if not (args.runs or args.pending or args.failed):
        parser.error("no runs to serve: give --runs (or --pending/--failed) some run IDs")
    tls = tls_context(args.cert, args.key) if args.cert else None
    fake = FakeCamb(tls=tls, api_port=args.port, connect_delay=args.connect_delay,
                    request_delay=args.request_delay, admin=True, api_delay=args.api_delay)
    fake.add_runs(args.runs, size=args.size)
    for rid in args.pending:
        fake.add_run(rid, "pending")
    for rid in args.failed:
        fake.add_run(rid, "failed")
    try:
        with fake:
            print("CAMB_API_BASE_URL=%s CAMB_API_KEY=%s FAKE_ADMIN_URL=http://127.0.0.1:%d" % (
                fake.base_url, fake.api_key, fake.admin.port), flush=True)
            print("fake API: %d ready, %d pending, %d failed runs; %s" % (
                len(args.runs), len(args.pending), len(args.failed),
                "press Ctrl-C to stop" if args.seconds is None else "stopping in %g s (or Ctrl-C)" % args.seconds),
                file=sys.stderr, flush=True)
            if args.seconds is None:
                while True:
                    time.sleep(3600)
            time.sleep(args.seconds)
    except KeyboardInterrupt:
        pass
    print("fake API: stopped", file=sys.stderr, flush=True)
    return 0


def demo(out):
    """Start the fake, run a real ``python -m sound_bulk fetch`` against it, show what it printed."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fake = FakeCamb()
    fake.add_runs(range(101, 109), size=256 * 1024)
    fake.add_run(109, "pending")
    fake.add_run(110, "failed")
    with fake:
        env = dict(os.environ, CAMB_API_KEY=fake.api_key, CAMB_API_BASE_URL=fake.base_url,
                   PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for extra in ([], ["--json"]):
            args = ["fetch"] + [str(i) for i in range(101, 111)] + ["-o", out] + extra
            print("$ " + " ".join(["python", "-m", "sound_bulk"] + args), flush=True)
            code = subprocess.call([sys.executable, "-m", "sound_bulk"] + args, env=env)
            print("(exit status %d)\n" % code, flush=True)
    print("The files are in %s/. The fake API has stopped; nothing left this machine." % out)
    return 0


if __name__ == "__main__":
    sys_exit = main()
    raise SystemExit(sys_exit or 0)
