"""Downloads at their edges: the default folder, the files' permissions."""

import os

import pytest

import sound_bulk as sb

def test_the_default_folder_is_the_current_one(fake, client, tmp_path, monkeypatch):
    fake.add_runs([5, 6], size=3000)
    monkeypatch.chdir(str(tmp_path))
    path, size = client.download(5)
    assert os.path.abspath(path) == str(tmp_path / "5.wav") and size == 3000
    outcomes = client.fetch([5, 6])
    assert [(o.status, os.path.abspath(o.path)) for o in outcomes] == [
        ("skipped", str(tmp_path / "5.wav")), ("saved", str(tmp_path / "6.wav"))]


def test_files_get_the_usual_permissions(fake, make_client, tmp_path):
    """Audio files and the manifest are readable and writable as the umask allows (0o666 less it),
    as any other file the user makes: another account or a later run without root can use them."""
    umask = os.umask(0o022)
    os.umask(umask)
    fake.add_run(5, size=3000)
    fake.default_task_plan = ("success", 0)
    client = make_client()
    path, _ = client.download(5, str(tmp_path))
    out = sb.generate(client, ["rain"], str(tmp_path / "g"))
    expected = 0o666 & ~umask
    for made in (path, out[0].path, str(tmp_path / "g" / sb.MANIFEST_NAME)):
        assert os.stat(made).st_mode & 0o777 == expected, made


@pytest.mark.parametrize("body,described", [
    (b"\xef\xbb\xbf<!DOCTYPE html><html><body>Error</body></html>", "an HTML page (UTF-8 text)"),
    ("\ufeff<?xml version='1.0'?><Error/>".encode("utf-16-le"), "an XML document (UTF-16 text)"),
    ("\ufeff{\"detail\": \"nope\"}".encode("utf-16-be"), "JSON (UTF-16 text)"),
    (b"\x00\x01\x02\x03" * 30, "bytes in no known format"),
])
def test_a_body_that_is_not_audio_is_named_in_the_error(fake, client, tmp_path, body, described):
    fake.add_run(5, size=3000)
    fake.storage_faults[5] = [("status", 200, body)]
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path))
    assert "the storage sent %s, not audio" % described in str(info.value)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_where_the_file_would_go_is_left_alone(fake, client, tmp_path):
    fake.add_run(5, size=3000)
    os.mkfifo(str(tmp_path / "5.wav"))
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path))
    assert "it is not a regular file" in str(info.value)
    assert os.listdir(str(tmp_path)) == ["5.wav"]
