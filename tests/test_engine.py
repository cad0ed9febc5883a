"""The fetch engine: the AIMD window for API calls, an unreachable API, the bounded in-flight window,
grouped fsyncs, output as runs settle, waiting status, late signals."""

import io
import json
import os
import socket
import threading

import pytest

import sound_bulk as sb
from fake_api import API_KEY


def run(argv, stdin="", stderr=None):
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    code = sb.main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def lines(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def env(fake, monkeypatch):
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    return fake


@pytest.fixture
def cli_sleeps(monkeypatch, sleeps):
    """The CLI's Client gets the fake sleep and clock, so its retries take no real time."""
    real = sb.Client

    def client_from(args):
        return real(base_url=args.base_url, timeout=args.timeout, sleep=sleeps, clock=sleeps.clock,
                    rand=lambda: 0.5)

    monkeypatch.setattr(sb, "_client_from", client_from)
    return sleeps


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HangUp:
    """A server on 127.0.0.1 that accepts connections and closes them at once (no answer, ever)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


# -- the AIMD window for API calls ----------------------------------------------------------------

class FakeTime:
    def __init__(self):
        self.t = 100.0
        self.waits = []

    def clock(self):
        return self.t

    def sleep(self, seconds):
        self.waits.append(seconds)
        self.t += seconds


def test_window_halves_on_a_429_once_per_round_and_grows_back_additively():
    ft = FakeTime()
    w = sb._CallWindow(8, ft.clock, ft.sleep)
    tickets = [w.acquire() for _ in range(8)]
    w.release(tickets[0], True, shrink=True)
    assert w.size == 4
    w.release(tickets[1], True, shrink=True)  # already under way when it shrank: no second halving
    assert w.size == 4
    for t in tickets[2:6]:
        w.release(t, True)
    assert 4 < w.size < 5  # +1/size per answer: about one slot per window-full of answers
    fresh = w.acquire()
    assert w.active == 3
    w.release(fresh, True, shrink=True)  # a 429 of the new round halves again
    assert w.size < 3
    for t in tickets[6:]:
        w.release(t, True)
    for _ in range(200):
        w.release(w.acquire(), True)
    assert w.size == 8  # back to the limit, never above
    assert ft.waits == []


def test_window_pause_holds_every_caller_and_a_full_window_blocks():
    """Another thread's acquire waits for the server-asked pause (through the sleep seam) and then
    for a free slot of the shrunk window (assumes a thread starts within 5 s)."""
    ft = FakeTime()
    w = sb._CallWindow(4, ft.clock, ft.sleep)
    t = [w.acquire() for _ in range(4)]
    w.release(t[0], True, shrink=True, pause=2.5)  # 429, Retry-After: 2.5
    assert (w.size, w.active) == (2, 3)
    got = threading.Event()

    def other():
        w.acquire()
        got.set()

    th = threading.Thread(target=other, daemon=True)
    th.start()
    assert not got.wait(0.3)  # paused, then 3 under way in a window of 2
    w.release(t[1], True)
    assert not got.wait(0.2)  # 2 under way: still full
    w.release(t[2], True)
    assert got.wait(5)
    th.join(5)
    assert ft.waits == [2.5]


def test_bulk_calls_run_concurrently_up_to_the_limit(fake, make_client, tmp_path):
    """Assumes 8 client threads that each wait 50 ms on the server overlap at least 3 at a time."""
    fake.request_delay = 0.05
    fake.add_runs(range(1, 81), size=1000)
    outcomes = make_client(api_concurrency=8).fetch(range(1, 81), str(tmp_path), workers=8)
    assert {o.status for o in outcomes} == {"saved"}
    assert 3 <= fake.api_peak <= 8
    fake.api_peak = 0
    outcomes = make_client().fetch(range(1, 81), str(tmp_path / "b"), workers=3)
    assert fake.api_peak <= 3  # never more than `workers` connections to the API


def test_a_429_pauses_the_calls_and_the_run_still_completes(fake, client, sleeps, tmp_path):
    fake.add_runs(range(1, 31), size=1000)
    fake.bulk_faults += [("status", 429, [("Retry-After", "7")])]
    outcomes = client.fetch(range(1, 31), str(tmp_path), workers=4)
    assert [o.status for o in outcomes] == ["saved"] * 30
    assert 7.0 in sleeps.waits  # Retry-After honoured
    assert all(w <= 7.0 for w in sleeps.waits if w)


# -- an unreachable API: one clear error, fast ----------------------------------------------------

def test_refused_api_is_asked_one_chunks_worth_of_tries_then_every_run_fails_at_once(make_client, sleeps):
    client = make_client(base_url="http://127.0.0.1:%d/apis" % closed_port())
    out = client.get_results(range(101, 201))
    assert sorted(out) == list(range(101, 201))
    assert {r.status for r in out.values()} == {"missing"}
    assert {r.error for r in out.values()} == {"the API cannot be reached: ConnectionRefusedError: "
                                               "[Errno 111] Connection refused"}
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0]  # the first chunk's retries only (before: 20 chunks x 4)
    err = client.unreachable
    assert isinstance(err, sb.APIUnreachableError) and isinstance(err, sb.TransportError)
    assert err.url == client.base_url and err.tries == 5
    assert str(err).startswith("cannot reach the API at %s: " % client.base_url)
    out = client.get_results([1])  # a new batch tries the network again
    assert sleeps.waits[4:] == [0.5, 1.0, 2.0, 4.0]


def test_a_server_that_never_answers_is_unreachable_too_and_fetch_stops_asking(make_client, sleeps, tmp_path):
    server = HangUp()
    try:
        client = make_client(base_url="http://127.0.0.1:%d/apis" % server.port)
        outcomes = client.fetch(range(1, 101), str(tmp_path), workers=8)
    finally:
        server.close()
    assert [o.run_id for o in outcomes] == list(range(1, 101))
    assert {o.status for o in outcomes} == {"error"}
    assert all(o.error.startswith("the API cannot be reached: ") for o in outcomes)
    # the chunks under way when the first gave up stop there: far fewer than 20 chunks x 5 tries
    assert server.accepted <= 8 * 5
    assert os.listdir(str(tmp_path)) == []


def test_an_answering_api_is_not_called_unreachable(fake, client, sleeps):
    fake.add_runs([1, 6])
    fake.bulk_faults += [("status", 503)] * 5
    out = client.get_results(range(1, 11))
    assert out[1].status == "missing" and "HTTP 503" in out[1].error
    assert out[6].status == "ready"  # the next chunk was still asked
    assert client.unreachable is None


def test_cli_unreachable_api_one_summary_message_every_run_once(cli_sleeps, monkeypatch, tmp_path):
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    base = "http://127.0.0.1:%d/apis" % closed_port()
    ids = [str(i) for i in range(101, 201)]
    code, out, err = run(["fetch"] + ids + ["--base-url", base, "-o", str(tmp_path), "--json"])
    assert code == 1
    got = lines(out)
    assert [o["run_id"] for o in got] == list(range(101, 201))
    assert {o["status"] for o in got} == {"error"}
    assert err.count("Connection refused") == 1 and err.count(base) == 1
    assert "error: cannot reach the API at %s: ConnectionRefusedError" % base in err
    assert "100 runs not resolved" in err
    assert len(cli_sleeps.waits) <= 8 * 4
    code, out, err = run(["urls"] + ids[:7] + ["--base-url", base])
    assert code == 1 and len(lines(out)) == 7
    assert err.count("cannot reach the API at %s" % base) == 1 and "7 runs not resolved" in err


def test_urls_summary_line_and_missing_says_why(env):
    env.add_run(1)
    env.add_run(2, "pending")
    code, out, err = run(["urls", "1", "2", "3"])
    assert code == 1
    got = lines(out)
    assert [(o["status"], o["error"]) for o in got] == [
        ("ready", None), ("pending", "not ready yet"), ("missing", "the API returned no entry for it")]
    assert "sound_bulk: 1 ready, 1 pending, 1 missing (3 runs in " in err
    code, out, err = run(["urls", "1", "-q"])
    assert code == 0 and err == ""
