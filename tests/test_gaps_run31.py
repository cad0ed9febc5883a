"""Gaps a mutation run (tools/mutate.py --seed 31, on main 810e916) showed: the suite passed with these wrong.

Each test names what it guards; together they kill mutants #65, #341, #739, #1429, #1500, #1665, #1783, #1812,
#1868, #1891, #2449, #2744, #3857, #3983 and #4181 of that run (checked one by one with SOUND_BULK_UNDER_TEST)."""

import io
import json
import logging
import os
import struct

import pytest

import sound_bulk as sb
from conftest import run
from fake_api import API_KEY
from hostile_server import http
from test_integrity import Storage, fill, reply, wav



@pytest.mark.parametrize("status", [408, 429])
def test_a_timeout_or_throttle_answer_from_the_bulk_call_is_retried(fake, client, sleeps, status):
    """408 Request Timeout and 429 are worth another try (RETRY_STATUSES), like 409 and the 5xx."""
    fake.add_run(1)
    fake.bulk_faults.append(("status", status))
    out = client.get_results([1])
    assert out[1].status == "ready" and out[1].error is None
    assert len(fake.seen("api", "POST")) == 2 and len(sleeps.waits) == 1


def test_a_key_spelled_with_json_escapes_shows_as_redacted(fake, client):
    """The bytes of this answer do not hold the key, its decoded text does: that text says <redacted> where
    the key was, not the key and not nothing (a reader must see that something was hidden)."""
    spelled = "".join("\\u%04x" % ord(c) for c in API_KEY)
    fake.bulk_faults.append(("body", ('{"1": {"status": "FAILED", "error": "bad key %s here"}}' % spelled).encode()))
    out = client.get_results([1])
    assert out[1].status == "failed"
    assert out[1].error == "bad key <redacted> here"


def test_redact_url_keeps_an_empty_url_empty():
    assert sb.redact_url("") == "" and sb.redact_url(None) is None
    assert sb.redact_url("https://u:p@h/x?sig=1") == "https://<redacted>@h/x?<redacted>"


def test_a_w64_needs_both_of_its_guids(tmp_path):
    """Sony Wave64 starts with the RIFF GUID, and the WAVE GUID 24 bytes in: one without the other is not
    a .w64 (it would be saved as audio it is not)."""
    riff, wave = sb._W64_RIFF, sb._W64_WAVE
    size = b"\x00" * 8
    assert sb.sniff_audio(riff + size + wave + b"\x00" * 64) == ".w64"
    assert sb.sniff_audio(riff + size + b"\x01" * 16 + b"\x00" * 64) is None
    assert sb.sniff_audio(b"\x01" * 16 + size + wave + b"\x00" * 64) is None


def test_an_asf_body_is_named_when_it_is_refused(fake, client, tmp_path):
    """A Windows Media (ASF) file from the storage: the error names the format, not just "not audio"."""
    fake.add_run(5)
    fake.storage_faults[5] = [("status", 200, b"0&\xb2u\x8ef\xcf\x11\xa6\xd9\x00\xaa\x00b\xcel" + b"\x00" * 200)] * 9
    with pytest.raises(sb.DownloadError, match=r"run 5: the storage sent an unsupported audio format: ASF$"):
        client.download(5, str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


def test_an_m4a_whose_media_box_has_a_64_bit_size_is_checked_against_it(make_client, tmp_path):
    """An MP4 box of size 1 carries its real size in the 64 bits after its type ("largesize", as big media
    boxes do): a body cut short of that size is not saved as whole."""
    head = b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A isom" + struct.pack(">I", 1) + b"mdat"
    body = fill(head + struct.pack(">Q", 100_000 - 24), 100_000, b"m")
    assert sb.sniff_audio(body) == ".m4a"
    client = make_client(base_url="http://127.0.0.1:9/apis")  # the URL is given: the API is never asked
    with Storage([reply(body, length=False, cut=50_000), reply(body, length=False)]) as storage:
        path, size = client.download(5, str(tmp_path), url=storage.url)
    assert size == len(body) and open(path, "rb").read() == body
    assert len(storage.seen) == 2  # the cut body was caught and asked again


def test_objects_nested_too_deeply_are_refused_like_lists(fake, client):
    """Depth counts objects as it counts lists: 100 nested objects are refused by name, not walked."""
    fake.bulk_faults.append(("body", ('{"a": ' * 100 + "1" + "}" * 100).encode()))
    out = client.get_results([1])
    assert out[1].status == "missing"
    assert "nested more than %d deep" % sb.MAX_JSON_DEPTH in out[1].error


def test_a_key_cut_at_the_end_is_redacted_once_whatever_the_key_starts_with():
    """The longest piece of the key at the end is replaced, once: a key that starts like the end of the mark
    ("acted>...") must not eat into the mark it has just put there."""
    key = "acted>0123456789abcdef"
    client = sb.Client(key, base_url="http://127.0.0.1:9/apis")
    try:
        assert client._redact("the key was " + key[:12]) == "the key was <redacted>"
    finally:
        client.close()


@pytest.mark.parametrize("value", ["-3", "1.5", "+2"])
def test_a_retry_after_that_is_not_whole_seconds_or_a_date_is_ignored(value):
    """Retry-After is whole seconds (digits only) or an HTTP date; anything else falls back to backoff."""
    assert sb.retry_wait({"retry-after": value}, 0, now=0.0, rand=lambda: 0.5) == sb.backoff(0, lambda: 0.5)
    assert sb.retry_wait({"retry-after": " 7 "}, 0, now=0.0, rand=lambda: 0.5) == 7.0


def test_a_422_detail_list_of_plain_strings_is_shown_joined(fake, client):
    """FastAPI details are usually objects with loc/msg; plain strings in the list are shown as they are."""
    fake.bulk_faults.append(("body", b'{"detail": ["first problem", "second problem"]}', 422))
    out = client.get_results([1])
    assert out[1].status == "missing"
    assert "first problem; second problem" in out[1].error


def test_more_interim_answers_than_allowed_end_the_call_with_a_clear_error(hostile, make):
    """A server that sends 1xx answers without end (MAX_INTERIM of them and more) is an error that says
    so, not a crash and not an endless read."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    hostile.handler = lambda method, path, body: hints * (sb.MAX_INTERIM + 1) + http(200, {})
    out = make().get_results([1])
    assert out[1].status == "missing"
    assert "more than %d interim (1xx) answers" % sb.MAX_INTERIM in out[1].error


def test_a_206_that_does_not_continue_says_what_it_covers_and_what_was_asked(make_client, tmp_path, caplog):
    """The retry's message (the -v log) names both spans exactly: the one sent and the one asked for."""
    a = wav(100_000)
    etag = ("ETag", '"A"')
    client = make_client(base_url="http://127.0.0.1:9/apis")
    with caplog.at_level(logging.INFO, logger="sound_bulk"):
        with Storage([reply(a, headers=[etag], cut=50_000),
                      reply(a[:50_000], status=206, headers=[etag, ("Content-Range", "bytes 0-49999/100000")]),
                      reply(a, headers=[etag])]) as storage:
            path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert "a 206 for bytes 0-49999/100000 instead of 50000-99999/100000; starting over" in caplog.text


def test_a_refused_submission_is_in_the_manifest_with_its_reason(fake, client, tmp_path):
    """The manifest says why a prompt was not submitted (its "error"), for the person reading it later."""
    fake.create_faults.append(("before", 400))
    out = sb.generate(client, ["rain"], str(tmp_path))
    assert [o.status for o in out] == ["error"]
    with open(str(tmp_path / sb.MANIFEST_NAME), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    failed = [r for r in records if r["event"] == "submit_failed"]
    assert len(failed) == 1 and "rejected before creating anything" in failed[0]["error"]


def test_fetch_help_shows_its_examples_with_the_command_name():
    code, out, err = run(["fetch", "--help"])
    assert code == 0
    words = out.split()
    prog = " ".join(words[1:words.index("fetch")])  # "usage: python -m sound_bulk fetch ...": the name as run
    assert "\n  %s fetch 101 102 103 -o sounds\n" % prog in out and "{prog}" not in out


class _FlushedOnly(io.StringIO):
    """A terminal that shows what has been flushed, as a real one shows a stream's buffer only then."""

    def __init__(self):
        super().__init__()
        self.shown = ""

    def isatty(self):
        return True

    def flush(self):
        self.shown = self.getvalue()


class _Results(io.StringIO):
    """Standard output that notes what the terminal showed when each result line came."""

    def __init__(self, terminal):
        super().__init__()
        self.terminal, self.seen = terminal, []

    def write(self, text):
        self.seen.append(self.terminal.shown)
        return super().write(text)


def test_the_progress_line_is_off_the_terminal_before_a_result_line_comes(fake, tmp_path, monkeypatch):
    """fetch's progress line ("N/M files ...") is cleared, and the clearing flushed, before a result line is
    written: else the result would appear under a stale progress line."""
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    fake.add_runs([1, 2, 3], size=200_000)
    err = _FlushedOnly()
    out = _Results(err)
    code = sb.main(["fetch", "1", "2", "3", "-o", str(tmp_path), "--base-url", fake.base_url],
                   stdin=io.StringIO(""), stdout=out, stderr=err)
    assert code == 0 and len(out.getvalue().splitlines()) == 3
    assert any(" files " in shown for shown in out.seen)  # a progress line was up before some result
    assert all(" files " not in shown.rsplit("\r\x1b[K", 1)[-1] for shown in out.seen)
