"""generate's journey: concurrent polls, runs resolved five at a time and downloaded as they finish,
a manifest that cannot be written, an API that cannot be reached, Ctrl-C while submitting, and the
command's output.  Waiting goes through the Client's sleep/clock seams (conftest's `sleeps`)."""

import errno
import io
import json
import logging
import os
import signal
import threading
import time

import pytest

import sound_bulk as sb
from fake_api import API_KEY


def manifest(folder):
    with open(os.path.join(str(folder), sb.MANIFEST_NAME)) as f:
        return [json.loads(line) for line in f]


def bulk_bodies(fake):
    return [json.loads(r["body"])["run_ids"] for r in fake.seen("api", "POST", "/apis/text-to-sound-results")]


# -- polling and resolving ------------------------------------------------------------------

def test_tasks_are_polled_concurrently_never_more_than_workers_at_once(fake, make_client, tmp_path):
    fake.default_task_plan = ("success", 0)
    client = make_client()
    real = client._get_task  # what each of generate's polls calls
    together = threading.Barrier(2, timeout=10)  # passes only if two polls are out at the same time
    lock = threading.Lock()
    out_now, most = [0], [0]

    def get_task(task_id, halted):
        with lock:
            out_now[0] += 1
            most[0] = max(most[0], out_now[0])
        try:
            together.wait()
            return real(task_id, halted)
        finally:
            with lock:
                out_now[0] -= 1

    client._get_task = get_task
    got = sb.generate(client, ["a", "b", "c", "d"], str(tmp_path), workers=2)
    assert [o.status for o in got] == ["saved"] * 4
    assert most[0] == 2


def test_finished_runs_are_resolved_five_at_a_time(fake, make_client, tmp_path):
    fake.default_task_plan = ("success", 0)
    got = sb.generate(make_client(), ["p%d" % i for i in range(7)], str(tmp_path), workers=2)
    assert [o.status for o in got] == ["saved"] * 7
    assert sorted(len(ids) for ids in bulk_bodies(fake)) == [2, 5]
    assert sorted(rid for ids in bulk_bodies(fake) for rid in ids) == sorted(o.run_id for o in got)


def test_a_finished_run_is_downloaded_while_others_still_generate(fake, make_client, sleeps, tmp_path):
    fake.task_plan += [("success", 0), ("success", 3)]
    settled = []
    got = sb.generate(make_client(), ["quick", "slow"], str(tmp_path), workers=1,
                      on_outcome=lambda o: settled.append((o.prompt, o.status)))
    assert settled == [("quick", "saved"), ("slow", "saved")]
    paths = [r["path"].split("?")[0] for r in fake.requests]
    quick_file = paths.index("/bucket/audio_%d.wav" % got[0].run_id)
    slow_polls = [n for n, p in enumerate(paths) if p == "/apis/text-to-sound/" + got[1].task_id]
    assert len(slow_polls) == 4 and quick_file < slow_polls[1]  # saved before the slow task was asked again
    assert [w for w in sleeps.waits if w] == [1.0, 1.5, 2.25]  # the Client's sleep: no real waiting


def test_a_poll_that_fails_once_is_asked_again_and_no_prompt_gets_another_ones_run(fake, make_client, tmp_path):
    fake.default_task_plan = ("success", 0)
    fake.poll_faults = [404]  # the first poll's answer
    got = sb.generate(make_client(), ["first", "second"], str(tmp_path), workers=1)
    assert [o.status for o in got] == ["saved", "saved"]
    polls = [r["path"] for r in fake.seen("api", "GET")]
    assert polls[0] == "/apis/text-to-sound/" + got[0].task_id and polls.count(polls[0]) == 2
    for o in got:  # each prompt has its own task's run and file
        assert o.run_id == fake.tasks[o.task_id]["run_id"]
        assert fake.tasks[o.task_id]["prompt"] == o.prompt
        assert os.path.basename(o.path) == "%d.wav" % o.run_id
    assert got[0].run_id != got[1].run_id


def test_a_task_never_checked_says_why_when_time_is_up(fake, make_client, tmp_path):
    fake.poll_faults = [404] * 20  # more than the polls of 3 s
    (got,) = sb.generate(make_client(), ["hum"], str(tmp_path), wait=3)
    assert got.status == "pending" and got.task_id
    assert got.error.startswith("could not check the task: HTTP 404") and "run the same command again" in got.error


def test_a_200_without_task_id_may_have_paid_so_it_is_not_resubmitted(fake, make_client, tmp_path):
    fake.create_faults.append(("answer", {"id": "task-x"}))
    (got,) = sb.generate(make_client(), ["drip"], str(tmp_path))
    assert got.status == "error" and got.task_id is None
    assert "did not return a task_id" in got.error
    assert [m["event"] for m in manifest(tmp_path)] == ["submitting", "submit_unknown"]
    (again,) = sb.generate(make_client(), ["drip"], str(tmp_path))
    assert again.status == "error" and "--resubmit" in again.error and len(fake.tasks) == 1


def test_success_without_run_id_is_a_failed_prompt(fake, make_client, tmp_path):
    fake.task_plan.append(("answer", 0, {"status": "SUCCESS", "run_id": None}))
    (got,) = sb.generate(make_client(), ["clap"], str(tmp_path))
    assert got.status == "failed" and got.run_id is None
    assert got.error == "the task succeeded but the API gave no run_id"
    assert bulk_bodies(fake) == []


def test_project_fields_reach_the_request_body(fake, make_client, tmp_path):
    fake.default_task_plan = ("success", 0)
    sb.generate(make_client(), ["bell"], str(tmp_path), duration=2, project_name="film",
                project_description="reel 3", folder_id=42)
    (body,) = [json.loads(r["body"]) for r in fake.seen("api", "POST") if r["path"] == "/apis/text-to-sound"]
    assert body == {"prompt": "bell", "audio_type": "sound", "duration": 2.0, "project_name": "film",
                    "project_description": "reel 3", "folder_id": 42}


# -- the manifest cannot be written ------------------------------------------------------------

def test_short_writes_of_the_manifest_are_completed(fake, make_client, tmp_path, monkeypatch):
    fake.default_task_plan = ("success", 0)
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:7])))  # 7 bytes at most per call
    got = sb.generate(make_client(), ["creak", "hiss"], str(tmp_path))
    assert [o.status for o in got] == ["saved", "saved"]
    records = manifest(tmp_path)  # every line whole and parseable
    assert sorted(r["task_id"] for r in records if r["event"] == "created") == sorted(fake.tasks)


def _fail_writes_of(monkeypatch, event):
    real = os.write

    def write(fd, data):
        if b'"event": "%s"' % event.encode() in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_created_task_the_manifest_cannot_hold_is_still_reported(fake, make_client, tmp_path, monkeypatch,
                                                                    caplog):
    fake.default_task_plan = ("success", 0)
    _fail_writes_of(monkeypatch, "created")
    with caplog.at_level(logging.ERROR, logger="sound_bulk"):
        (got,) = sb.generate(make_client(), ["gong"], str(tmp_path))
    (task_id,) = fake.tasks
    assert got.task_id == task_id
    assert got.status == "saved" and os.path.isfile(got.path)  # the task was still followed to its file
    assert task_id in got.error and "ENOSPC" in got.error and "keep this ID" in got.error
    assert [r.getMessage() for r in caplog.records if task_id in r.getMessage()]  # on stderr by default


def test_a_manifest_that_cannot_take_the_submission_means_nothing_is_sent(fake, make_client, tmp_path,
                                                                          monkeypatch):
    _fail_writes_of(monkeypatch, "submitting")
    got = sb.generate(make_client(), ["one", "two"], str(tmp_path))
    assert [o.status for o in got] == ["error", "error"]
    assert all("not submitted: cannot write" in o.error and "ENOSPC" in o.error for o in got)
    assert fake.tasks == {} and fake.requests == []


# -- an API that cannot be reached ---------------------------------------------------------

def refused_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return "http://127.0.0.1:%d/apis" % port


def run_cli(argv, monkeypatch, stderr=None):
    out, err = io.StringIO(), stderr or io.StringIO()
    code = sb.main(argv, stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_an_unreachable_api_is_one_clear_error_and_every_prompt_once(tmp_path, monkeypatch, sleeps):
    url = refused_url()
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    seamed_client(monkeypatch, sleeps)
    code, out, err = run_cli(["generate", "a", "b", "c", "d", "-o", str(tmp_path), "--base-url", url], monkeypatch)
    assert code == 1
    assert sum(sleeps.waits) < 10  # one submission's retries, not four
    lines = out.splitlines()
    assert [line.rsplit("  ", 1)[1] for line in lines] == ['"a"', '"b"', '"c"', '"d"']
    assert all(line.split()[:2] == ["-", "error"] for line in lines)
    assert all("not submitted: the API could not be reached" in line for line in lines)
    assert "refused" not in out.lower()  # the cause is said once, below
    problems = [line for line in err.splitlines() if "refused" in line.lower()]
    assert len(problems) == 1 and url in problems[0] and "cannot reach the API" in problems[0]
    assert "4 errors (4 prompts" in err
    events = [(m["key"], m["event"]) for m in manifest(tmp_path)]
    assert [e for _k, e in events] == ["submitting", "submit_failed"]  # a refused connection paid nothing


# -- the command line ----------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self):
        return True


def seamed_client(monkeypatch, sleeps):
    """The CLI builds its client as usual, but with the sleep and clock seams of the test."""
    monkeypatch.setattr(sb, "_client_from", lambda args: sb.Client(
        base_url=args.base_url, timeout=args.timeout, sleep=sleeps, clock=sleeps.clock))


@pytest.fixture
def cli_env(fake, monkeypatch, sleeps):
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    seamed_client(monkeypatch, sleeps)
    return fake


def test_lines_use_fetchs_layout_with_the_prompt_after(cli_env, tmp_path, monkeypatch):
    cli_env.task_plan += [("error", 0, "prompt violates policy"), ("success", 0)]
    code, out, err = run_cli(["generate", "bad", "rain on a tin roof", "-o", str(tmp_path), "--workers", "1"],
                             monkeypatch)
    assert code == 1
    rid = cli_env.tasks["task-0002"]["run_id"]
    assert out.splitlines() == [
        "-            failed   prompt violates policy  \"bad\"",
        "%-12d saved    %s (2.0 KiB)  \"rain on a tin roof\"" % (rid, os.path.join(str(tmp_path), "%d.wav" % rid))]
    assert "1 saved, 1 failed (2 prompts, 2.0 KiB saved in" in err
    code, out, err = run_cli(["generate", "rain on a tin roof", "-o", str(tmp_path)], monkeypatch)
    assert code == 0 and "1 skipped (1 prompt, 0 B saved in" in err


def test_a_terminal_sees_what_generate_waits_for(cli_env, tmp_path, monkeypatch):
    cli_env.task_plan += [("success", 0), ("success", 2), ("error", 2, "no")]
    code, out, err = run_cli(["generate", "a", "b", "c", "-o", str(tmp_path), "--workers", "1"], monkeypatch,
                             stderr=Terminal())
    assert code == 1
    assert "\r\x1b[K3 tasks: 1 done, 2 generating, next check in 1 s" in err
    assert "next check in 2 s" in err  # the second pause, 1.5 s, rounded up
    assert err.rstrip("\n").rsplit("\r\x1b[K", 1)[1].startswith("sound_bulk: 2 saved, 1 failed (3 prompts")
    code, out, err = run_cli(["generate", "d", "-o", str(tmp_path / "x")], monkeypatch)  # not a terminal
    assert "next check" not in err and "\x1b" not in err


def test_json_stays_in_prompt_order(cli_env, tmp_path, monkeypatch):
    cli_env.task_plan += [("success", 2), ("success", 0)]
    code, out, _ = run_cli(["generate", "late", "early", "-o", str(tmp_path), "--json", "--workers", "1"],
                           monkeypatch)
    got = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [g["prompt"] for g in got] == ["late", "early"]
    assert set(got[0]) == {"prompt", "task_id", "run_id", "status", "path", "bytes", "error"}
    assert got[0]["bytes"] == 2048


def test_ctrl_c_while_submitting_ends_cleanly_with_every_task_in_the_manifest(cli_env, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT to the main thread, in this process) while submissions are under way.  The fake
    holds every API call from the third on until the signal has been sent and 50 ms more, then answers
    each after 50 ms: so the interrupt comes while submissions are under way, and all 20 would be
    submitted only if the main thread did not see the signal for 8 rounds of 2 such calls (0.4 s)."""
    arrived, sent = threading.Event(), threading.Event()
    count, lock = [0], threading.Lock()

    def gate():
        with lock:
            count[0] += 1
            n = count[0]
        if n >= 3:
            arrived.set()
            sent.wait(10)
            time.sleep(0.05)

    cli_env.api_gate = gate

    def interrupt():
        arrived.wait(10)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.05)
        sent.set()

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    t = threading.Thread(target=interrupt, daemon=True)
    try:
        t.start()
        code, out, err = run_cli(["generate"] + ["p%d" % i for i in range(20)] + [
            "-o", str(tmp_path), "--json", "--workers", "2"], monkeypatch)
    finally:
        sent.set()
        t.join(15)
        signal.signal(signal.SIGINT, old)
    assert code == 130, err
    assert "Traceback" not in err and "every created task is in the manifest" in err
    created = {m["task_id"] for m in manifest(tmp_path) if m["event"] == "created"}
    assert created == set(cli_env.tasks) and 0 < len(created) < 20
    got = [json.loads(line) for line in out.splitlines()]
    assert [g["prompt"] for g in got] == ["p%d" % i for i in range(20)]  # every prompt reported once
    assert {g["task_id"] for g in got if g["task_id"]} == created


def test_a_prompt_whose_task_ends_in_a_run_already_done_gets_that_runs_end(fake, make_client, tmp_path):
    """Two prompts, one run (the manifest of "a" names the run the fake then gives "b"'s task):
    "b" is not left without a line, and the run is fetched once."""
    fake.task_plan.append(("success", 1))  # "b" finishes after "a"'s run is saved
    fake.add_run(900001, size=2048)
    key = sb.prompt_keys(["a"], None, "sound")[0]
    sb.Manifest(str(tmp_path / sb.MANIFEST_NAME)).append({"event": "task", "key": key, "task_id": "old",
                                                          "task_status": "SUCCESS", "run_id": 900001})
    got = sb.generate(make_client(), ["a", "b"], str(tmp_path), workers=1)
    assert [(o.run_id, o.status) for o in got] == [(900001, "saved"), (900001, "saved")]
    assert got[0].path == got[1].path
    assert len(fake.seen("storage", "GET")) == 1


def test_an_unreachable_api_while_resuming_leaves_every_task_pending_once(make_client, sleeps, tmp_path):
    m = sb.Manifest(str(tmp_path / sb.MANIFEST_NAME))
    for key, n in zip(sb.prompt_keys(["x", "y", "z"], None, "sound"), range(3)):
        m.append({"event": "created", "key": key, "task_id": "task-%d" % n})
    client = make_client(base_url=refused_url())
    got = sb.generate(client, ["x", "y", "z"], str(tmp_path), workers=1)
    assert [(o.task_id, o.status) for o in got] == [("task-0", "pending"), ("task-1", "pending"),
                                                    ("task-2", "pending")]
    assert all(o.error.startswith("not checked: the API could not be reached") for o in got)
    assert isinstance(client.unreachable, sb.APIUnreachableError) and "refused" in str(client.unreachable).lower()
    assert sum(sleeps.waits) < 10  # one poll's retries, not three
    assert [r["event"] for r in m.records()] == ["created"] * 3  # nothing else happened
