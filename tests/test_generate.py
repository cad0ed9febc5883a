"""generate: prompts -> tasks -> run IDs -> files, with a manifest that never pays twice."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sound_bulk as sb
from conftest import CHILD_MODULE_DIR
from fake_api import API_KEY

CAPTURE = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)  # capture_output, text: 3.7+

# also the cwd of subprocesses: `python -m` looks there first
MODULE_DIR = CHILD_MODULE_DIR  # a compiled copy of the module (conftest)


def run(argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue()


@pytest.fixture
def env(fake, monkeypatch):
    """The CLI against the fake, whose tasks succeed at the first poll: the CLI's real sleep between polls
    would cost a second per test.  Waiting for a pending task is tested through the sleep seam
    (test_gaps_generate.py) and in a subprocess (test_a_killed_run_resumes_its_tasks_without_paying_again)."""
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    fake.default_task_plan = ("success", 0)
    return fake


def manifest(folder):
    with open(os.path.join(str(folder), sb.MANIFEST_NAME)) as f:
        return [json.loads(line) for line in f]


def test_prompts_become_files(env, tmp_path):
    code, got, err = run(["generate", "rain on a tin roof", "a door creaks", "-o", str(tmp_path), "--json",
                          "--duration", "4"])
    assert code == 0, err
    assert [g["prompt"] for g in got] == ["rain on a tin roof", "a door creaks"]
    assert all(g["status"] == "saved" and g["task_id"] and g["run_id"] for g in got)
    assert all(os.path.isfile(g["path"]) for g in got)
    created = [json.loads(r["body"]) for r in env.seen("api", "POST", "/apis/text-to-sound")
               if r["path"] == "/apis/text-to-sound"]
    assert sorted(created, key=lambda c: c["prompt"]) == [  # submitted concurrently: any order
        {"prompt": "a door creaks", "audio_type": "sound", "duration": 4.0},
        {"prompt": "rain on a tin roof", "audio_type": "sound", "duration": 4.0}]
    events = [m["event"] for m in manifest(tmp_path)]
    assert events.count("created") == 2 and events.count("saved") == 2
    # a rerun pays nothing and downloads nothing
    before = len(env.requests)
    code, got, _ = run(["generate", "rain on a tin roof", "a door creaks", "-o", str(tmp_path), "--json",
                        "--duration", "4"])
    assert code == 0 and [g["status"] for g in got] == ["skipped", "skipped"]
    assert not [r for r in env.requests[before:] if r["path"] == "/apis/text-to-sound"]


def test_task_errors_and_pending_tasks_are_reported(env, tmp_path):
    env.task_plan += [("error", 0, "prompt violates policy"), ("success", 10 ** 6), ("success", 0)]
    code, got, _ = run(["generate", "bad", "slow", "good", "-o", str(tmp_path), "--json", "--wait", "0",
                        "--workers", "1"])  # one at a time, so the plans meet the prompts in order
    assert code == 1
    assert [g["status"] for g in got] == ["failed", "pending", "saved"]
    assert got[0]["error"] == "prompt violates policy"


def test_prompts_from_a_file_and_stdin(env, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n\n two \n")
    code, got, _ = run(["generate", "--from-file", str(prompts), "-", "-o", str(tmp_path / "o"), "--json"],
                       stdin="three\n")
    assert code == 0 and [g["prompt"] for g in got] == ["one", "two", "three"]


@pytest.mark.parametrize("argv,message", [
    (["generate", "  "], "non-empty"),
    (["generate", "x" * (sb.MAX_PROMPT_CHARS + 1)], "at most %d characters" % sb.MAX_PROMPT_CHARS),
    (["generate", "ok", "--duration", "11"], "at most 10 s for sound"),
    (["generate"], "no prompts"),
    (["generate", "ok", "--from-file", "/nonexistent/prompts.txt"], "cannot read prompts"),
])
def test_bad_prompts_exit_2_before_anything_is_sent(env, tmp_path, argv, message):
    code, _, err = run(argv + ["-o", str(tmp_path)])
    assert code == 2 and message in err
    assert env.requests == []


def test_music_may_be_longer(env, tmp_path):
    code, got, _ = run(["generate", "a waltz", "--type", "music", "--duration", "30", "-o", str(tmp_path), "--json"])
    assert code == 0
    assert json.loads(env.seen("api", "POST")[0]["body"]) == {"prompt": "a waltz", "audio_type": "music",
                                                               "duration": 30.0}


def _kill_a_generate_then_rerun(folder):
    """The test below, up to its checks (an early scenario: conftest, with its own fake)."""
    from fake_api import FakeCamb
    with FakeCamb() as fake:
        fake.task_plan += [("success", 10 ** 6), ("success", 10 ** 6)]
        env = dict(os.environ, CAMB_API_KEY=API_KEY, CAMB_API_BASE_URL=fake.base_url, PYTHONPATH=MODULE_DIR)
        # -S: the child needs only the standard library and the module; site's .pth files cost ~80 ms here
        cmd = [sys.executable, "-S", "-m", "sound_bulk", "generate", "wind", "waves", "-o", folder, "--json"]
        proc = subprocess.Popen(cmd, env=env, cwd=MODULE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for _ in range(4000):  # until both tasks are recorded and being polled (at most ~20 s)
                if len(fake.tasks) == 2 and all(t["polls"] for t in fake.tasks.values()):
                    break
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)  # a crash: no cleanup at all
            proc.wait(timeout=10)
        finally:
            proc.kill()
        tasks_at_the_kill = len(fake.tasks)
        created = [m["event"] for m in manifest(folder)].count("created")
        for task in fake.tasks.values():
            task["plan"] = ("success", 0)
        with pytest.MonkeyPatch.context() as mp:  # the rerun in this process: one interpreter start less
            mp.setenv("CAMB_API_KEY", API_KEY)
            mp.setenv("CAMB_API_BASE_URL", fake.base_url)
            rerun = run(cmd[4:])
        return tasks_at_the_kill, created, rerun, sorted(fake.tasks)


@pytest.mark.early(scenario=_kill_a_generate_then_rerun)
def test_a_killed_run_resumes_its_tasks_without_paying_again(early):
    tasks_at_the_kill, created, (code, got, err), tasks = early()
    assert tasks_at_the_kill == 2
    assert created == 2
    assert code == 0, err
    assert [g["status"] for g in got] == ["saved", "saved"]
    assert len(tasks) == 2  # no new task: nothing paid twice
    assert sorted(g["task_id"] for g in got) == tasks


def test_a_submission_without_answer_is_not_repeated_unless_asked(env, tmp_path):
    key = sb.prompt_keys(["thunder"], None, "sound")[0]
    sb.Manifest(str(tmp_path / sb.MANIFEST_NAME)).append({"event": "submitting", "key": key, "prompt": "thunder"})
    code, got, _ = run(["generate", "thunder", "-o", str(tmp_path), "--json"])
    assert code == 1 and got[0]["status"] == "error" and "--resubmit" in got[0]["error"]
    assert env.requests == []
    code, got, _ = run(["generate", "thunder", "-o", str(tmp_path), "--json", "--resubmit"])
    assert code == 0 and got[0]["status"] == "saved"
    assert len(env.tasks) == 1


def test_the_same_prompt_twice_is_two_sounds(env, tmp_path):
    code, got, _ = run(["generate", "boom", "boom", "-o", str(tmp_path), "--json"])
    assert code == 0 and len({g["run_id"] for g in got}) == 2 and len(env.tasks) == 2


def test_torn_manifest_line_is_ignored_and_sealed(tmp_path):
    path = str(tmp_path / "m.jsonl")
    m = sb.Manifest(path)
    m.append({"key": "a", "event": "created", "task_id": "t1"})
    with open(path, "ab") as f:
        f.write(b'{"key": "b", "event": "crea')
    m.append({"key": "c", "event": "created", "task_id": "t3"})
    assert set(m.state()) == {"a", "c"}


def test_fetch_takes_a_manifest(env, tmp_path):
    code, got, _ = run(["generate", "hiss", "-o", str(tmp_path / "g"), "--json"])
    assert code == 0
    rid = got[0]["run_id"]
    code, out, _ = run(["fetch", "--manifest", str(tmp_path / "g"), "-o", str(tmp_path / "copy"), "--json"])
    assert code == 0 and [(o["run_id"], o["status"]) for o in out] == [(rid, "saved")]
    code, _, err = run(["fetch", "--manifest", str(tmp_path / "nowhere"), "-o", str(tmp_path)])
    assert code == 2 and "no manifest" in err


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_every_manifest_line_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink("/proc/self/fd/%d" % fd))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    m = sb.Manifest(str(tmp_path / "m.jsonl"))
    m.append({"key": "a", "event": "created", "task_id": "t1"})
    m.append({"key": "b", "event": "created", "task_id": "t2"})
    assert synced == [str(tmp_path / "m.jsonl")] * 2


def test_a_5xx_on_creation_may_have_paid_so_no_automatic_resubmission(env, tmp_path):
    env.create_faults.append(("after", 502))
    code, got, _ = run(["generate", "surf", "-o", str(tmp_path), "--json"])
    assert code == 1 and "submission failed: HTTP 502" in got[0]["error"]
    assert len(env.tasks) == 1  # it was created, though the answer was an error page
    code, got, _ = run(["generate", "surf", "-o", str(tmp_path), "--json"])
    assert code == 1 and "--resubmit" in got[0]["error"] and len(env.tasks) == 1


def test_a_4xx_on_creation_paid_nothing_so_a_rerun_submits_again(env, tmp_path):
    env.create_faults.append(("before", 429))
    code, got, _ = run(["generate", "surf", "-o", str(tmp_path), "--json"])
    assert code == 1 and "HTTP 429" in got[0]["error"] and env.tasks == {}
    code, got, _ = run(["generate", "surf", "-o", str(tmp_path), "--json"])
    assert code == 0 and got[0]["status"] == "saved" and len(env.tasks) == 1
