"""The command line at its edges: exit codes, option checks, the interrupted count, the summary line."""

import json
import os
import re
import signal
import threading
import time

import pytest

from conftest import TTY, run
from fake_api import API_KEY


@pytest.fixture
def env(fake, monkeypatch):
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    fake.default_task_plan = ("success", 0)  # no real sleep between polls
    return fake


@pytest.mark.parametrize("argv,message", [
    (["fetch", "1", "--timeout", "abc"], "argument --timeout: 'abc' is not a number"),
    (["fetch", "1", "--timeout", "0"], "argument --timeout: must be more than 0"),
    (["fetch", "1", "--timeout", "inf"], "argument --timeout: 'inf' is too long: at most 604800 seconds"),
    (["fetch", "1", "--wait", "-1"], "argument --wait: must be 0 or more"),
    (["fetch", "1", "--workers", "0"], "argument --workers: must be a whole number from 1 to 64"),
    (["fetch", "1", "--workers", "65"], "argument --workers: must be a whole number from 1 to 64"),
    (["generate", "x", "--workers", "0"], "argument --workers: must be a whole number from 1 to 64"),
    (["generate", "x", "--workers", "65"], "argument --workers: must be a whole number from 1 to 64"),
    (["generate", "x", "--workers", "2.5"], "argument --workers: must be a whole number from 1 to 64"),
    (["generate", "x", "--duration", "abc"], "argument --duration"),
])
def test_bad_options_exit_2_with_the_reason_and_send_nothing(env, tmp_path, argv, message):
    code, out, err = run(argv + ["-o", str(tmp_path)])
    assert code == 2 and message in err and out == ""
    assert "Traceback" not in err
    assert env.requests == []


@pytest.mark.parametrize("workers", ["1", "64"])
def test_generate_workers_1_and_64_are_accepted(env, tmp_path, workers):
    code, out, err = run(["generate", "x", "--workers", workers, "-o", str(tmp_path), "--json"])
    assert code == 0, err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["saved"]


def test_an_error_of_the_disk_exits_1_with_a_message_not_a_traceback(env, tmp_path):
    # (a path through a file is a usage error, exit 2: test_cli_edges.py); a name too long is the disk's
    code, out, err = run(["generate", "x", "-o", str(tmp_path / ("f" * 300) / "sub")])
    assert code == 1
    assert err.startswith("sound_bulk: error: ") and "name too long" in err and "Traceback" not in err
    assert env.requests == []  # nothing paid for before the output folder exists


def test_a_rejected_key_exits_3(env, tmp_path, monkeypatch):
    monkeypatch.setenv("CAMB_API_KEY", "wrong-key-1234567")
    code, _, err = run(["fetch", "1", "-o", str(tmp_path)])
    assert code == 3 and "rejected the key" in err and "wrong-key-1234567" not in err


def test_the_summary_counts_each_status_in_a_fixed_order(env, tmp_path):
    env.add_runs([1, 2], size=3000)
    env.add_run(3, "pending")
    env.add_run(4, "failed")
    code, out, err = run(["fetch", "4", "3", "1", "2", "-o", str(tmp_path)])
    assert code == 1
    assert re.match(r"sound_bulk: 2 saved, 1 pending, 1 failed \(4 runs, 5\.9 KiB saved in \d+\.\d s\)\n$", err), err
    lines = out.splitlines()  # human lines come as runs settle: the two downloads last, in either order
    assert [line.split()[:2] for line in lines[:2]] == [["4", "failed"], ["3", "pending"]]
    assert sorted(line.split()[:2] for line in lines[2:]) == [["1", "saved"], ["2", "saved"]]
    assert [line for line in lines if line.startswith("1 ")][0].endswith("1.wav (2.9 KiB)")
    code, out, err = run(["fetch", "1", "2", "-o", str(tmp_path)])
    assert code == 0 and err.startswith("sound_bulk: 2 skipped (2 runs, 0 B saved in ")


def test_quiet_prints_only_the_runs_that_failed(env, tmp_path):
    env.add_runs([1], size=3000)
    env.add_run(3, "pending")
    code, out, err = run(["fetch", "1", "3", "-o", str(tmp_path), "-q"])
    assert code == 1 and out == ""
    assert err.splitlines() == ["sound_bulk: 3            pending  not ready yet"]


def test_the_progress_line_is_cleared_before_results_and_summary(env, tmp_path):
    env.add_runs([1, 2], size=100_000)
    tty = TTY()
    code, out, _ = run(["fetch", "1", "2", "-o", str(tmp_path)], stderr=tty)
    err = tty.getvalue()
    assert code == 0 and "files" in err
    summary = err.index("sound_bulk: 2 saved")
    assert err[:summary].endswith("\r\x1b[K")  # the last progress line was wiped first
    assert "files" not in err[summary:]


def _ctrl_c_while_run_3_stalls(folder):
    """The test below, up to its checks (an early scenario: conftest, with its own fake; the Ctrl-C goes to
    the process it runs in)."""
    from fake_api import FakeCamb
    with FakeCamb() as fake, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CAMB_API_KEY", API_KEY)
        monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
        fake.add_runs([1, 2], size=3000)
        fake.add_run(3, size=200_000)
        fake.slow_delay = 10
        fake.storage_faults[3] = ["slow"]

        def interrupt():
            for _ in range(1000):  # at most 10 s
                if any("audio_3" in r["path"] for r in fake.seen("storage")) and all(
                        os.path.isfile(os.path.join(folder, name)) for name in ("1.wav", "2.wav")):
                    break
                time.sleep(0.01)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        old = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            t = threading.Thread(target=interrupt)
            t.start()
            started = time.monotonic()
            code, out, err = run(["fetch", "1", "2", "3", "-o", folder, "--workers", "1", "--json"])
            took = time.monotonic() - started
            t.join(15)
        finally:
            signal.signal(signal.SIGINT, old)
    return code, out, err, took, sorted(os.listdir(folder))


@pytest.mark.early(scenario=_ctrl_c_while_run_3_stalls)
def test_ctrl_c_reports_how_many_were_saved(early):
    """Timing assumed: the interrupt, sent once the fake is serving run 3 (which stalls 10 s) and runs 1
    and 2 are under their final names, arrives while fetch still waits for run 3.  (A run's file is
    fsynced and named on the committer thread, so with one worker run 3 may be asked for before run 2
    is on disk: waiting for the files, not only for the request, keeps a loaded machine from failing
    this test.)"""
    code, out, err, took, names = early()
    assert code == 130
    assert "interrupted: 2 saved; run the same command again" in err
    assert [(o["run_id"], o["status"]) for o in map(json.loads, out.splitlines())] == [
        (1, "saved"), (2, "saved"), (3, "error")]
    assert took < 9  # it did not wait for the stalled download
    assert names == ["1.wav", "2.wav"]


def test_long_prompts_are_shortened_in_the_human_lines_only(env, tmp_path):
    sixty, sixty_one = "a" * 59 + "b", "c" * 60 + "d"
    code, out, _ = run(["generate", sixty, sixty_one, "-o", str(tmp_path), "--workers", "1"])
    assert code == 0
    assert '"%s"' % sixty in out and '"%s..."' % ("c" * 57) in out and sixty_one not in out
    code, out, _ = run(["generate", sixty, sixty_one, "-o", str(tmp_path), "--json"])
    assert [json.loads(line)["prompt"] for line in out.splitlines()] == [sixty, sixty_one]


@pytest.mark.parametrize("command", ["fetch", "urls", "generate"])
def test_every_option_in_help_says_what_it_does(command):
    code, out, _ = run([command, "--help"])
    assert code == 0
    entries, inside = [], False
    for line in out.splitlines():
        if line in ("positional arguments:", "optional arguments:", "options:"):  # "options:" from 3.10
            inside = True
        elif not line.strip():
            inside = False
        elif inside and line.startswith("  ") and not line.startswith("    "):
            entries.append(line.strip())
        elif inside and line.startswith("    ") and entries and "  " not in entries[-1]:
            entries[-1] += "  " + line.strip()  # the description went to the next line
    assert entries
    for entry in entries:
        name, _, described = entry.partition("  ")
        assert described.strip(), "%s %s has no help text" % (command, name)
    for option in ("--timeout", "--base-url", "--workers", "--manifest"):  # each names what it takes
        if option in out:
            assert re.search(r"%s [A-Z]+" % option, out), option
