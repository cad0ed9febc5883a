"""A second adversarial review of issue 8's promises (the "review" helper): each test here broke a
README promise on main before its fix.  Servers are ``hostile_server.Hostile`` on 127.0.0.1."""

import io
import json
import os

import pytest

import sound_bulk as sb
import hostile_server
from hostile_server import KEY, http, wav
from test_hostile import cli


def redirecting_creation(hostile, status):
    """Task creation answered by a redirect to itself, after the server counted (and maybe made) a task."""
    created = []

    def handler(method, path, body):
        if method == "POST" and path == "/apis/text-to-sound":
            created.append(body)
            return http(status, {"task_id": "t%d" % len(created)}, reason="Redirect",
                        headers=[("Location", "/apis/text-to-sound")])
        return http(404, {"detail": "Not Found"})

    hostile.handler = handler
    return created


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_never_sends_a_task_creation_again(hostile, make, status):
    """fails before: a 307/308 answer to task creation was followed, the POST sent again each hop
    (6 creations for one create_task, then 'more than 5 redirects').  The server did answer: it is not
    called unreachable (which would stop a generate from asking for the other prompts)."""
    created = redirecting_creation(hostile, status)
    with pytest.raises(sb.TransportError) as info:
        make().create_task("rain")
    assert len(created) == 1
    assert info.value.sent is True and "/apis/text-to-sound" in str(info.value)
    assert not isinstance(info.value, sb.APIUnreachableError)


def test_generate_pays_once_when_creation_is_redirected(hostile, monkeypatch, tmp_path):
    """fails before: 6 paid creations for one prompt; a rerun without --resubmit creates none."""
    created = redirecting_creation(hostile, 307)
    argv = ["generate", "rain", "--wait", "0", "--json", "-o", str(tmp_path)]
    code, out, err = cli(argv, hostile, monkeypatch)
    assert code == 1 and len(created) == 1, err
    code, out, err = cli(argv, hostile, monkeypatch)
    assert len(created) == 1 and "--resubmit" in json.loads(out)["error"]


def ascii_stream():
    """A text stream that cannot carry non-ASCII, like stdout under LANG=C on Python 3.6, a Windows console
    or PYTHONIOENCODING=ascii (errors='strict', as Python sets up stdout)."""
    return io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict", write_through=True)


def written(stream):
    return stream.buffer.getvalue().decode("ascii")


def test_server_text_a_terminal_cannot_encode_is_escaped_not_a_traceback(hostile, monkeypatch, tmp_path):
    """fails before: UnicodeEncodeError from _Console.result, a traceback in the middle of the fetch."""
    hostile.handler = lambda method, path, body: http(200, {
        "101": {"status": "ERROR", "message": "g\u00e9n\u00e9ration \u00e9chou\u00e9e \u2603"},
        "102": {"status": "PENDING"}})
    monkeypatch.setenv("CAMB_API_KEY", KEY)
    out, err = ascii_stream(), ascii_stream()
    code = sb.main(["fetch", "101", "102", "-o", str(tmp_path), "--base-url", hostile.base_url],
                   stdin=io.StringIO(""), stdout=out, stderr=err)
    assert code == 1
    lines = written(out).splitlines()
    assert len(lines) == 2 and "g\\xe9n\\xe9ration \\xe9chou\\xe9e \\u2603" in lines[0] and "102" in lines[1]
    assert "1 failed" in written(err)


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"


def test_interim_answers_like_103_early_hints_are_read_past(hostile, make, tmp_path):
    """A CDN may send ``103 Early Hints`` (or 102) before the answer; http.client reads past 100 only.
    fails before: every call was the error 'HTTP 103 with a body that is not JSON', and the real answer
    stayed unread on the kept-alive connection, where the next call took it for its own."""
    def handler(method, path, body):
        if method == "POST" and path == "/apis/text-to-sound-results":
            ids = json.loads(body.decode())["run_ids"]
            return EARLY_HINTS + http(200, {str(i): {"output_url": hostile.origin + "/file/%d" % i} for i in ids})
        if method == "POST" and path == "/apis/text-to-sound":
            return b"HTTP/1.1 102 Processing\r\n\r\n" + EARLY_HINTS + http(200, {"task_id": "t1"})
        if method == "GET" and path.startswith("/file/"):
            return EARLY_HINTS + http(200, wav(), headers=[("Content-Type", "audio/wav")])
        return http(404, {"detail": "Not Found"})

    hostile.handler = handler
    client = make()
    for rid in (1, 2, 3):
        assert client.get_results([rid])[rid].url == hostile.origin + "/file/%d" % rid
    assert client.create_task("rain") == "t1"
    outcomes = client.fetch([4, 5], str(tmp_path))
    assert [o.status for o in outcomes] == ["saved", "saved"]
    assert (tmp_path / "4.wav").read_bytes() == wav()


FORGED_TASK_ID = "t1\n102          saved    sounds/102.wav\x1b[2K"

_NO_ROOM_FOR_CREATED = """
import errno, os, sys
import sound_bulk as sb
real = os.write
def write(fd, data):
    if b'"event": "created"' in bytes(data):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(fd, data)
os.write = write
sys.exit(sb.main(["generate", "rain", "--wait", "0", "-o", sys.argv[1], "--base-url", sys.argv[2]]))
"""


def _a_warning_without_v(folder):
    """The test below's child and its server (an early scenario: conftest): the child's exit status and stderr."""
    import subprocess
    import sys

    def handler(method, path, body):
        if method == "POST" and path == "/apis/text-to-sound":
            return http(200, {"task_id": FORGED_TASK_ID})
        return http(200, {"status": "PENDING"})

    hostile = hostile_server.Hostile(handler)
    try:
        from conftest import CHILD_MODULE_DIR as module_dir  # a compiled copy of the module
        # -S: the child needs only the standard library and the module; site's .pth files cost ~80 ms here
        proc = subprocess.Popen([sys.executable, "-S", "-c", _NO_ROOM_FOR_CREATED, folder, hostile.base_url],
                                cwd=module_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, PYTHONPATH=module_dir, CAMB_API_KEY=KEY))
        out, err = proc.communicate(timeout=60)
    finally:
        hostile.close()
    return proc.returncode, err.decode("utf-8")


@pytest.mark.early(scenario=_a_warning_without_v)
def test_a_warning_without_v_is_terminal_safe_too(early):
    """Warnings and errors go out even without -v (Python's last-resort handler), as they came.
    fails before: a task ID a server chose (a newline, ESC) forged a line on stderr in the
    'could not be recorded ... keep this ID' message when the manifest could not be written."""
    code, err = early()
    assert code == 1, err
    assert "keep this ID" in err and "t1\\n102" in err
    assert "\x1b" not in err and "\n102 " not in err


def test_an_empty_out_means_the_current_folder(hostile, monkeypatch, tmp_path):
    """``-o ''`` (an unset shell variable: ``-o "$DIR"``) is checked as the current folder, so it is one.
    fails before: every run was the error 'cannot create : No such file or directory'."""
    hostile.handler = lambda method, path, body: (
        http(200, {"7": {"output_url": hostile.origin + "/file/7"}}) if method == "POST"
        else http(200, wav(), headers=[("Content-Type", "audio/wav")]))
    monkeypatch.chdir(str(tmp_path))
    code, out, err = cli(["fetch", "7", "-o", ""], hostile, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "7.wav").read_bytes() == wav()


def test_a_prompt_with_undecodable_bytes_is_refused_before_anything_is_paid(hostile, monkeypatch, tmp_path):
    """Standard input under a C/POSIX locale (or UTF-8 mode) turns bytes that are not UTF-8 into lone
    surrogates.  fails before: such a prompt was sent, a paid task for mangled text (exit 1, not 2)."""
    hostile.handler = lambda method, path, body: http(200, {"task_id": "t1"})
    monkeypatch.setenv("CAMB_API_KEY", KEY)
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(["generate", "-", "--wait", "0", "-o", str(tmp_path), "--base-url", hostile.base_url],
                   stdin=io.StringIO("rain\ncaf\udce9\n"), stdout=out, stderr=err)
    assert code == 2 and hostile.requests() == []
    assert "caf\\udce9" in err.getvalue() and "UTF-8" in err.getvalue()
    with pytest.raises(sb.ConfigurationError):
        sb.generate(sb.Client(KEY, base_url=hostile.base_url), ["\ud800"], str(tmp_path))
    assert hostile.requests() == []
