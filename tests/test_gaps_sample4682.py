"""Gaps a mutation run showed: `tools/mutate.py --seed 31 --sample 150` on main f6ea4da (4682 mutants in
all, so another sample than test_gaps_sample4646.py's): the suite passed with these wrong.

Each test names what it guards, and was checked against its mutant with `--only`."""

import io
import json
import os
import select

import pytest

import sound_bulk as sb
from conftest import run
from hostile_server import http


# -- an output folder that cannot be made ----------------------------------------------------------------

def test_download_into_a_folder_that_cannot_be_made_says_so(client, tmp_path):
    """#548: the error names the folder and the system's reason, and nothing is asked of the network."""
    (tmp_path / "file").write_bytes(b"x")
    target = str(tmp_path / "file" / "sounds")
    with pytest.raises(sb.DownloadError) as info:
        client.download(7, target)
    assert str(info.value) == "cannot create %s: Not a directory" % target
    assert info.value.run_id == 7


def test_fetch_into_a_folder_that_cannot_be_made_gives_the_reason_in_words(client, fake, tmp_path):
    """#3211: each run's error is the system's words ("Not a directory"), not the exception's repr."""
    (tmp_path / "file").write_bytes(b"x")
    target = str(tmp_path / "file" / "sounds")
    outcomes = client.fetch([1, 2], target)
    assert [(o.status, o.error) for o in outcomes] == [("error", "cannot create %s: Not a directory" % target)] * 2
    assert fake.seen("api") == [] and fake.seen("storage") == []


# -- what an answer says --------------------------------------------------------------------------------

def test_a_boolean_entry_is_named_as_one():
    """#1841."""
    assert sb.parse_results({"9": True}, [9])[9].error == "unexpected entry of type a boolean"


def test_an_api_error_lists_at_most_ten_of_its_details(hostile, make):
    """#1857: a FastAPI 422 with eleven problems shows the first ten."""
    detail = [{"loc": ["body", "run_ids", i], "msg": "problem %d" % i} for i in range(11)]
    hostile.handler = lambda method, path, body: http(422, {"detail": detail}, reason="Unprocessable Entity")
    out = make().get_results([1])
    assert "body.run_ids.9: problem 9" in out[1].error
    assert "problem 10" not in out[1].error


def test_a_refusal_whose_body_breaks_is_still_reported(hostile, make, tmp_path):
    """#2196: a storage 403 whose (chunked) body breaks off mid-read: the run ends in an error that says
    HTTP 403, as with a whole body; nothing crashes."""
    def handler(method, path, body):
        if method == "POST":
            return http(200, {"1": {"output_url": hostile.origin + "/bucket/a.wav?X-Amz-Signature=s"}})
        return (b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",)
    hostile.handler = handler
    outcome = make(max_attempts=2).fetch([1], str(tmp_path))[0]
    assert outcome.status == "error" and "HTTP 403" in outcome.error, outcome
    assert os.listdir(str(tmp_path)) == []


def test_help_starts_with_what_the_command_does(monkeypatch):
    """#3943: the description under the usage line."""
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(["--help"])
    assert code == 0
    assert "Turn the run IDs of finished text-to-sound tasks into verified audio files." in out


# -- connections and descriptors ---------------------------------------------------------------------------

def test_a_kept_connection_the_server_closed_is_closed_here_too(hostile, make):
    """#2293: the idle connection that the server hung up on is not used again, and its socket is closed
    here too (not left to the garbage collector: a ResourceWarning, and a descriptor held meanwhile)."""
    answer = http(200, {"1": {"output_url": "http://127.0.0.1:9/a.wav"}, "2": None})
    hostile.handler = lambda method, path, body: (answer,)  # then hang up, without saying so
    client = make()
    assert client.get_results([1])[1].status == "ready"
    idle = [conn for conns in client._pool._idle.values() for conn in conns]
    assert len(idle) == 1 and idle[0].sock is not None
    kept = idle[0].sock
    assert select.select([kept], [], [], 5)[0], "the server's hang-up did not arrive"  # else a retry is tested
    assert client.get_results([1])[1].status == "ready"
    assert kept.fileno() == -1
    assert len(hostile.requests("POST")) == 2


def test_the_write_behind_closes_the_descriptor_it_was_given(fake, client, tmp_path, monkeypatch):
    """#2918: the write-behind thread works on a duplicate of the file's descriptor (the file may be
    closed first) and closes it when done: none is left open once the download is saved."""
    monkeypatch.setattr(sb._Writer, "WRITEBACK_STEP", 256 * 1024)
    dups, closed = [], []
    real_dup, real_close = os.dup, os.close

    def dup(fd):
        dups.append(real_dup(fd))
        return dups[-1]

    def close(fd):
        closed.append(fd)
        return real_close(fd)

    monkeypatch.setattr(os, "dup", dup)
    monkeypatch.setattr(os, "close", close)
    fake.add_run(5, size=300 * 1024)
    client.download(5, str(tmp_path))
    assert len(dups) == 1 and dups[0] in closed


# -- generate's manifest and the command line's Ctrl-C ---------------------------------------------------

def test_the_manifest_says_where_each_sound_was_saved(env, tmp_path):
    """#3827: the "saved" record carries the file's path (a rerun and a reader of the manifest use it)."""
    env.default_task_plan = ("success", 0)
    code, out, err = run(["generate", "rain", "-o", str(tmp_path), "--json"])
    assert code == 0, err
    saved_path = json.loads(out.splitlines()[0])["path"]
    with open(str(tmp_path / sb.MANIFEST_NAME)) as f:
        records = [json.loads(line) for line in f]
    saved = [r for r in records if r.get("event") == "saved"]
    assert [r["path"] for r in saved] == [saved_path] and os.path.isfile(saved_path)


class _CtrlCOnRead(io.StringIO):
    def read(self, *a):
        raise KeyboardInterrupt


def test_ctrl_c_before_any_work_exits_130(env, tmp_path):
    """#4584: a Ctrl-C while the IDs are still being read from standard input: "interrupted", status 130."""
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(["fetch", "-", "-o", str(tmp_path)], stdin=_CtrlCOnRead(), stdout=out, stderr=err)
    assert code == sb.EXIT_INTERRUPTED == 130
    assert "interrupted" in err.getvalue() and "Traceback" not in err.getvalue()


def test_an_api_that_redirects_in_a_loop_answered_so_it_is_not_called_unreachable(hostile, make):
    """#2373: more than MAX_REDIRECTS redirects is an answer (a broken one): the API is not out of reach,
    so the batch's other calls are still made, and the error says what happened."""
    hostile.handler = lambda method, path, body: http(308, b"", reason="Permanent Redirect",
                                                      headers=[("Location", "/apis/text-to-sound-results")])
    client = make()
    out = client.get_results([1])
    assert out[1].status == "missing" and "more than %d redirects" % sb.MAX_REDIRECTS in out[1].error
    assert client.unreachable is None


@pytest.mark.parametrize("lines", [100, 101])
def test_an_interim_answer_may_have_up_to_100_header_lines(hostile, make, lines):
    """#2470: a 103 Early Hints with 100 header lines is skipped and the real answer read; with 101 the
    answer is refused as http.client refuses a final answer with too many (not read on as a status line)."""
    interim = b"HTTP/1.1 103 Early Hints\r\n" + b"Link: </a.css>; rel=preload\r\n" * lines + b"\r\n"
    final = http(200, {"1": {"output_url": "http://127.0.0.1:9/a.wav"}})
    hostile.handler = lambda method, path, body: interim + final
    out = make(max_attempts=1).get_results([1])
    if lines == 100:
        assert out[1].status == "ready", out[1]
    else:
        assert out[1].status == "missing" and "more than 100 header lines" in out[1].error, out[1]
