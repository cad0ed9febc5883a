"""Contract tests: replay the recorded cassettes offline (no server runs; any unrecorded request fails).

Each replay checks the request this client makes against the recorded one (method, URL, JSON body
byte for byte) and, with the matcher below, the headers the API contract demands.  Re-record with
``python tests/record_cassettes.py``.
"""

import contextlib
import hashlib
import json
import os
import sys

import pytest

# vcr patches every HTTP client it can import (requests, urllib3, botocore, httpx ...): it imports them
# all when it is imported and again for each cassette, ~0.4 s where they are installed.  sound_bulk
# speaks through http.client alone, the one vcr always patches; the others are shown to vcr as missing.
_OTHER_HTTP_CLIENTS = ("requests", "urllib3", "botocore", "boto3", "httplib2", "tornado", "aiohttp", "httpx",
                       "httpx_curl_cffi", "pyreqwest", "httpx2")


@contextlib.contextmanager
def _only_http_client():
    hidden = [name for name in _OTHER_HTTP_CLIENTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError meanwhile
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


with _only_http_client():
    vcr = pytest.importorskip("vcr")
    from record_cassettes import CASSETTES, FAKE_BASE_URL, make_vcr  # noqa: E402

import sound_bulk as sb  # noqa: E402
from fake_api import body_bytes  # noqa: E402

API_ORIGIN = ("127.0.0.1", 48411)


def contract_headers(r1, r2):
    """The key goes to the API and nowhere else; API calls are JSON with our User-Agent."""
    for r in (r1, r2):
        headers = {k.lower(): v for k, v in r.headers.items()}
        if (r.host, r.port) == API_ORIGIN:
            assert headers.get("x-api-key"), "API request without x-api-key"
            assert headers.get("user-agent", "").startswith("sound_bulk/")
            assert headers.get("accept") == "application/json"
            if r.method == "POST":
                assert headers.get("content-type") == "application/json"
        else:
            assert "x-api-key" not in headers, "the key went to %s" % r.host


@pytest.fixture
def replay():
    recorder = make_vcr("none")
    recorder.register_matcher("contract_headers", contract_headers)
    recorder.match_on = tuple(recorder.match_on) + ("contract_headers",)

    def use(name):
        assert os.path.isfile(os.path.join(CASSETTES, name))
        return recorder.use_cassette(name, allow_playback_repeats=False)

    with _only_http_client():
        yield use


def client(**kw):
    return sb.Client("replay-key", base_url=FAKE_BASE_URL, max_attempts=1, **kw)


def test_cassettes_hold_no_key_and_no_signature():
    """Checks the committed cassette files (read as YAML), not this module: no key and no signature in
    the repository, and the key recorded on every API request and on no other."""
    import yaml  # comes with vcrpy
    names = [n for n in os.listdir(CASSETTES) if n.endswith(".yaml")]
    assert names
    for name in names:
        with open(os.path.join(CASSETTES, name), encoding="utf-8") as f:
            text = f.read()
        assert "test-key-not-a-secret" not in text and "fakesig" not in text, name
        keys_seen = 0
        for interaction in yaml.safe_load(text)["interactions"]:
            request = interaction["request"]
            headers = {k.lower(): v for k, v in request["headers"].items()}
            if "/apis/" in request["uri"]:
                assert headers.get("x-api-key") == ["REDACTED"], (name, request["uri"])
                keys_seen += 1
            else:
                assert "x-api-key" not in headers, (name, request["uri"])
            assert "X-Amz-Signature=" not in request["uri"] or "X-Amz-Signature=REDACTED" in request["uri"]
        assert keys_seen, name


def test_bulk_call_and_every_recorded_state(replay):
    with replay("bulk_mixed_states.yaml") as cassette:
        out = client().get_results([101, 102, 103, 104, 105, 106])
    assert cassette.all_played
    assert [out[i].status for i in range(101, 107)] == ["ready", "pending", "failed", "missing", "pending", "missing"]
    assert out[101].url.endswith("X-Amz-Signature=REDACTED")
    assert out[103].error == "generation failed: model overloaded"
    bodies = [json.loads(r.body) for r in cassette.requests]
    assert bodies == [{"run_ids": [101, 102, 103, 104, 105]}, {"run_ids": [106]}]


def test_rejected_key(replay):
    with replay("bad_key_401.yaml"):
        with pytest.raises(sb.AuthenticationError, match="Invalid API key"):
            client().get_results([1])


def test_full_fetch_offline(replay, tmp_path):
    with replay("fetch_two_runs.yaml") as cassette:
        outcomes = client().fetch([201, 202], str(tmp_path), workers=1)
    assert cassette.all_played
    assert [(o.run_id, o.status, os.path.basename(o.path)) for o in outcomes] == [
        (201, "saved", "201.wav"), (202, "saved", "202.flac")]
    for o, (size, kind) in zip(outcomes, [(2048, "wav"), (1500, "flac")]):
        with open(o.path, "rb") as f:
            expected = hashlib.sha256(b"".join(body_bytes(o.run_id, size, kind))).digest()
            assert hashlib.sha256(f.read()).digest() == expected
    assert sorted(os.listdir(tmp_path)) == ["201.wav", "202.flac"]


def test_generate_sequence_offline(replay, tmp_path):
    with replay("generate_one_prompt.yaml") as cassette:
        (outcome,) = sb.generate(client(sleep=lambda s: None), ["glass breaking"], str(tmp_path), duration=3, workers=1)
    assert cassette.all_played
    assert (outcome.status, outcome.task_id, outcome.run_id) == ("saved", "task-0001", 301)
    methods = [(r.method, r.path) for r in cassette.requests]
    assert methods == [("POST", "/apis/text-to-sound"), ("GET", "/apis/text-to-sound/task-0001"),
                       ("GET", "/apis/text-to-sound/task-0001"), ("POST", "/apis/text-to-sound-results"),
                       ("GET", "/bucket/audio_301.wav")]
    assert json.loads(cassette.requests[0].body) == {"prompt": "glass breaking", "audio_type": "sound", "duration": 3.0}


def test_a_request_off_the_contract_is_caught(replay):
    """The replay is strict: a different body (here, a string ID) matches nothing.

    Checks vcrpy, not this module, and is kept on purpose: every other replay test can fail only if a
    request off the recording is refused rather than served, which is what this guards."""
    with replay("bulk_mixed_states.yaml"):
        c = client()
        with pytest.raises(Exception) as info:
            c._call_json("POST", "text-to-sound-results", {"run_ids": ["101", 102, 103, 104, 105]}, retry=False)
    assert "CannotOverwriteExistingCassette" in type(info.value).__name__
