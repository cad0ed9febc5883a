"""The command line: statuses, JSON lines, exit codes, reruns, waiting, Ctrl-C, --help on a bare Python."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import sound_bulk as sb
from conftest import TTY, run, lines
from conftest import CHILD_MODULE_DIR, THOROUGH
from fake_api import API_KEY, body_sha256

CAPTURE = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)  # capture_output, text: 3.7+

# also the cwd of subprocesses: `python -m` looks there first
MODULE_DIR = CHILD_MODULE_DIR  # a compiled copy of the module (conftest)
# Children that need only the standard library and the module (PYTHONPATH) start with -S: site's .pth
# files cost ~80 ms of every start here, and what these children are for (signals delivered to a real
# process, a real interpreter's exit) has nothing to do with site-packages.
PYTHON_S = [sys.executable, "-S"]


def wait_until(condition, proc, seconds=20.0):
    """Poll ``condition()`` every 5 ms until it holds, the child ends, or ``seconds`` pass (a bound for
    a loaded machine, never paid when things go right).  True if it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.005)
    return False


def test_fetch_all_saved_exit_0_then_rerun_skips_without_requests(env, tmp_path):
    env.add_runs([1, 2, 3, 4, 5, 6, 7], size=20_000)
    code, out, err = run(["fetch", "1", "2", "3", "4", "5", "6", "7", "-o", str(tmp_path / "new"), "--json"])
    assert code == 0, err
    got = lines(out)
    assert [o["run_id"] for o in got] == [1, 2, 3, 4, 5, 6, 7]
    assert {o["status"] for o in got} == {"saved"}
    assert all(o["bytes"] == 20_000 and o["error"] is None for o in got)
    for o in got:
        assert sha(o["path"]) == body_sha256(o["run_id"], 20_000)
    before = len(env.requests)
    code, out, _ = run(["fetch", "1", "2", "3", "4", "5", "6", "7", "-o", str(tmp_path / "new"), "--json"])
    assert code == 0
    assert {o["status"] for o in lines(out)} == {"skipped"}
    assert len(env.requests) == before  # nothing asked, nothing downloaded


def sha(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_every_status_in_request_order_once(env, tmp_path):
    env.add_run(10)
    env.add_run(11, "pending", shape="empty_url")
    env.add_run(12, "failed")
    env.add_run(13)
    env.storage_faults[13] = ["html200"]
    (tmp_path / "14.wav").write_bytes(b"RIFF....WAVE")
    code, out, err = run(["fetch", "14", "12", "10", "99", "11", "13", "10", "-o", str(tmp_path), "--json"])
    assert code == 1
    got = lines(out)
    assert [(o["run_id"], o["status"]) for o in got] == [
        (14, "skipped"), (12, "failed"), (10, "saved"), (99, "missing"), (11, "pending"), (13, "error")]
    assert "HTML page" in got[5]["error"] and got[5]["path"] is None
    assert sorted(os.listdir(tmp_path)) == ["10.wav", "14.wav"]
    assert "Traceback" not in err


def test_run_ids_from_stdin(env, tmp_path):
    env.add_runs([1, 2, 3])
    code, out, _ = run(["fetch", "-", "-o", str(tmp_path), "--json"], stdin="1, 2\n3 2\n")
    assert code == 0 and [o["run_id"] for o in lines(out)] == [1, 2, 3]


def test_human_output_and_summary(env, tmp_path):
    env.add_runs([1])
    code, out, err = run(["fetch", "1", "2", "-o", str(tmp_path)])
    assert code == 1
    assert "1.wav" in out and "saved" in out and "missing" in out
    assert "1 saved, 1 missing" in err


@pytest.mark.parametrize("argv,message", [
    (["fetch", "1", "x2", "0"], "invalid run IDs: 'x2', '0'"),
    (["fetch"], "no run IDs"),
    (["fetch", "1", "--base-url", "http://api.example.com/apis"], "plain http"),
    (["fetch", "1", "--timeout", "0"], "must be more than 0"),
    (["fetch", "1", "--workers", "0"], "from 1 to 64"),
    (["urls", "-"], "no run IDs"),
    (["nonsense"], "invalid choice"),
    ([], "usage"),
])
def test_bad_usage_exits_2_and_sends_nothing(env, argv, message):
    code, out, err = run(argv)
    assert code == 2
    assert message in err
    assert env.requests == []
    assert "Traceback" not in err


def test_missing_key_exits_2(env, monkeypatch):
    monkeypatch.delenv("CAMB_API_KEY")
    code, _, err = run(["urls", "1"])
    assert code == 2 and "CAMB_API_KEY" in err and env.requests == []


def test_rejected_key_exits_3_without_printing_it(env, monkeypatch, tmp_path):
    monkeypatch.setenv("CAMB_API_KEY", "wrong-key-SECRET")
    code, out, err = run(["fetch", "1", "-o", str(tmp_path), "-v"])
    assert code == 3
    assert "rejected the key" in err and "SECRET" not in out + err


def test_urls_command(env):
    env.add_run(1)
    env.add_run(2, "pending")
    code, out, _ = run(["urls", "1"])
    assert code == 0 and lines(out)[0]["url"].startswith(env.storage_origin)
    code, out, _ = run(["urls", "1", "2", "3"])
    assert code == 1
    assert [(o["run_id"], o["status"]) for o in lines(out)] == [(1, "ready"), (2, "pending"), (3, "missing")]
    assert lines(out)[1]["url"] is None


def test_wait_polls_until_ready(fake, make_client, sleeps, tmp_path):
    """Through the Client and its sleep seam: the CLI would really sleep a second before the second round."""
    fake.add_run(1, ready_after=1)
    fake.add_run(2)
    outcomes = make_client().fetch([1, 2], str(tmp_path), wait=20)
    assert [o.status for o in outcomes] == ["saved", "saved"]
    posted = [json.loads(r["body"])["run_ids"] for r in fake.seen("api", "POST")]
    assert posted == [[1, 2], [1]]  # the second round asks only for the run that was pending
    assert sum(w for w in sleeps.waits if w) == 1.0  # one pause, POLL_INITIAL


def test_wait_gives_up_at_the_deadline(fake, make_client, sleeps, tmp_path):
    fake.add_run(1, "pending")
    outcomes = make_client().fetch([1], str(tmp_path), wait=10)
    assert outcomes[0].status == "pending"
    assert sum(w for w in sleeps.waits if w) <= 10
    assert sleeps.waits == [1.0, 2.0, 4.0, 3.0]  # growing pauses, the last cut to the deadline
    assert len(fake.seen("api")) == 5


def test_downloads_reuse_connections(env, tmp_path):
    env.add_runs(range(1, 21), size=10_000)
    code, _, _ = run(["fetch"] + [str(i) for i in range(1, 21)] + ["-o", str(tmp_path), "--workers", "3"])
    assert code == 0
    assert env.connections["storage"] <= 3
    assert env.connections["api"] <= 3
    assert len(env.seen("api")) == 4


def test_unwritable_output_is_a_per_run_error(env, tmp_path):
    env.add_runs([1, 2])
    # (a path through a file is a usage error now: test_cli_edges.py); a name too long to create is not
    code, out, err = run(["fetch", "1", "2", "-o", str(tmp_path / ("f" * 300) / "sub"), "--json"])
    assert code == 1
    assert [o["status"] for o in lines(out)] == ["error", "error"]
    assert "cannot create" in lines(out)[0]["error"]
    assert "Traceback" not in err


def test_progress_on_a_terminal_only(env, tmp_path):
    env.add_runs([1, 2], size=100_000)
    tty = TTY()
    code, _, _ = run(["fetch", "1", "2", "-o", str(tmp_path / "a")], stderr=tty)
    assert code == 0 and "2/2 files" in tty.getvalue()
    code, _, err = run(["fetch", "1", "2", "-o", str(tmp_path / "b")])
    assert "files" not in err
    quiet = TTY()
    code, out, _ = run(["fetch", "1", "2", "-o", str(tmp_path / "c"), "-q"], stderr=quiet)
    assert quiet.getvalue() == "" and out == ""


def test_verbose_logs_requests_with_secrets_redacted(env, tmp_path):
    env.add_runs([1])
    code, _, err = run(["fetch", "1", "-o", str(tmp_path), "-v"])
    assert code == 0
    assert "POST %s/text-to-sound-results -> 200" % env.base_url in err
    assert "/bucket/audio_1.wav?<redacted> -> 200" in err
    assert API_KEY not in err and "fakesig" not in err


def _ctrl_c(proc, seconds):
    """Ctrl-C to the child ``proc``: its output and error (waited for at most ``seconds``), and the
    seconds from the signal to its end."""
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=seconds)
    return out, err, time.monotonic() - start


def _default_sigint():
    # A shell's background job starts with SIGINT ignored, and children inherit that (Python then
    # rightly leaves it ignored); these tests want the Ctrl-C a terminal user has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _two_downloads_held_back(fake):
    """Run 1 downloads at once; runs 2 and 3 get their headers, then their bodies are held back 30 s."""
    fake.add_run(1, size=50_000)
    fake.add_runs([2, 3], size=2_000_000)
    fake.slow_delay = 30
    fake.storage_faults.update({2: ["slow"], 3: ["slow"]})


def _interrupt_a_real_child(folder):
    """The test below, up to its checks (an early scenario: conftest, with its own fake)."""
    from fake_api import FakeCamb
    with FakeCamb() as fake:
        _two_downloads_held_back(fake)
        env = dict(os.environ, CAMB_API_KEY=API_KEY, CAMB_API_BASE_URL=fake.base_url, PYTHONPATH=MODULE_DIR)
        cmd = PYTHON_S + ["-m", "sound_bulk", "fetch", "1", "2", "3", "-o", folder, "--json"]
        proc = subprocess.Popen(cmd, env=env, cwd=MODULE_DIR, **CAPTURE,
                                preexec_fn=_default_sigint)
        try:
            if not wait_until(lambda: fake.stalled == 2 and os.path.exists(os.path.join(folder, "1.wav")), proc):
                proc.kill()
                return {"not under way": "%d stalled, %s on disk, %d storage requests; child said %r" % (
                    fake.stalled, os.listdir(folder), len(fake.seen("storage")), proc.communicate(timeout=20))}
            out, err, took = _ctrl_c(proc, 20)
        finally:
            proc.kill()
        left = sorted(os.listdir(folder))
        # the next run (in this process: one interpreter start less) finishes the rest
        fake.slow_delay = 0
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CAMB_API_KEY", API_KEY)
            mp.setenv("CAMB_API_BASE_URL", fake.base_url)
            rerun = run(cmd[cmd.index("sound_bulk") + 1:])
    return {"code": proc.returncode, "took": took, "out": out, "err": err, "left": left, "rerun": rerun}


@pytest.mark.early(scenario=_interrupt_a_real_child)
def test_interrupt_stops_promptly_and_leaves_no_partial_file(early):
    """A real Ctrl-C (SIGINT) to a real `python -m sound_bulk fetch`.  Timing assumed: the child ends
    within 5 s of the signal (it needs a fraction of a second; the stalled downloads would take 30 s).
    The signal is sent once run 1 is saved and the fake holds back the bodies of runs 2 and 3 after their
    headers: both downloads are mid-way, temp files open.  SIGTERM: the next test."""
    got = early()
    assert "not under way" not in got, got.get("not under way")
    err = got["err"]
    assert got["code"] == 130, err
    assert got["took"] < 5
    assert "Traceback" not in err and "interrupted" in err
    assert [(o["run_id"], o["status"]) for o in lines(got["out"])] == [(1, "saved"), (2, "error"), (3, "error")]
    assert got["left"] == ["1.wav"]  # no partial file, no temp file
    code, out, err = got["rerun"]  # the next run finishes the rest
    assert code == 0, err
    assert [o["status"] for o in lines(out)] == ["skipped", "saved", "saved"]


class _Unmapped(Exception):
    pass


def _unmapped(signum, frame):
    raise _Unmapped("SIGTERM reached the run unmapped (console_main maps it to Ctrl-C)")


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="sends a signal to this process's main thread")
def test_interrupt_by_sigterm_ends_the_run_like_ctrl_c(fake, tmp_path, monkeypatch, capsys):
    """console_main (the `sound-bulk` entry point) maps SIGTERM to Ctrl-C: a real SIGTERM, sent to this
    process while runs 2 and 3 are held back mid-way, ends the run promptly with status 130, no partial
    file.  In this process (one interpreter start less; the previous test sends Ctrl-C to a child): a
    handler set here first turns a SIGTERM that console_main left unmapped into a test failure instead of
    the end of the test run.  Timing assumed: the run ends within 5 s of the signal."""
    _two_downloads_held_back(fake)
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    monkeypatch.setattr(sys, "argv", ["sound-bulk", "fetch", "1", "2", "3", "-o", str(tmp_path), "--json"])
    done, sent = threading.Event(), []

    def terminate():
        deadline = time.monotonic() + 20
        while not done.is_set() and time.monotonic() < deadline:
            if fake.stalled == 2 and os.path.exists(str(tmp_path / "1.wav")):
                sent.append(time.monotonic())
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                return
            time.sleep(0.005)

    was_cli = sb._CLI_PROCESS[0]  # console_main marks the process as the CLI's: put that back too
    old_int = signal.getsignal(signal.SIGINT)  # the CLI leaves both ignored on its way out: put them back
    old = signal.signal(signal.SIGTERM, _unmapped)
    sender = threading.Thread(target=terminate)
    try:
        sender.start()
        with pytest.raises(SystemExit) as exit_:
            sb.console_main()
        ended = time.monotonic()
        done.set()
        sender.join(30)  # only then is the old handler back: nothing can send SIGTERM after that
    finally:
        done.set()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        sb._CLI_PROCESS[0] = was_cli
    out, err = capsys.readouterr()
    assert sent, "not under way: %d stalled, %s on disk; %s" % (fake.stalled, os.listdir(str(tmp_path)), err)
    assert exit_.value.code == 130, err
    assert ended - sent[0] < 5
    assert "Traceback" not in err and "interrupted" in err
    assert [(o["run_id"], o["status"]) for o in lines(out)] == [(1, "saved"), (2, "error"), (3, "error")]
    assert sorted(os.listdir(str(tmp_path))) == ["1.wav"]  # no partial file, no temp file


def _offline_demo(folder):
    """`tests/fake_api.py --demo` run in the scenario's process (an early scenario: conftest), everything
    written on stdout and stderr (its own lines and its children's) and the files it saved."""
    import contextlib
    import fake_api
    output = os.path.join(folder, "output")
    saved = os.dup(1), os.dup(2)
    here = os.getcwd()
    with open(output, "ab", buffering=0) as fds, open(output, "a", buffering=1) as text:  # both append
        os.dup2(fds.fileno(), 1)
        os.dup2(fds.fileno(), 2)
        try:
            os.chdir(MODULE_DIR)
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                code = fake_api.main(["--demo", os.path.join(folder, "demo")])
        finally:
            os.chdir(here)
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
    with open(output, encoding="utf-8", errors="replace") as f:
        return code, f.read(), os.listdir(os.path.join(folder, "demo"))


@pytest.mark.early(scenario=_offline_demo)
def test_offline_demo_works(early):
    """`tests/fake_api.py --demo`, run in the (early) scenario's process (its two `python -m sound_bulk`
    children are real; one interpreter start less than running the script;
    test_fake_started_by_hand_runs_until_ctrl_c runs fake_api.py as a script)."""
    code, output, names = early()
    assert code == 0
    assert "$ python -m sound_bulk fetch" in output and "nothing left this machine" in output, output
    assert "saved" in output and '"status": "skipped"' in output, output
    assert "Traceback" not in output
    assert len([n for n in names if n.endswith(".wav")]) == 8


def _ctrl_c_at(folder, delay):
    """The test below, up to its checks (an early scenario: conftest, with its own fake)."""
    from fake_api import FakeCamb
    with FakeCamb() as fake:
        fake.request_delay = 0.01
        fake.add_runs(range(1, 41), size=200_000)
        env = dict(os.environ, CAMB_API_KEY=API_KEY, CAMB_API_BASE_URL=fake.base_url, PYTHONPATH=MODULE_DIR)
        cmd = PYTHON_S + ["-m", "sound_bulk", "fetch"] + [str(i) for i in range(1, 41)] + [
            "-o", folder, "--json", "--workers", "2"]
        proc = subprocess.Popen(cmd, env=env, cwd=MODULE_DIR, **CAPTURE,
                                preexec_fn=_default_sigint)
        try:
            wait_until(lambda: fake.requests, proc)  # until the fetch is under way
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=15)
        finally:
            proc.kill()
    return proc.returncode, out, err, os.listdir(folder)


@pytest.mark.early(scenario=_ctrl_c_at)
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2] + ([0.02, 0.1, 0.4] if THOROUGH else []))
def test_ctrl_c_at_any_moment_ends_cleanly(early, delay):
    """Interrupt at different points of a fetch (resolving, downloading, finishing), counted from the
    first request: always a prompt and clean end, whatever the moment.  Which moment each delay hits
    depends on the machine's speed; every outcome is checked the same way, so none can flake.
    Three moments by default, six with SOUND_BULK_THOROUGH=1."""
    code, out, err, names = early()
    assert code in (0, 130), err
    assert "Traceback" not in err
    assert [n for n in names if not n.endswith(".wav")] == []
    saved = {o["run_id"] for o in lines(out) if o["status"] == "saved"} if out else set()
    assert saved == {int(n[:-4]) for n in names}


def _ctrl_c_in_a_wait(folder, command):
    """The test below, up to its checks (an early scenario: conftest, with its own fake): the API answers
    429 with Retry-After: 30 to the bulk call (fetch) or to the task's poll (generate); Ctrl-C once the
    child has asked.  Its exit status and stderr, the seconds from Ctrl-C to its end, how often it asked."""
    from fake_api import FakeCamb
    with FakeCamb() as fake:
        throttled = (429, [("Retry-After", "30")])
        if command == "fetch":
            fake.add_runs([1])
            fake.bulk_faults = [("status",) + throttled] * 3

            def asked():
                return fake.seen("api")
        else:
            fake.poll_faults = [throttled] * 3

            def asked():
                return fake.seen("api", "GET")
        env = dict(os.environ, CAMB_API_KEY=API_KEY, CAMB_API_BASE_URL=fake.base_url, PYTHONPATH=MODULE_DIR)
        proc = subprocess.Popen(PYTHON_S + ["-m", "sound_bulk", command, "1" if command == "fetch" else "rain",
                                            "-o", folder], env=env, cwd=MODULE_DIR, **CAPTURE,
                                preexec_fn=_default_sigint)
        try:
            wait_until(asked, proc)
            _, err, took = _ctrl_c(proc, 60)
        finally:
            proc.kill()
        return proc.returncode, err, took, len(asked())


@pytest.mark.early(scenario=_ctrl_c_in_a_wait)
@pytest.mark.parametrize("command", ["fetch", "generate"])
def test_ctrl_c_while_the_api_asks_to_wait_ends_at_once(early, command):
    """Timing assumed: the child ends within 10 s of Ctrl-C (the API asked for 30 s), and nothing is
    asked again.  A wait before another try is cut short by Ctrl-C, in the bulk call of fetch and in the
    task poll of generate (whose first Ctrl-C lets a submission on the wire finish)."""
    code, err, took, asked = early()
    assert code == 130, err
    assert took < 10, (took, err)
    assert asked == 1
    assert "Traceback" not in err


def test_verbose_leaves_the_callers_logging_as_it_was(env, tmp_path):
    import logging
    log = logging.getLogger("sound_bulk")
    mine = logging.NullHandler()
    log.addHandler(mine)
    log.setLevel(logging.WARNING)
    try:
        env.add_runs([1])
        assert run(["fetch", "1", "-o", str(tmp_path), "-v"])[0] == 0
        assert log.handlers == [mine] and log.level == logging.WARNING
    finally:
        log.removeHandler(mine)
        log.setLevel(logging.NOTSET)
