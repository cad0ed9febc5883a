"""The reviewer's breaks, mended: connection reuse, body framing, the base URL check, manifest field types,
one generate run per folder at a time."""
import io
import json
import socket
import threading

import pytest

import sound_bulk as sb
from fake_api import API_KEY
from hostile_server import wav

KEY = "mend-test-key-0123456789"


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 written byte by byte: each request is answered with
    ``answers[path]`` (raw bytes, the whole response); every connection is kept alive.  ``unasked(data)``
    sends ``data`` on the first connection while it sits idle, and returns once it is sent."""

    def __init__(self, answers):
        self.answers = answers
        self.requests = []  # (connection number, path)
        self.conns = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(5)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        for _ in range(8):
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, len(self.conns)), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn, number):
        buf = b""
        for _ in range(20):
            while b"\r\n\r\n" not in buf:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            path = head.split(b"\r\n")[0].split(b" ")[1].decode("ascii")
            self.requests.append((number, path))
            answer = self.answers[path.rsplit("/", 1)[-1]]
            conn.sendall(answer)
            if b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n")[0] + b"\r\n":
                conn.shutdown(socket.SHUT_RDWR)
                return

    def unasked(self, data):
        self.conns[0].sendall(data)

    def close(self):
        for c in [self.sock] + self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)  # wakes the thread waiting in its accept or recv
            except OSError:
                pass
            c.close()
        for t in self.threads:
            t.join(5)


def _response(body, status="200 OK", headers=()):
    lines = ["HTTP/1.1 " + status, "Content-Type: application/json"] + list(headers)
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _task(task_id, run_id):
    return json.dumps({"task_id": task_id, "status": "SUCCESS", "run_id": run_id}).encode("ascii")


@pytest.fixture
def raw():
    made = []

    def make(answers):
        server = RawServer(answers)
        made.append(server)
        return server
    yield make
    for s in made:
        s.close()


def _client(url):
    return sb.Client(api_key=KEY, base_url=url, timeout=5, sleep=lambda s: None, rand=lambda: 0.5)


# 1. Connection reuse ---------------------------------------------------------------------------

def test_bytes_a_server_sends_unasked_on_an_idle_connection_are_never_taken_as_the_next_answer(raw):
    server = raw({"A": _response(_task("A", 111)), "B": _response(_task("B", 222))})
    with _client(server.url) as client:
        assert client.get_task("A").run_id == 111
        # A complete extra response arrives while the connection sits idle in the pool (a 204 with a
        # body, a proxy's junk): it must not become the answer to the next request.
        server.unasked(_response(_task("A", 111)))
        task = client.get_task("B")
    assert (task.task_id, task.run_id) == ("B", 222)
    assert [p for _n, p in server.requests] == ["/text-to-sound/A", "/text-to-sound/B"]
    assert [n for n, _p in server.requests] == [1, 2]  # B went on a new connection


def test_a_healthy_idle_connection_is_still_reused(raw):
    server = raw({"A": _response(_task("A", 111)), "B": _response(_task("B", 222))})
    with _client(server.url) as client:
        client.get_task("A")
        client.get_task("B")
        assert client.connections_opened == {server.url: 1}
    assert [n for n, _p in server.requests] == [1, 1]


# 2. Body framing ---------------------------------------------------------------------------------

def _chunked(body, size=700):
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_chunked_api_answer_is_not_measured_against_its_content_length(raw):
    body = _task("A", 111)
    server = raw({"A": _response(_chunked(body), headers=["Transfer-Encoding: chunked",
                                                          "Content-Length: %d" % (len(body) + 50)])})
    with _client(server.url) as client:
        assert client.get_task("A").run_id == 111


@pytest.mark.parametrize("length", ["-1", "12abc"])
def test_a_download_with_an_unusable_content_length_is_judged_by_its_own_format(raw, tmp_path, length):
    audio = wav(4000)
    server = raw({"a.wav": _response(audio, headers=["Content-Length: " + length, "Connection: close"])})
    with _client(server.url) as client:
        path, size = client.download(7, str(tmp_path), url=server.url + "/a.wav")
    assert (size, open(path, "rb").read()) == (4000, audio)


def test_a_chunked_download_is_not_measured_against_its_content_length(raw, tmp_path):
    audio = wav(4000)
    server = raw({"a.wav": _response(_chunked(audio), headers=["Transfer-Encoding: chunked",
                                                               "Content-Length: 3999"])})
    with _client(server.url) as client:
        path, size = client.download(7, str(tmp_path), url=server.url + "/a.wav")
    assert open(path, "rb").read() == audio


def test_a_download_cut_short_without_a_usable_length_still_fails(raw, tmp_path):
    audio = wav(4000)
    server = raw({"a.wav": _response(audio[:3000], headers=["Content-Length: -1", "Connection: close"])})
    with _client(server.url) as client:
        with pytest.raises(sb.DownloadError, match="truncated"):
            client.download(7, str(tmp_path), url=server.url + "/a.wav")
    assert list(tmp_path.iterdir()) == []


# 3. The base URL ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["http://127.0.0.1:%d/a b", "http://127.0.0.1:%d/a\tb", "http://127.0.0.1:%d/\x00",
                                 "http://127.0.0.1:%d/v1\n/x", "http://127.0.0.1:%d/a\x85b",
                                 "http://127.0.0.1:%d/a\u2028b"])
def test_a_base_url_with_whitespace_or_control_characters_is_a_usage_error_and_nothing_is_sent(raw, monkeypatch, bad):
    server = raw({})
    port = int(server.url.rsplit(":", 1)[1])
    monkeypatch.setenv("CAMB_API_KEY", KEY)
    with pytest.raises(sb.ConfigurationError, match="whitespace or control characters"):
        sb.Client(api_key=KEY, base_url=bad % port)
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(["--base-url", bad % port, "urls", "1"], stdin=io.StringIO(""), stdout=out, stderr=err)
    assert code == 2
    assert "whitespace or control characters" in err.getvalue() or "NUL" in err.getvalue()
    assert "reach" not in err.getvalue()
    assert server.requests == [] and server.conns == []


# 4. Manifest field types ---------------------------------------------------------------------------

def _manifest_lines(folder, *records):
    with open(str(folder / sb.MANIFEST_NAME), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


@pytest.mark.parametrize("line", [
    {"event": ["submitting"]},                       # an event that is not a string: it may have been one
    {"event": "submitting", "task_id": ["t-1"]},     # a submission naming a task of the wrong type
    {"event": "created", "task_id": {"id": "t-1"}},
    {"event": "created", "task_id": ""},
    {"event": {"name": "submit_unknown"}, "run_id": "7"},
    {"event": "task", "task_id": 5},                # any event: a line naming a task records a submission
])
def test_a_mistyped_submission_line_still_blocks_paying_twice(fake, make_client, tmp_path, line):
    key = sb.prompt_keys(["drip"], None, "sound")[0]
    _manifest_lines(tmp_path, dict(line, key=key, prompt="drip"))
    (got,) = sb.generate(make_client(), ["drip"], str(tmp_path))
    assert got.status == "error" and "--resubmit" in got.error
    assert got.task_id is None and got.run_id is None
    assert fake.tasks == {}  # nothing paid


def test_a_mistyped_line_never_reaches_the_outcome_and_the_good_lines_still_count(fake, make_client, tmp_path):
    fake.task_plan.append(("success", 0))
    key = sb.prompt_keys(["drip"], None, "sound")[0]
    (first,) = sb.generate(make_client(), ["drip"], str(tmp_path))
    assert first.status == "saved"
    with open(str(tmp_path / sb.MANIFEST_NAME), "a") as f:  # hand edits after the run
        for bad in ({"event": "task", "task_id": ["x"], "run_id": 5},
                    {"event": "saved", "run_id": "5"}, {"event": "saved", "run_id": True},
                    {"event": "task", "run_id": 5, "task_status": ["ERROR"]}, {"event": "task", "error": 5}):
            f.write(json.dumps(dict(bad, key=key)) + "\n")
        f.write(json.dumps({"event": "saved", "key": ["k"], "run_id": 9}) + "\n")
    (again,) = sb.generate(make_client(), ["drip"], str(tmp_path))
    assert (again.status, again.task_id, again.run_id) == ("skipped", first.task_id, first.run_id)
    assert sb.manifest_run_ids(str(tmp_path)) == [first.run_id]
    assert len(fake.tasks) == 1


# 5. One generate run per folder ---------------------------------------------------------------------

try:
    import fcntl
except ImportError:  # Windows: no lock, nothing to test
    fcntl = None


@pytest.mark.skipif(fcntl is None, reason="no fcntl: generate takes no lock there")
def test_a_second_generate_run_on_the_same_folder_pays_nothing_and_says_why(fake, make_client, tmp_path,
                                                                            monkeypatch):
    fake.task_plan.append(("success", 0))
    path = str(tmp_path / sb.MANIFEST_NAME)
    holder = open(path, "a")  # stands for the first run, still under way
    try:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(sb.ConfigurationError, match="another generate run"):
            sb.generate(make_client(), ["drip"], str(tmp_path))
        monkeypatch.setenv("CAMB_API_KEY", API_KEY)
        out, err = io.StringIO(), io.StringIO()
        code = sb.main(["--base-url", fake.base_url, "generate", "drip", "-o", str(tmp_path)],
                       stdin=io.StringIO(""), stdout=out, stderr=err)
        assert code == 2 and "another generate run" in err.getvalue()
        assert fake.tasks == {}
    finally:
        holder.close()
    (got,) = sb.generate(make_client(), ["drip"], str(tmp_path))  # once it is over, the folder is free again
    assert got.status == "saved" and len(fake.tasks) == 1
