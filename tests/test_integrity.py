"""A file is complete and checked, or it is not there: lengths the format declares, validators
on resume, the low-speed rule, what counts as audio, refusals by the storage, obstacles on disk.

Most tests talk to a small scripted storage on 127.0.0.1 that answers each GET with the next
reply of its script, so each misbehaviour is exact.
"""

import hashlib
import http.server
import os
import socket
import socketserver
import struct
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

import sound_bulk as sb
from conftest import any_text, property_scenario
from fake_api import API_KEY, start_serving, stop_serving, wav_header

# -- a scripted storage -------------------------------------------------------------------------


def reply(body, status=200, headers=(), length=True, cut=None, trickle=None):
    """One scripted answer: ``cut`` sends only that many bytes then closes; ``trickle`` sends
    the body one byte at a time with that many (real) seconds between bytes."""
    return {"body": body, "status": status, "headers": list(headers), "length": length, "cut": cut,
            "trickle": trickle}


def ranged(partial, plain):
    """Answer ``partial`` to a request with Range, ``plain`` to one without."""
    return {"range": partial, "plain": plain}


class _Threading(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up (a download refused, a connection reset with the reply unread) is not
        # news; socketserver would print its traceback over the test run's output.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Storage:
    """Answers GETs from ``script`` in order (the last reply repeats) and records request headers."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                r = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                if "range" in r:
                    r = r["range"] if "Range" in self.headers else r["plain"]
                self.send_response(r["status"])
                for name, value in r["headers"]:
                    self.send_header(name, value)
                if r["length"]:
                    self.send_header("Content-Length", str(len(r["body"])))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                body = r["body"][:r["cut"]] if r["cut"] is not None else r["body"]
                try:
                    if r["trickle"] is None:
                        self.wfile.write(body)
                    else:
                        for i in range(min(len(body), 2000)):  # bounded, whatever the client does
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(r["trickle"])
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if r["cut"] is not None or not r["length"]:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        self.httpd = _Threading(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/bucket/audio.wav?X-Amz-Signature=abc" % self.httpd.server_address[1]

    def __enter__(self):
        start_serving(self.httpd)
        return self

    def __exit__(self, *exc):
        stop_serving(self.httpd)


class Ticker:
    """A clock that moves ``step`` seconds each time it is read (no real waiting)."""

    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


@pytest.fixture
def client(sleeps):
    # The API is never asked in these tests unless a test says so: the URL is given.
    c = sb.Client(API_KEY, base_url="http://127.0.0.1:9/apis", sleep=sleeps, clock=sleeps.clock,
                  rand=lambda: 0.5, timeout=5)
    yield c
    c.close()


def wav(size, seed=b"a"):
    pattern = hashlib.sha256(seed).digest()
    data = wav_header(size)
    return data + (pattern * (size // len(pattern) + 1))[:size - len(data)]


def rf64(size, seed=b"r"):
    """An RF64 file: both 32-bit sizes are placeholders; ds64 holds the real ones."""
    data_size = size - 80
    head = (b"RF64" + b"\xff\xff\xff\xff" + b"WAVE" + b"ds64" + struct.pack("<I", 28)
            + struct.pack("<QQQI", size - 8, data_size, data_size // 2, 0)
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
            + b"data" + b"\xff\xff\xff\xff")
    assert len(head) == 80
    return head + (hashlib.sha256(seed).digest() * (size // 32 + 1))[:data_size]


def fill(head, size, seed):
    return head + (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size - len(head)]


def w64(size, seed=b"w"):
    tail = b"\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"
    return fill(b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00" + struct.pack("<Q", size) + b"wave" + tail
                + b"data" + tail + struct.pack("<Q", size - 40), size, seed)


def aiff(size, seed=b"i"):
    return fill(b"FORM" + struct.pack(">I", size - 8) + b"AIFFSSND" + struct.pack(">I", size - 20), size, seed)


def m4a(size, seed=b"m"):
    head = b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A isom" + struct.pack(">I", size - 24) + b"mdat"
    return fill(head, size, seed)


def webm(size, seed=b"e"):
    ebml = b"\x1a\x45\xdf\xa3\x93\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm\x42\x87\x81\x04"
    return fill(ebml + b"\x18\x53\x80\x67\x01" + struct.pack(">Q", size - len(ebml) - 12)[1:], size, seed)


def files(folder):
    return sorted(os.listdir(str(folder)))


# -- 1. the format's own length -----------------------------------------------------------------

@pytest.mark.parametrize("make", [wav, rf64, w64, aiff, m4a, webm], ids=lambda f: f.__name__)
def test_a_body_cut_short_without_content_length_is_caught_by_the_header(client, tmp_path, make):
    # fails before: the half file was saved (http.client sees EOF as the end of the body).
    body = make(100_000)
    assert sb.sniff_audio(body) and sb._declared_length(body[:4096]) == len(body)
    with Storage([reply(body, length=False, cut=50_000), reply(body, length=False)]) as storage:
        path, size = client.download(5, str(tmp_path), url=storage.url)
    assert size == len(body) and open(path, "rb").read() == body
    assert len(storage.seen) == 2 and "range" not in storage.seen[1]  # no length known: from the start


def test_a_body_always_cut_short_is_an_error_and_nothing_is_saved(client, tmp_path):
    # fails before: DID NOT RAISE (half a WAV saved).
    body = wav(100_000)
    with Storage([reply(body, length=False, cut=60_000)]) as storage:
        with pytest.raises(sb.DownloadError, match="truncated: got 60000 of the 100000 bytes its header declares"):
            client.download(5, str(tmp_path), url=storage.url)
    assert files(tmp_path) == []
    assert len(storage.seen) == client.max_attempts


def test_the_data_chunk_counts_when_the_riff_size_is_a_placeholder(client, tmp_path):
    # A streaming writer leaves the RIFF size as all ones, but the data chunk still tells.
    body = bytearray(wav(20_000))
    body[4:8] = b"\xff\xff\xff\xff"
    with Storage([reply(bytes(body), length=False, cut=10_000)]) as storage:
        with pytest.raises(sb.DownloadError, match="of the 20000 bytes"):
            client.download(5, str(tmp_path), url=storage.url)
    assert files(tmp_path) == []


def test_declared_lengths():
    assert sb._declared_length(wav(1000)) == 1000
    assert sb._declared_length(wav(1000)[:20]) == 1000  # the RIFF size alone
    assert sb._declared_length(rf64(5000)) == 5000
    assert sb._declared_length(b"RIFF\xff\xff\xff\xffWAVE") is None
    assert sb._declared_length(b"fLaC\x00\x00\x00\x22") is None
    aiff = b"FORM" + struct.pack(">I", 992) + b"AIFF"
    assert sb._declared_length(aiff) == 1000
    live = bytearray(webm(1000))
    live[28:36] = b"\x01\xff\xff\xff\xff\xff\xff\xff"  # a segment of unknown size (a live stream)
    assert sb._declared_length(bytes(live)) is None and sb._declared_length(webm(1000)) == 1000
    assert sb._declared_length(m4a(1000)) == 1000
    assert sb._declared_length(b"\x00\x00\x00\x18ftypM4A " + bytes(12) + b"\x00\x00\x00\x00mdat") is None


# -- 2. resume only with a validator ------------------------------------------------------------

def test_no_validator_means_start_over_not_splice(client, tmp_path):
    # fails before: the file was the first half of A spliced to the second half of B
    # (a storage that ignores If-Range answers the Range request from a new object of the same size).
    a, b = wav(100_000, b"A"), wav(100_000, b"B")
    tail = "bytes 50000-99999/100000"
    with Storage([reply(a, cut=50_000),
                  ranged(reply(b[50_000:], status=206, headers=[("Content-Range", tail)]), reply(b))]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    got = open(path, "rb").read()
    assert got in (a, b), "spliced: %d bytes of A" % sum(1 for x, y in zip(got, a) if x == y)
    assert "range" not in storage.seen[1]


def test_a_206_without_the_validator_starts_over(client, tmp_path):
    # fails before: the 206 had no ETag, so nothing was compared and two objects were spliced.
    a, b = wav(100_000, b"A"), wav(100_000, b"B")
    with Storage([reply(a, headers=[("ETag", '"A"')], cut=50_000),
                  reply(b[50_000:], status=206, headers=[("Content-Range", "bytes 50000-99999/100000")]),
                  reply(b, headers=[("ETag", '"B"')])]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == b
    assert storage.seen[1]["if-range"] == '"A"' and "range" not in storage.seen[2]


def test_last_modified_is_a_validator_too(client, tmp_path):
    a = wav(100_000)
    stamp = ("Last-Modified", "Wed, 21 Oct 2026 07:28:00 GMT")
    with Storage([reply(a, headers=[stamp], cut=50_000),
                  reply(a[50_000:], status=206, headers=[stamp, ("Content-Range", "bytes 50000-99999/100000")])]) \
            as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert storage.seen[1]["range"] == "bytes=50000-" and storage.seen[1]["if-range"] == stamp[1]


@pytest.mark.parametrize("content_range", [None, "bytes 0-49999/100000", "bytes 50000-99999/200000",
                                           "bytes 50000-59999/100000", "items 50000-99999/100000"])
def test_a_206_that_does_not_continue_the_object_starts_over(client, tmp_path, content_range):
    # fails before for the short span (appended) and the unit that is not bytes (appended).
    a = wav(100_000)
    etag = ("ETag", '"A"')
    extra = [("Content-Range", content_range)] if content_range else []
    with Storage([reply(a, headers=[etag], cut=50_000),
                  reply(a[50_000:], status=206, headers=[etag] + extra),
                  reply(a, headers=[etag])]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert "range" not in storage.seen[2]


def test_416_on_resume_starts_over(client, tmp_path):
    # fails before: DownloadError "HTTP 416 Requested Range Not Satisfiable from storage".
    a = wav(100_000)
    etag = ("ETag", '"A"')
    with Storage([reply(a, headers=[etag], cut=50_000),
                  reply(b"", status=416, headers=[("Content-Range", "bytes */100000")]),
                  reply(a, headers=[etag])]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == a
    assert "range" not in storage.seen[2]


# -- 3. the low-speed rule ----------------------------------------------------------------------

def test_a_trickling_body_is_broken_off_retried_and_reported(sleeps, tmp_path):
    # fails before: each read waits for a full buffer and every byte resets the per-read timeout,
    # so the client hangs as long as the trickle lasts (this server stops after 2000 bytes; a real
    # one need not).  Assumes only that a byte every 2 ms is slower than LOW_SPEED_LIMIT per
    # LOW_SPEED_TIME of the fake clock (which moves 10 s per reading).
    client = sb.Client(API_KEY, base_url="http://127.0.0.1:9/apis", sleep=sleeps, clock=Ticker(10.0),
                       rand=lambda: 0.5, timeout=5, max_attempts=2)
    with Storage([reply(wav(100_000), trickle=0.002)]) as storage:
        with pytest.raises(sb.DownloadError, match=r"too slow: \d+ bytes in 30 s .*after 2 tries"):
            client.download(5, str(tmp_path), url=storage.url)
    assert len(storage.seen) == 2
    assert files(tmp_path) == []


def test_a_slow_but_steady_body_is_not_broken_off(sleeps, tmp_path):
    body = wav(200_000)
    clock = Ticker(0.01)  # 64 KiB reads each 10 ms of fake time: far above the limit
    client = sb.Client(API_KEY, base_url="http://127.0.0.1:9/apis", sleep=sleeps, clock=clock, timeout=5)
    with Storage([reply(body)]) as storage:
        path, _ = client.download(5, str(tmp_path), url=storage.url)
    assert open(path, "rb").read() == body and len(storage.seen) == 1


# -- 4. what counts as audio --------------------------------------------------------------------

def id3(size, footer=False):
    """An ID3v2.4 tag of ``size`` bytes after its header (zeros), with its syncsafe size."""
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return (b"ID3\x04\x00" + (b"\x10" if footer else b"\x00") + syncsafe + bytes(size)
            + (b"3DI" + bytes(7) if footer else b""))


def short_id(value):
    return value if isinstance(value, str) else repr(bytes(value[:12]))[2:-1]


def frames(header, length, count=3):
    return (header + bytes(length - len(header))) * count


MP3 = frames(b"\xff\xfb\x90\x00", 417)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz
MP3_LSF = frames(b"\xff\xf3\x44\x00", 72 * 32000 // 24000)  # MPEG-2 Layer III, 32 kbit/s, 24 kHz
ADTS = frames(b"\xff\xf1\x50\x80\x02\x1f\xfc", 16)  # AAC LC, 44.1 kHz, 16-byte frames
FLAC = b"fLaC\x00\x00\x00\x22" + bytes(34)
W64_GUID_TAIL = b"\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"
W64 = (b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00" + struct.pack("<Q", 200) + b"wave" + W64_GUID_TAIL
       + b"data" + W64_GUID_TAIL + struct.pack("<Q", 24 + 136) + bytes(136))
EBML = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82"


@pytest.mark.parametrize("head,ext", [
    (wav(200), ".wav"), (rf64(200), ".wav"), (b"BW64\xff\xff\xff\xffWAVEds64", ".wav"),
    (W64, ".w64"),
    (b"FORM\x00\x00\x00\x40AIFFCOMM", ".aiff"), (b"FORM\x00\x00\x00\x40AIFCFVER", ".aiff"),
    (FLAC, ".flac"), (id3(100) + FLAC, ".flac"), (id3(20, footer=True) + FLAC, ".flac"),
    (id3(10) + id3(10) + FLAC, ".flac"),
    (b"OggS\x00\x02" + bytes(20), ".ogg"),
    (b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00M4A isom", ".m4a"), (b"\x00\x00\x00\x18ftypisom", ".m4a"),
    (EBML + b"\x84webm", ".webm"), (EBML + b"\x88matroska", ".mka"),
    (MP3, ".mp3"), (id3(30) + MP3, ".mp3"), (MP3_LSF, ".mp3"), (id3(5000)[:100], ".mp3"),
    (ADTS, ".aac"), (id3(30) + ADTS, ".aac"),
], ids=short_id)
def test_sniff_names_every_supported_format(head, ext):
    # fails before: W64, AIFF, M4A, WebM, MKA and AAC were not audio; ID3-tagged FLAC/AAC were ".mp3".
    assert sb.sniff_audio(head) == ext
    assert ext in sb.AUDIO_EXTENSIONS


def test_audio_extensions_are_the_sniffers():
    assert set(sb.AUDIO_EXTENSIONS) == {ext for ext, _test in sb._AUDIO_FORMATS}


UTF16_PAGE = "\ufeff<html><body>Access denied</body></html>".encode("utf-16-le")
UTF16_TEXT = "\ufeffError: the object does not exist. Please contact the administrator.".encode("utf-16-le")


@pytest.mark.parametrize("head", [
    UTF16_PAGE, UTF16_TEXT, b"\xff" * 5000, b"\xff\xfe" + b"E\x00" * 300,
    b"\xff\xfb\x90\x00" + bytes(500),  # a frame header, then no next frame where it should be
    b"\xff\xfb\x90\x00",  # a frame header and nothing else
    b"\xff\xfa\xf0\x00" + bytes(600), b"\xff\xfb\x0c\x00" + bytes(600),  # bitrate 15, sample rate 3
    b"\xff\xe3\x90\x00" + bytes(600), b"\xff\xf9\x90\x00" + bytes(600),  # version 1, layer 0 (reserved)
    b"\xff\xf1\x7c\x80\x02\x1f\xfc" * 3,  # ADTS with sample-rate index 15
    b"ID3\x04\x00\x00\x80\x80\x80\x80" + bytes(100),  # a size that is not syncsafe
    b"fLaC\x7f\xff\xff\xff", b"\x00\x00\x00\x18ftypqt  ", b"RIFF\x24\x00\x00\x00AVI LIST",
], ids=short_id)
def test_these_are_not_audio(head):
    # fails before for the UTF-16 pages, the 0xFF body and the MPEG headers: taken for MP3.
    assert sb.sniff_audio(head) is None


@pytest.mark.parametrize("body,words", [
    (UTF16_PAGE, "an HTML page (UTF-16 text), not audio"),
    (b"\xff" * 5000, "bytes in no known format, not audio"),
    (id3(100), "an ID3 tag and nothing after it, not audio"),
    (b"\xff\xfe<\x00h\x00", "bytes in no known format (UTF-16 text), not audio"),
    (b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>", "an XML document, not audio"),
    (b"<!DOCTYPE html><html><body>502</body></html>", "an HTML page, not audio"),
    (b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(100), "unsupported audio format: RIFF ('AVI ')"),
    (b"\x00\x00\x00\x18ftypqt  " + bytes(100), "unsupported audio format: MP4 (brand 'qt  ')"),
    (EBML + b"\x84abcd" + bytes(100), "unsupported audio format: Matroska ('abcd')"),
    (b"caff\x00\x01\x00\x00" + bytes(100), "unsupported audio format: Core Audio"),
    (b"FORM\x00\x00\x00\x6c8SVXVHDR" + bytes(100), "unsupported audio format: IFF ('8SVX')"),  # not AIFF
    (b".snd\x00\x00\x00\x18" + bytes(100), "unsupported audio format: Sun AU"),
], ids=short_id)
def test_what_is_not_saved_is_named(client, tmp_path, body, words):
    # fails before: the UTF-16 page and the 0xFF body were saved as 5.mp3; containers were "not audio".
    with Storage([reply(body)]) as storage:
        with pytest.raises(sb.DownloadError) as caught:
            client.download(5, str(tmp_path), url=storage.url)
    assert str(caught.value) == "run 5: the storage sent " + words if "unsupported" not in words else \
        str(caught.value) == "run 5: the storage sent an " + words
    assert files(tmp_path) == []


@pytest.mark.parametrize("body,name", [
    (id3(200_000) + FLAC + bytes(300_000), "5.flac"),  # a tag longer than a read: looked past while streaming
    (id3(50) + MP3 * 20, "5.mp3"),
    (W64, "5.w64"),
    (b"FORM\x00\x00\x0f\xf8AIFFCOMM" + bytes(4080), "5.aiff"),
    (b"\x00\x00\x00\x18ftypM4A " + bytes(5000), "5.m4a"),
    (id3(10) + ADTS * 100, "5.aac"),
], ids=short_id)
def test_each_format_is_saved_under_its_own_extension_and_a_rerun_skips_it(client, tmp_path, body, name):
    # fails before: tagged FLAC and AAC were saved as .mp3; W64, AIFF, M4A were not audio.
    with Storage([reply(body)]) as storage:
        path, size = client.download(5, str(tmp_path), url=storage.url)
        assert os.path.basename(path) == name and size == len(body)
        with pytest.raises(FileExistsError):
            client.download(5, str(tmp_path), url=storage.url)
        assert len(storage.seen) == 1


def test_a_short_aiff_is_caught_by_its_form_size(client, tmp_path):
    body = b"FORM\x00\x00\x0f\xf8AIFFCOMM" + bytes(4080)
    with Storage([reply(body, length=False, cut=3000)]) as storage:
        with pytest.raises(sb.DownloadError, match="truncated: got 3000 of the 4096 bytes"):
            client.download(5, str(tmp_path), url=storage.url)


@settings(derandomize=True)
@given(st.binary(max_size=2000))
def test_random_bytes_are_not_audio(data):
    # fails before: any body that starts FF Ex..FF Fx with a layer set was MP3 (hypothesis finds one).
    assert sb.sniff_audio(data) is None


@settings(derandomize=True)
@given(any_text(300), st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "latin-1"]),
       st.sampled_from(["%s", "<html><body>%s</body></html>", "<?xml version='1.0'?><Error>%s</Error>",
                        '{"detail": "%s"}']))
def text_pages_are_not_audio(text, codec, page):
    # fails before: a UTF-16 page (FF FE ...) was taken for MP3.
    body = (page % text).encode(codec, "replace")
    assert sb.sniff_audio(body) is None


@pytest.mark.early(scenario=property_scenario(text_pages_are_not_audio))
def test_text_pages_are_not_audio(early):
    """The property above, run as an early scenario (conftest)."""
    early()  # fails the test with the property's failure, if any


# -- 5. refusals that are not expiry, refreshes that change nothing -----------------------------

ACCESS_DENIED = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
EXPIRED = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


@pytest.fixture
def api_client(fake, sleeps):
    c = sb.Client(API_KEY, base_url=fake.base_url, sleep=sleeps, clock=sleeps.clock, rand=lambda: 0.5, timeout=5)
    yield c
    c.close()


@pytest.mark.parametrize("body,first", [
    (ACCESS_DENIED, "the storage refused the download URL (HTTP 403: "),
    (EXPIRED, "the download URL expired (HTTP 403: "),
], ids=["access-denied", "expired"])
def test_a_refresh_that_returns_the_same_url_says_so(fake, api_client, tmp_path, body, first):
    # fails before: "run 5 has no download URL now: ready".
    fake.add_run(5)
    with Storage([reply(body, status=403)]) as storage:
        fake.bulk_faults = [("body", {"5": {"output_url": storage.url}})]
        with pytest.raises(sb.DownloadError) as caught:
            api_client.download(5, str(tmp_path), url=storage.url)
    text = str(caught.value)
    assert text.startswith("run 5: " + first) and text.endswith(", and the API gave the same URL again")
    assert ("does not say the URL expired" in text) == (body == ACCESS_DENIED)
    assert files(tmp_path) == []


def test_a_plain_access_denied_is_not_called_an_expiry(fake, api_client, tmp_path):
    # fails before: "the download URL expired and 2 fresh ones did not work".
    fake.add_run(5)
    with Storage([reply(ACCESS_DENIED, status=403)]) as storage:
        fake.bulk_faults = [("body", {"5": {"output_url": storage.url + "&n=%d" % n}}) for n in (1, 2)]
        with pytest.raises(sb.DownloadError) as caught:
            api_client.download(5, str(tmp_path), url=storage.url)
    text = str(caught.value)
    assert "expired (" not in text and "AccessDenied" in text
    assert "it does not say the URL expired), and 2 fresh URLs did not help" in text
    assert len(storage.seen) == 3


# -- 6. what is in the way on disk --------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_dangling_link_is_an_error_for_its_run_only_and_is_left_alone(fake, api_client, tmp_path):
    # fails before: FileNotFoundError out of fetch (os.path.getsize on the dangling link): every run lost.
    fake.add_runs([5, 6], size=5000)
    os.symlink(str(tmp_path / "elsewhere.wav"), str(tmp_path / "5.wav"))
    five, six = api_client.fetch([5, 6], str(tmp_path))
    assert (five.status, six.status) == ("error", "saved")
    assert "5.wav: it is a symbolic link to nothing" in five.error
    assert os.readlink(str(tmp_path / "5.wav")) == str(tmp_path / "elsewhere.wav")
    assert not (tmp_path / "elsewhere.wav").exists()  # nothing written through the link
    assert files(tmp_path) == ["5.wav", "6.wav"]


def test_a_folder_in_the_way_is_an_error_not_skipped(fake, api_client, tmp_path):
    # fails before: status "skipped" with the folder's size.
    fake.add_run(5, size=5000)
    (tmp_path / "5.wav").mkdir()
    (outcome,) = api_client.fetch([5], str(tmp_path))
    assert outcome.status == "error" and "5.wav: it is a folder, not a file" in outcome.error
    assert os.listdir(str(tmp_path / "5.wav")) == [] and files(tmp_path) == ["5.wav"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_link_that_appears_while_downloading_is_not_replaced_or_followed(client, tmp_path):
    body = wav(100_000)
    target = tmp_path / "target"
    with Storage([reply(body)]) as storage:
        download = sb._Download(client, 5, str(tmp_path), storage.url, None, None, threading.Event())
        real = download._transfer

        def transfer(writer):
            result = real(writer)
            os.symlink(str(target), str(tmp_path / "5.wav"))
            return result

        download._transfer = transfer
        with pytest.raises(sb.DownloadError, match="5.wav: it is a symbolic link to nothing"):
            download.run()
    assert not target.exists() and os.path.islink(str(tmp_path / "5.wav"))
    assert files(tmp_path) == ["5.wav"]
