"""Record the contract cassettes in cassettes/.

    python tests/record_cassettes.py                      # against the fake API (no key, no network)
    CAMB_API_KEY=... python tests/record_cassettes.py --live RUN_ID [RUN_ID...]
                                                          # against the real API -> cassettes/live/

Every cassette is scrubbed before it is written: the x-api-key header becomes
"REDACTED" and presigned-URL signatures and credentials become "REDACTED" in
URLs and bodies alike (so replay still matches).  Recording against the fake
binds it to fixed loopback ports so the cassettes never change by accident.
"""

import argparse
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import vcr  # noqa: E402

import sound_bulk  # noqa: E402
from fake_api import API_KEY, FakeCamb  # noqa: E402

CASSETTES = os.path.join(ROOT, "cassettes")
API_PORT, STORAGE_PORT = 48411, 48412
FAKE_BASE_URL = "http://127.0.0.1:%d/apis" % API_PORT

_SECRET_PARAMS = re.compile(
    r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|Key-Pair-Id|Policy|sig|token)=)[^&\"'\s<]+",
    re.IGNORECASE)


def scrub_text(text):
    return _SECRET_PARAMS.sub(r"\1REDACTED", text)


def scrub_request(request):
    request.uri = scrub_text(request.uri)
    return request


def scrub_response(response):
    body = response["body"]["string"]
    if isinstance(body, bytes) and not sound_bulk.sniff_audio(body[:4096]):  # MPEG needs whole frames
        body = response["body"]["string"] = scrub_text(body.decode("utf-8", "replace")).encode("utf-8")
        for name in response["headers"]:
            if name.lower() == "content-length":
                response["headers"][name] = [str(len(body))]  # keep it true after scrubbing
    for name in list(response["headers"]):
        if name.lower() in ("x-amz-id-2", "x-amz-request-id", "set-cookie"):
            response["headers"][name] = ["REDACTED"]
    return response


def _give_old_vcrpy_read1():
    """vcrpy 4.1.1 (the last for Python 3.6) replays bodies through read/readinto only; its response's read1
    falls through to http.client's, which finds no socket and returns b"" (a replayed download looked empty)."""
    from vcr.stubs import VCRHTTPResponse
    if "read1" not in VCRHTTPResponse.__dict__:
        VCRHTTPResponse.read1 = lambda self, *args: self._content.read1(*args)


_give_old_vcrpy_read1()


def make_vcr(record_mode):
    return vcr.VCR(
        cassette_library_dir=CASSETTES,
        record_mode=record_mode,
        match_on=["method", "scheme", "host", "port", "path", "query", "body"],
        filter_headers=[("x-api-key", "REDACTED")],
        before_record_request=scrub_request,
        before_record_response=scrub_response,
        decode_compressed_response=True,
    )


def record_fake():
    recorder = make_vcr("all")
    with FakeCamb(api_port=API_PORT, storage_port=STORAGE_PORT) as fake:
        def client(**kw):  # a fresh one per cassette: a kept-alive connection would bypass the recorder
            return sound_bulk.Client(API_KEY, base_url=fake.base_url, max_attempts=1, **kw)

        fake.add_run(101)
        fake.add_run(102, "pending", shape="null_url")
        fake.add_run(103, "failed")
        fake.add_run(105, "pending", shape="status_pending")
        with recorder.use_cassette("bulk_mixed_states.yaml"):
            client().get_results([101, 102, 103, 104, 105, 106])

        fake.add_run(201, size=2048)
        fake.add_run(202, size=1500, kind="flac")
        with recorder.use_cassette("fetch_two_runs.yaml"), tempfile.TemporaryDirectory() as out:
            client().fetch([201, 202], out, workers=1)

        with recorder.use_cassette("bad_key_401.yaml"):
            try:
                sound_bulk.Client("wrong-key", base_url=fake.base_url).get_results([1])
            except sound_bulk.AuthenticationError:
                pass

        fake.task_plan.append(("success", 1))
        fake._next_run = iter(range(301, 400))
        with recorder.use_cassette("generate_one_prompt.yaml"), tempfile.TemporaryDirectory() as out:
            sound_bulk.generate(client(sleep=lambda s: None),
                                ["glass breaking"], out, duration=3, workers=1)


def record_live(run_ids):
    if not os.environ.get("CAMB_API_KEY"):
        sys.exit("set CAMB_API_KEY to record against the live API")
    os.makedirs(os.path.join(CASSETTES, "live"), exist_ok=True)
    recorder = make_vcr("all")
    client = sound_bulk.Client()
    with recorder.use_cassette("live/bulk.yaml"):
        results = client.get_results(run_ids)
    print({rid: r.status for rid, r in results.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", nargs="+", metavar="RUN_ID", help="record the bulk call against the real API")
    args = parser.parse_args()
    if args.live:
        record_live(sound_bulk.validate_run_ids(args.live))
    else:
        record_fake()
    for dirpath, _, files in os.walk(CASSETTES):
        for name in files:
            with open(os.path.join(dirpath, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            key = os.environ.get("CAMB_API_KEY") or API_KEY
            assert key not in text, "the key is in %s: not written safely" % name
    print("cassettes written to", CASSETTES)


if __name__ == "__main__":
    main()
