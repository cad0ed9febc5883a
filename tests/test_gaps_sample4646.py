"""Gaps a mutation run showed: `tools/mutate.py --seed 31 --sample 150` on main 86ca9be (4646 mutants in
all, so a different sample from test_gaps_run31.py's): the suite passed with these wrong.

Each test names what it guards; they kill mutants #678, #813, #848, #1786, #2604, #3120, #4190, #4199 and #4645 of
that run (checked one by one with SOUND_BULK_UNDER_TEST)."""

import io
import json
import subprocess
import sys
import types

import pytest

import sound_bulk as sb
from conftest import CHILD_MODULE_DIR, run
from hostile_server import KEY, http, wav



@pytest.mark.parametrize("tries", [1, 2])
def test_an_api_that_hangs_up_on_every_try_is_unreachable_once_more_than_one_try_was_made(hostile, make, tries):
    """A bulk call that was sent and met a hang-up on each of its tries: with two tries or more the API is
    called unreachable (and every later call of the batch fails at once); one try proves nothing, it is
    that chunk's error."""
    hostile.handler = lambda method, path, body: None  # hang up without a word
    client = make(max_attempts=tries)
    out = client.get_results([1])
    assert out[1].status == "missing"
    assert len(hostile.requests("POST")) == tries
    if tries == 2:
        assert "cannot be reached" in out[1].error and client.unreachable.tries == 2
    else:
        assert "cannot be reached" not in out[1].error and client.unreachable is None


def test_the_same_prompt_twice_is_two_sounds_and_a_third_asks_for_one_more(env, tmp_path):
    """Each occurrence of a prompt is its own task and its own file (prompt_keys counts them), also on a
    rerun: asking for "rain" three times after two were made pays for exactly one more."""
    env.default_task_plan = ("success", 0)  # done at the first poll: no real pause between polls

    def creations():
        return len([r for r in env.seen("api", "POST") if r["path"] == "/apis/text-to-sound"])
    code, out, err = run(["generate", "rain", "rain", "-o", str(tmp_path), "--json"])
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    assert [g["status"] for g in got] == ["saved", "saved"] and creations() == 2
    assert got[0]["path"] != got[1]["path"] and got[0]["task_id"] != got[1]["task_id"]
    code, out, err = run(["generate", "rain", "rain", "rain", "-o", str(tmp_path), "--json"])
    assert code == 0, err
    again = [json.loads(line) for line in out.splitlines()]
    assert [g["status"] for g in again] == ["skipped", "skipped", "saved"] and creations() == 3
    first = [g["path"] for g in got]
    assert [g["path"] for g in again[:2]] == first and again[2]["path"] not in first


def test_a_broken_manifest_line_of_another_event_without_a_task_is_ignored_not_taken_for_a_payment(env, tmp_path):
    """A broken line (its error is not text) that names a prompt's key but no task, with an event that is
    not a submission ("saved"), says nothing about money spent: it is ignored and the prompt is submitted
    as usual, not held back as maybe paid."""
    env.default_task_plan = ("success", 0)  # done at the first poll: no real pause between polls
    key = sb.prompt_keys(["rain"], None, "sound")[0]
    with open(str(tmp_path / sb.MANIFEST_NAME), "w") as f:
        f.write(json.dumps({"event": "saved", "key": key, "error": 5}) + "\n")
    code, out, err = run(["generate", "rain", "-o", str(tmp_path), "--json"])
    assert code == 0, err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["saved"]
    assert len([r for r in env.seen("api", "POST") if r["path"] == "/apis/text-to-sound"]) == 1


@pytest.mark.parametrize("piece, hidden", [(6, True), (5, False)])
def test_a_piece_of_the_key_at_the_end_of_a_message_is_hidden_from_six_characters(hostile, make, piece, hidden):
    """A server text cut so that it ends with the key's first characters: six or more are redacted
    (_MIN_KEY_FRAGMENT), five are too short to say anything and stay."""
    key = KEY  # make()'s
    hostile.handler = lambda method, path, body: http(400, {"detail": "bad request near " + key[:piece]})
    error = make(max_attempts=1).get_results([1])[1].error
    assert error.endswith("near <redacted>" if hidden else "near " + key[:piece]), error


@pytest.mark.parametrize("piece, hidden", [(6, True), (5, False)])
def test_a_piece_of_the_key_at_the_start_of_an_answer_is_hidden_from_six_characters(hostile, make, piece, hidden):
    """The other end: an answer that starts with the key's last characters (a cut made before them)."""
    key = KEY
    hostile.handler = lambda method, path, body: http(200, key[-piece:] + " was the start of it")
    error = make(max_attempts=1).get_results([1])[1].error
    assert "was the start of it" in error and (key[-piece:] in error) is not hidden, error


def test_a_download_that_cannot_succeed_is_tried_once(hostile, make, tmp_path):
    """A storage that redirects in a loop: more than MAX_REDIRECTS redirects is not worth another try, so
    the run fails after one (MAX_REDIRECTS + 1 requests), and says why without "after N tries"."""
    def handler(method, path, body):
        if path == "/apis/text-to-sound-results":
            return http(200, {"1": {"status": "SUCCESS", "output_url": hostile.origin + "/file/1.wav"}})
        if path.startswith("/file/"):
            return http(302, b"", reason="Found", headers=[("Location", hostile.origin + "/file/1.wav")])
        return http(404, {"detail": "Not Found"})
    hostile.handler = handler
    client = make(max_attempts=3)
    outcome = client.fetch([1], out_dir=str(tmp_path))[0]
    assert outcome.status == "error" and "redirects" in outcome.error and "tries" not in outcome.error
    assert len(hostile.requests("GET", "/file/")) == sb.MAX_REDIRECTS + 1


def test_a_name_taken_while_the_file_downloads_is_skipped_and_kept(hostile, make, tmp_path):
    """Another process saves 1.wav while this run downloads it: the run is reported skipped, with that
    file's path and size, and the file is left as that process wrote it."""
    out = tmp_path / "out"
    theirs = b"theirs"

    def handler(method, path, body):
        if path == "/apis/text-to-sound-results":
            return http(200, {"1": {"status": "SUCCESS", "output_url": hostile.origin + "/file/1.wav"}})
        if path.startswith("/file/"):
            (out / "1.wav").write_bytes(theirs)  # appears before the download ends
            return http(200, wav(4096))
        return http(404, {"detail": "Not Found"})
    hostile.handler = handler
    outcome = make().fetch([1], out_dir=str(out))[0]
    assert (outcome.status, outcome.path, outcome.bytes) == ("skipped", str(out / "1.wav"), len(theirs))
    assert (out / "1.wav").read_bytes() == theirs


def test_python_m_sound_bulk_keeps_its_exit_status_when_another_thread_is_alive():
    """`python -m sound_bulk` takes the quick exit only when no other thread runs; otherwise it leaves
    the normal way, and the status must survive that way too (2 for a usage error, not 0)."""
    code = ("import runpy, threading, time\n"
            "threading.Thread(target=time.sleep, args=(0.2,)).start()\n"
            "runpy.run_module('sound_bulk', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-S", "-c", code, "fetch"], cwd=CHILD_MODULE_DIR,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "no run IDs given" in proc.stderr


def test_the_progress_line_is_redrawn_at_most_ten_times_a_second(monkeypatch):
    """Bytes arriving keep the terminal's progress line current, but it is drawn again only once 0.1 s
    has passed since the last drawing (on the command's clock, here a fake one), not on every chunk."""
    now = [1000.0]
    monkeypatch.setattr(sb, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    screen = io.StringIO()
    progress = sb._Progress(screen, 2)
    for at in (0.05, 0.10, 0.15, 0.19, 0.21, 0.25, 0.40):
        now[0] = 1000.0 + at
        progress.add_bytes(1024)
    drawn = [text.split("  ")[1] for text in screen.getvalue().split("\r\x1b[K")[1:]]
    assert drawn == ["2.0 KiB", "5.0 KiB", "7.0 KiB"]  # at 0.10, 0.21 and 0.40 s
