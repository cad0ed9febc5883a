"""The fetch engine: the AIMD window for API calls, an unreachable API, the bounded in-flight window,
grouped fsyncs, output as runs settle, waiting status, late signals."""

import io
import os
import socket
import threading

import pytest

import sound_bulk as sb
from conftest import CHILD_MODULE_DIR, run, lines, hold_api_calls
from fake_api import API_KEY


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
            conn.close()
            if not self.stop.is_set():  # not close()'s own wake-up call
                self.accepted += 1

    def close(self):
        self.stop.set()
        try:  # wakes accept() now rather than at its next 0.1 s timeout
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
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


GO = threading.Event()  # never set: the calls that take window slots here are not halted


def test_window_halves_on_a_429_once_per_round_and_grows_back_additively():
    ft = FakeTime()
    w = sb._CallWindow(8, ft.clock, ft.sleep)
    tickets = [w.acquire(GO) for _ in range(8)]
    w.release(tickets[0], True, shrink=True)
    assert w.size == 4
    w.release(tickets[1], True, shrink=True)  # already under way when it shrank: no second halving
    assert w.size == 4
    for t in tickets[2:6]:
        w.release(t, True)
    assert 4 < w.size < 5  # +1/size per answer: about one slot per window-full of answers
    fresh = w.acquire(GO)
    assert w.active == 3
    w.release(fresh, True, shrink=True)  # a 429 of the new round halves again
    assert w.size < 3
    for t in tickets[6:]:
        w.release(t, True)
    for _ in range(200):
        w.release(w.acquire(GO), True)
    assert w.size == 8  # back to the limit, never above
    assert ft.waits == []


class _WaitCounting(threading.Condition):
    """A Condition that counts its wait() calls, so a test sees a thread block without a fixed delay."""

    def __init__(self):
        super().__init__()
        self.waits = 0
        self.changed = threading.Condition()

    def wait(self, timeout=None):
        with self.changed:
            self.waits += 1
            self.changed.notify_all()
        return super().wait(timeout)


def test_window_pause_holds_every_caller_and_a_full_window_blocks():
    """Another thread's acquire waits for the server-asked pause (through the sleep seam) and then
    for a free slot of the shrunk window.  The test waits (at most 5 s each) for that thread to block
    in the window's Condition or to get its slot, never for a fixed time."""
    ft = FakeTime()
    w = sb._CallWindow(4, ft.clock, ft.sleep)
    cond = w._cond = _WaitCounting()
    t = [w.acquire(GO) for _ in range(4)]
    w.release(t[0], True, shrink=True, pause=2.5)  # 429, Retry-After: 2.5
    assert (w.size, w.active) == (2, 3)
    got = threading.Event()

    def other():
        w.acquire(GO)
        got.set()
        with cond.changed:
            cond.changed.notify_all()

    def blocked_or_got(waits):
        with cond.changed:
            cond.changed.wait_for(lambda: cond.waits >= waits or got.is_set(), 5)
        return not got.is_set()

    th = threading.Thread(target=other, daemon=True)
    th.start()
    assert blocked_or_got(1)  # paused, then 3 under way in a window of 2
    assert ft.waits == [2.5]
    w.release(t[1], True)
    assert blocked_or_got(2)  # 2 under way: still full
    w.release(t[2], True)
    assert got.wait(5)
    th.join(5)
    assert ft.waits == [2.5]


def test_bulk_calls_run_concurrently_up_to_the_limit(fake, make_client, tmp_path):
    """The first 3 bulk calls are held until all 3 are in the server (before: 2 at most, so they gave up
    after 5 s and the peak was 2).  Then, with 3 workers, the first 3 calls are held 50 ms longer: a 4th
    call the client should not make would be seen (on a loaded machine it may come later; the limit is
    then checked less sharply, never wrongly)."""
    fake.add_runs(range(1, 21), size=100)
    hold_api_calls(fake, 3)
    outcomes = make_client(api_concurrency=8).fetch(range(1, 16), str(tmp_path), workers=8)  # 3 calls
    assert {o.status for o in outcomes} == {"saved"}
    assert fake.api_peak == 3  # before: 2 at most
    fake.api_peak = 0
    hold_api_calls(fake, 3, then=0.05)
    outcomes = make_client().fetch(range(1, 21), str(tmp_path / "b"), workers=3)  # 4 calls
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


# -- a bounded window of runs in flight, fsyncs off the transfer slots ----------------------------

def test_runs_in_flight_stay_within_the_window_whatever_the_batch(fake, client, tmp_path):
    """URLs issued but not yet settled never exceed the window (5 x bulk calls + 4 x transfers), so
    memory follows the window, not the batch (before: every run was resolved at once; 50 runs is over
    twice the bound)."""
    fake.add_runs(range(1, 51), size=100)
    most = [0]
    settled = [0]

    def on_outcome(o):
        settled[0] += 1
        most[0] = max(most[0], len(fake.issued) - settled[0])

    outcomes = client.fetch(range(1, 51), str(tmp_path), workers=2, on_outcome=on_outcome)
    assert [o.status for o in outcomes] == ["saved"] * 50
    assert most[0] <= 5 * 2 + 4 * 2 + 5


def _watch_disk(monkeypatch, fake, total):
    """Record fsyncs and links (with the thread that made them); the first fsync of a file waits until
    the storage has served every download, as a slow disk would (bounded: 10 s)."""
    import time as _time
    calls = []
    real_fsync, real_link = os.fsync, os.link
    first = threading.Event()

    def fsync(fd):
        target = os.readlink("/proc/self/fd/%d" % fd)
        if not first.is_set() and not os.path.isdir(target):
            first.set()
            for _ in range(1000):
                if len(fake.seen("storage")) >= total:
                    break
                _time.sleep(0.01)
        calls.append(("fsync", target, threading.current_thread().name))
        return real_fsync(fd)

    def link(src, dst, **kw):
        calls.append(("link", dst, threading.current_thread().name))
        return real_link(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    return calls


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_fsyncs_are_grouped_off_the_transfer_slots_and_saved_means_durable(fake, client, tmp_path, monkeypatch):
    fake.add_runs(range(1, 21), size=3000)
    calls = _watch_disk(monkeypatch, fake, 20)
    folder = str(tmp_path)
    durable_at_report = []

    def on_outcome(o):
        mine = [i for i, c in enumerate(calls) if c[0] == "link" and c[1] == o.path]
        durable_at_report.append(bool(mine) and ("fsync", folder) in [c[:2] for c in calls[mine[0]:]])

    outcomes = client.fetch(range(1, 21), folder, workers=4, on_outcome=on_outcome)
    assert [o.status for o in outcomes] == ["saved"] * 20
    assert all(durable_at_report)  # reported saved only once its name was on disk
    links = [c for c in calls if c[0] == "link"]
    folder_syncs = [c for c in calls if c[:2] == ("fsync", folder)]
    assert len(links) == 20 and 1 <= len(folder_syncs) <= 5  # grouped (before: one per file)
    for link in links:  # each file's bytes are on disk before it gets its name
        assert any(c[0] == "fsync" and c[1].startswith(os.path.join(folder, ".")) for c in calls[:calls.index(link)])
    assert {c[2] for c in calls} == {"sound_bulk-commit"}  # no fsync in a transfer slot


def test_default_transfer_threads_follow_the_cpu_count(monkeypatch):
    for cpus, threads in ((1, 4), (2, 8), (32, 8), (None, 4)):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        assert sb._transfer_threads(None) == threads
    assert sb._transfer_threads(3) == 3  # given: as given


# -- output as runs settle, and what --wait is waiting for ----------------------------------------

def test_human_lines_come_as_runs_settle_json_keeps_request_order(env, cli_sleeps, tmp_path):
    env.add_run(1, ready_after=2)
    env.add_runs([2, 3])
    code, out, err = run(["fetch", "1", "2", "3", "-o", str(tmp_path / "a"), "--wait", "20"])
    assert code == 0
    order = [line.split()[0] for line in out.splitlines()]
    assert sorted(order[:2]) == ["2", "3"] and order[2] == "1"  # before: 1, 2, 3 (1 held the others back)
    # not a terminal: one line on stderr each time it starts waiting
    assert [line for line in err.splitlines() if "waiting" in line] == [
        "sound_bulk: waiting for 1 run, next check in 1 s, 20 s left",
        "sound_bulk: waiting for 1 run, next check in 2 s, 19 s left"]
    env.add_run(4, ready_after=1)
    code, out, err = run(["fetch", "4", "2", "-o", str(tmp_path / "b"), "--wait", "20", "--json"])
    assert [o["run_id"] for o in lines(out)] == [4, 2]


def test_terminal_shows_what_it_waits_for(env, cli_sleeps, tmp_path):
    import pty
    import select
    env.add_run(1, ready_after=1)
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    try:
        stdout = io.StringIO()
        code = sb.main(["fetch", "1", "-o", str(tmp_path), "--wait", "30"], stdin=io.StringIO(), stdout=stdout,
                       stderr=tty)
        out = stdout.getvalue()
        tty.write("<end of test>")  # read up to this mark: no waiting for the terminal to stay quiet
        tty.flush()
        shown = b""
        while b"<end of test>" not in shown and select.select([master], [], [], 5)[0]:
            piece = os.read(master, 65536)
            if not piece:
                break
            shown += piece
    finally:
        tty.close()
        os.close(master)
    assert code == 0 and out.startswith("1 ")
    assert b"\r\x1b[Kwaiting for 1 run, next check in 1 s, 30 s left" in shown
    assert b"\r\x1b[Ksound_bulk: 1 saved" in shown  # the status line is cleared before messages


# -- signals: late ones change nothing, a second one does not break the clean-up ------------------

def test_ctrl_c_after_the_work_is_done_does_not_change_the_result(env, tmp_path, monkeypatch):
    import signal
    env.add_runs([1, 2])
    real = sb._report_outcomes

    def late_ctrl_c(*a):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the summary is printed
        return real(*a)

    monkeypatch.setattr(sb, "_report_outcomes", late_ctrl_c)
    code, out, err = run(["fetch", "1", "2", "-o", str(tmp_path), "--json"])
    assert code == 0, err  # before: 130, 'interrupted', as if nothing had been saved
    assert [o["status"] for o in lines(out)] == ["saved", "saved"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was


def _second_ctrl_c_during_clean_up(folder):
    """The test below, up to its checks (an early scenario: conftest, with its own fake; the two Ctrl-Cs go
    to the process it runs in)."""
    import signal
    from fake_api import FakeCamb
    with FakeCamb() as fake, pytest.MonkeyPatch.context() as monkeypatch:
        fake.add_run(1, size=1000)
        fake.add_runs([2, 3], size=2_000_000)
        fake.slow_delay = 30
        fake.storage_faults.update({2: ["slow"], 3: ["slow"]})
        real_abort = sb.Client.abort

        def abort(self):
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C, in the middle of clean-up
            real_abort(self)

        monkeypatch.setattr(sb.Client, "abort", abort)

        def first_ctrl_c():
            import time as _time
            for _ in range(1000):  # once both slow downloads are under way (at most 10 s)
                if len(fake.seen("storage")) >= 3 and os.path.exists(os.path.join(folder, "1.wav")):
                    break
                _time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)

        client = sb.Client(API_KEY, base_url=fake.base_url)
        thread = threading.Thread(target=first_ctrl_c, daemon=True)
        thread.start()
        try:
            with pytest.raises(sb.FetchInterrupted) as caught:
                client.fetch([1, 2, 3], folder)
        finally:
            client.close()
            thread.join(15)
    return [(o.run_id, o.status) for o in caught.value.outcomes], os.listdir(folder)


@pytest.mark.early(scenario=_second_ctrl_c_during_clean_up)
def test_a_second_ctrl_c_during_clean_up_still_reports_every_run_and_leaves_no_part(early):
    outcomes, names = early()
    assert [run_id for run_id, _ in outcomes] == [1, 2, 3]
    assert [status for _, status in outcomes] == ["saved", "error", "error"]
    assert [n for n in names if n.endswith(".part")] == []


# -- start-up: nothing heavy that a fetch does not need --------------------------------------------

def _imports_of_a_fetch(folder):
    """The test below's child and its fake (an early scenario: conftest): what the child printed."""
    import subprocess
    import sys
    from fake_api import FakeCamb
    with FakeCamb() as fake:
        fake.add_runs([1, 2])
        fake.bulk_faults += [("status", 503)]  # one retry, which logs: still no logging module
        code = ("import sys, sound_bulk\n"
                "print(sorted(m for m in ('threading', 'collections', 'json', 'http.client', 'ssl', 'argparse',\n"
                "                         'shutil') if m in sys.modules))\n"
                "c = sound_bulk.Client(%r, base_url=%r, sleep=lambda s: None)\n"
                "print([o.status for o in c.fetch([1, 2], %r)])\n"
                "print(sorted(m for m in ('logging', 'concurrent.futures') if m in sys.modules))\n"
                % (API_KEY, fake.base_url, folder))
        return subprocess.check_output([sys.executable, "-S", "-c", code], cwd=CHILD_MODULE_DIR, timeout=60,
                                       env=dict(os.environ, PYTHONPATH=CHILD_MODULE_DIR), universal_newlines=True)


@pytest.mark.early(scenario=_imports_of_a_fetch)
def test_a_fetch_imports_neither_logging_nor_concurrent_futures(early):
    """Start-up cost: a bare ``import sound_bulk`` loads no threads, JSON, HTTP or TLS machinery (what
    ``--help``, a bad argument or a notebook's import pays), and a whole fetch never loads logging or
    concurrent.futures."""
    # before: ['collections', 'threading'] on import, ['concurrent.futures', 'logging'] after the fetch
    assert early().splitlines() == ["[]", "['saved', 'saved']", "[]"]


def _default_sigint():
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job inherits SIGINT ignored; undo that


def _late_ctrl_c_child(folder):
    """The test below's child (an early scenario: conftest): its exit status, stdout and stderr."""
    import subprocess
    import sys
    code = ("import os, signal, sound_bulk as sb\n"
            "sb._CLI_PROCESS[0] = True\n"
            "flag = sb._InterruptFlag()\n"
            "flag.ignore_after = True\n"
            "with flag:\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "print('flag raised', flag.raised)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "print('still here')\n")
    proc = subprocess.Popen([sys.executable, "-S", "-c", code], cwd=CHILD_MODULE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            env=dict(os.environ, PYTHONPATH=CHILD_MODULE_DIR),
                            preexec_fn=_default_sigint)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.early(scenario=_late_ctrl_c_child)
def test_the_command_line_process_ignores_ctrl_c_once_its_work_is_done(early):
    """In the process console_main runs, SIGINT stays ignored after a command's flag is left (the process
    only prints and exits): a late Ctrl-C can no longer turn a finished run into 130 or death by signal."""
    code, out, err = early()
    assert code == 0, err
    assert out.splitlines() == ["flag raised True", "still here"]
