"""The HTTP layer and the Client's set-up at their edges: what a mutation run showed no test held."""

import http.client
import os

import pytest

import sound_bulk as sb
from fake_api import API_KEY, body_sha256


# -- Client set-up ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,message", [
    (dict(timeout="abc"), "timeout must be a number of seconds, not 'abc'"),
    (dict(timeout=0), "timeout must be more than 0 seconds"),
    (dict(timeout=-1), "timeout must be more than 0 seconds"),
    (dict(max_attempts=0), "max_attempts must be at least 1"),
    (dict(max_attempts=2.0), "max_attempts must be at least 1"),
    (dict(api_key="   "), "no API key"),
    (dict(api_key="two words"), "printable ASCII"),
    (dict(api_key="caf\u00e9"), "printable ASCII"),
    (dict(base_url="https://user:pw@api.example/apis"), "may not carry a query, fragment or credentials"),
    (dict(base_url="https://api.example/apis?x=1"), "may not carry a query, fragment or credentials"),
    (dict(base_url="https://api.example/apis#top"), "may not carry a query, fragment or credentials"),
    (dict(base_url="ftp://api.example/apis"), "must be an http(s) URL"),
    (dict(base_url="https:///apis"), "must be an http(s) URL"),
    (dict(base_url="https://api.example:99999/apis"), "bad base URL"),
    (dict(base_url="http://api.example/apis"), "refusing plain http to api.example"),
    (dict(base_url="http://127.0.0.1.example/apis"), "refusing plain http"),
])
def test_client_refuses_bad_settings_with_a_clear_message(kw, message):
    kw.setdefault("api_key", API_KEY)
    with pytest.raises(sb.ConfigurationError) as info:
        sb.Client(**kw)
    assert message in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize("url,kept", [
    ("http://localhost:8080/apis/", "http://localhost:8080/apis"),
    ("http://127.0.0.5/apis", "http://127.0.0.5/apis"),
    ("http://[::1]:9/apis", "http://[::1]:9/apis"),
    (" HTTPS://api.example/apis ", "HTTPS://api.example/apis"),
])
def test_client_takes_https_anywhere_and_plain_http_on_loopback(url, kept):
    assert sb.Client(API_KEY, base_url=url).base_url == kept


def test_client_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CAMB_API_KEY", "  env-key-123  ")
    monkeypatch.setenv("CAMB_API_BASE_URL", "http://127.0.0.1:1/apis")
    c = sb.Client()
    assert c.base_url == "http://127.0.0.1:1/apis"
    assert "env-key-123" not in repr(c) and "<redacted>" in repr(c)
    assert sb.Client(base_url="https://api.example").base_url == "https://api.example"  # argument first
    monkeypatch.delenv("CAMB_API_BASE_URL")
    assert sb.Client().base_url == sb.DEFAULT_BASE_URL


# -- where it connects ----------------------------------------------------------------------------------

@pytest.fixture
def dials(monkeypatch):
    """Every (scheme, host, port) the client dials; each dial is refused (nothing leaves this process)."""
    seen = []

    def refuse(scheme):
        def connect(self):
            seen.append((scheme, self.host, self.port))
            raise ConnectionRefusedError(111, "Connection refused")
        return connect

    monkeypatch.setattr(http.client.HTTPConnection, "connect", refuse("http"))
    monkeypatch.setattr(http.client.HTTPSConnection, "connect", refuse("https"))
    return seen


@pytest.mark.parametrize("base,origin", [
    ("https://api.example/apis", ("https", "api.example", 443)),
    ("https://API.Example:8443/apis", ("https", "api.example", 8443)),
    ("http://localhost/apis", ("http", "localhost", 80)),
    ("http://127.0.0.1:8080/apis", ("http", "127.0.0.1", 8080)),
])
def test_default_ports_are_443_and_80(dials, sleeps, base, origin):
    # Only the first https case builds the default context (system CAs: ~50 ms); it is not dialled anyway.
    import ssl
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if base == "https://API.Example:8443/apis" else None
    c = sb.Client(API_KEY, base_url=base, sleep=sleeps, max_attempts=2, ssl_context=bare)
    out = c.get_results([1])
    assert out[1].status == "missing" and "Connection refused" in out[1].error
    assert dials == [origin, origin]  # refused to connect: tried again
    assert c.connections_opened == {"%s://%s:%d" % origin: 2}


# -- redirects ---------------------------------------------------------------------------------------

def test_five_redirects_are_followed_and_a_sixth_is_refused(fake, client):
    fake.add_run(1)
    fake.bulk_faults += [("redirect", 307, "same")] * 5
    assert client.get_results([1])[1].status == "ready"
    assert len(fake.seen("api", "POST")) == 6
    fake.reset_counts()
    fake.bulk_faults += [("redirect", 307, "same")] * 6
    out = client.get_results([1])
    assert "more than 5 redirects" in out[1].error
    assert len(fake.seen("api", "POST")) == 6  # not retried: more of the same would not help


def test_a_retry_after_a_cross_origin_redirect_still_carries_the_key(fake, client, sleeps):
    """The key is dropped for the other origin only, not from the request the client repeats."""
    fake.add_run(1)
    fake.bulk_faults.append(("redirect", 307, "cross"))
    fake.storage_faults["post"] = [("status", 503)]
    assert client.get_results([1])[1].status == "ready"
    assert [r["headers"].get("x-api-key") for r in fake.seen("api")] == [API_KEY, API_KEY]
    assert [r["headers"].get("x-api-key") for r in fake.seen("storage")] == [None]
    assert [w for w in sleeps.waits if w]  # the 503 was waited out


# -- sockets ---------------------------------------------------------------------------------------------

# (the ``sockets`` fixture, every socket the client opens, is conftest's)


@pytest.mark.parametrize("fault", [("drop",), ("short",), ("html", 502), ("status", 503)])
def test_a_connection_that_failed_is_closed(fake, client, sockets, fault):
    fake.add_run(1)
    fake.bulk_faults += [fault] * 5
    out = client.get_results([1])
    assert out[1].status == "missing"
    assert len(fake.seen("api")) == 5
    client.close()
    assert sockets and all(s.fileno() == -1 for s in sockets), "a socket left open"


def test_a_connection_that_timed_out_is_closed(fake, make_client, sockets):
    """Timing assumed: the fake's 0.6 s pause before answering outlasts a 0.05 s read timeout (a loaded
    machine only makes the pause longer; a TLS handshake that a loaded machine delays past 0.05 s also
    ends "timed out" on a socket that was opened, so it changes nothing below)."""
    fake.request_delay = 0.6
    c = make_client(timeout=0.05, max_attempts=2)
    out = c.get_results([1])
    assert out[1].status == "missing" and "timed out" in out[1].error
    c.close()
    assert len(sockets) == 2 and all(s.fileno() == -1 for s in sockets), "a socket left open"


def test_a_bad_key_closes_its_connection_too(fake, make_client, sockets):
    c = make_client(api_key="not-the-key")
    with pytest.raises(sb.AuthenticationError):
        c.get_results([1])
    c.close()
    assert sockets and all(s.fileno() == -1 for s in sockets)


# -- answers the API breaks ----------------------------------------------------------------------------

def test_an_answer_that_breaks_off_every_time_says_so(fake, client, sleeps):
    fake.bulk_faults += [("short",)] * 5
    out = client.get_results([1])
    assert out[1].status == "missing"
    assert "cut short" in out[1].error
    assert len(fake.seen("api")) == 5
    assert [w for w in sleeps.waits if w] == [0.5, 1.0, 2.0, 4.0]  # backoff, rand 0.5: no jitter


def test_retry_after_with_spaces_is_obeyed(fake, client, sleeps):
    fake.add_run(1)
    fake.bulk_faults.append(("status", 429, [("Retry-After", " 7 ")]))
    assert client.get_results([1])[1].status == "ready"
    assert [w for w in sleeps.waits if w] == [7.0]


# -- the storage's answers -------------------------------------------------------------------------------

def sha(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("status", [500, 502, 504])
def test_storage_5xx_is_retried_after_a_backoff(fake, client, sleeps, tmp_path, status):
    fake.add_run(5, size=5000)
    fake.storage_faults[5] = [("status", status), ("status", status)]
    path, size = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, 5000)
    assert len(fake.seen("storage")) == 3
    assert [w for w in sleeps.waits if w] == [0.5, 1.0]
    assert len(fake.seen("api")) == 1  # the URL was fine: not asked for again


def test_storage_5xx_every_time_gives_up_after_max_attempts(fake, client, tmp_path):
    fake.add_run(5, size=5000)
    fake.storage_faults[5] = [("status", 500)] * 9
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path))
    assert "HTTP 500 from storage" in str(info.value) and "after 5 tries" in str(info.value)
    assert len(fake.seen("storage")) == 5
    assert os.listdir(str(tmp_path)) == []


def test_storage_400_is_an_error_at_once_with_its_text(fake, client, tmp_path):
    fake.add_run(5, size=5000)
    fake.storage_faults[5] = [("status", 400, b"<Error><Code>InvalidArgument</Code></Error>")]
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path))
    assert "HTTP 400 from storage" in str(info.value) and "InvalidArgument" in str(info.value)
    assert len(fake.seen("storage")) == 1 and len(fake.seen("api")) == 1
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("status,body", [
    (401, b"<Error><Code>AccessDenied</Code></Error>"),
    (403, b"<Error><Code>AccessDenied</Code></Error>"),
    (400, b"<Error><Message>Request has expired</Message></Error>"),
])
def test_storage_refusal_gets_a_fresh_url(fake, client, tmp_path, status, body):
    fake.add_run(5, size=5000)
    fake.storage_faults[5] = [("status", status, body)]
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, 5000)
    assert len(fake.seen("api")) == 2  # the first URL, and a fresh one
    urls = [r["path"] for r in fake.seen("storage")]
    assert len(urls) == 2 and urls[0] != urls[1]


def test_storage_refusing_every_url_gives_up_after_two_fresh_ones(fake, client, tmp_path):
    fake.add_run(5, size=5000)
    fake.storage_faults[5] = [("status", 403)] * 5
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path))
    assert "2 fresh URLs did not help" in str(info.value) and "does not say the URL expired" in str(info.value)
    assert len(fake.seen("api")) == 3 and len(fake.seen("storage")) == 3


def test_a_206_without_content_range_is_not_appended(fake, client, tmp_path):
    fake.add_run(5, size=300_000)
    fake.storage_faults[5] = ["truncate", "no_content_range"]
    path, size = client.download(5, str(tmp_path))
    assert size == 300_000 and sha(path) == body_sha256(5, 300_000)
    ranges = [r["headers"].get("range") for r in fake.seen("storage")]
    assert ranges[0] is None and ranges[1] == "bytes=150000-" and ranges[2] is None  # then from the start
    assert len(ranges) == 3


# -- https to plain http --------------------------------------------------------------------------------

@pytest.fixture
def tls_fake(tmp_path):
    """The fake over TLS, with a client-side context that trusts its self-made certificate."""
    import ssl
    import subprocess
    from fake_api import FakeCamb, tls_context
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.check_call(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                           "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with FakeCamb(tls=tls_context(cert, key)) as f:
        f.trust = ssl.create_default_context(cafile=cert)
        yield f


def test_a_redirect_from_https_to_plain_http_elsewhere_is_refused(tls_fake, sleeps, monkeypatch):
    plain = []
    real_connect = http.client.HTTPConnection.connect

    def connect(self):  # plain http is recorded and refused, so nothing leaves this machine
        if isinstance(self, http.client.HTTPSConnection):
            return real_connect(self)
        plain.append((self.host, self.port))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(http.client.HTTPConnection, "connect", connect)
    tls_fake.bulk_faults.append(("redirect", 307, "http://api.example/apis/text-to-sound-results"))
    c = sb.Client(API_KEY, base_url=tls_fake.base_url, ssl_context=tls_fake.trust, sleep=sleeps)
    out = c.get_results([1])
    assert "refusing a redirect from https to plain http: http://api.example/" in out[1].error
    assert plain == [] and len(tls_fake.seen("api")) == 1  # not followed, not retried
    c.close()


# -- what a download asks for ---------------------------------------------------------------------------

def test_the_storage_is_asked_for_the_bytes_as_they_are(fake, client, tmp_path):
    fake.add_run(5, size=3000)
    client.download(5, str(tmp_path))
    (get,) = fake.seen("storage", "GET")
    assert get["headers"]["accept"] == "*/*" and get["headers"]["accept-encoding"] == "identity"
    assert get["headers"]["user-agent"].startswith("sound_bulk/")
    assert "x-api-key" not in get["headers"]


def test_a_download_url_that_is_not_http_is_refused_with_the_run_named(fake, client, tmp_path):
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path), url="ftp://files.example/a.wav?X-Amz-Signature=secret")
    assert str(info.value).startswith("run 5: not an http(s) URL: ftp://files.example/a.wav")
    assert "secret" not in str(info.value)
    assert fake.requests == [] and os.listdir(str(tmp_path)) == []


# -- how big an API answer may be -----------------------------------------------------------------

def _results_answer(padding, framing):
    """A bulk answer for run 1 (ready) padded to a chosen size, framed by Content-Length, in chunks, or by
    the end of the connection."""
    body = ('{"1": {"output_url": "http://127.0.0.1:9/a.wav", "pad": "%s"}}' % ("x" * padding)).encode()
    if framing == "length":
        return body, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    if framing == "close":
        return body, (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body,)
    pieces = [body[i:i + 70001] for i in range(0, len(body), 70001)]
    raw = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return body, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + raw


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_api_answer_of_exactly_the_size_limit_is_read_whole(hostile, make, monkeypatch, framing):
    """Up to MAX_JSON_BYTES is taken, however the answer is framed; 300 KB bodies come in many reads."""
    body, raw = _results_answer(300000, framing)
    monkeypatch.setattr(sb, "MAX_JSON_BYTES", len(body))
    hostile.handler = lambda method, path, sent: raw
    out = make().get_results([1])
    assert out[1].status == "ready" and out[1].url == "http://127.0.0.1:9/a.wav"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_api_answer_one_byte_over_the_limit_is_refused_and_not_asked_again(hostile, make, monkeypatch,
                                                                               framing):
    body, raw = _results_answer(300000, framing)
    monkeypatch.setattr(sb, "MAX_JSON_BYTES", len(body) - 1)
    hostile.handler = lambda method, path, sent: raw
    out = make().get_results([1])
    assert out[1].status == "missing"
    assert "larger than %d bytes" % (len(body) - 1) in out[1].error
    assert len(hostile.seen) == 1, "a too-big answer is not worth a second try"


def test_an_api_answer_announced_over_the_limit_is_refused_unread(hostile, make, monkeypatch):
    """A Content-Length over MAX_JSON_BYTES is refused before a byte of the body is read (so a server that
    announces 16 GB is not waited for), and not asked again."""
    monkeypatch.setattr(sb, "MAX_JSON_BYTES", 1000)
    hostile.handler = lambda method, path, sent: b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n{\"1\":"
    out = make(timeout=3).get_results([1])  # the server then waits: a read of the body would time out
    assert out[1].status == "missing" and "larger than 1000 bytes" in out[1].error, out[1].error
    assert len(hostile.seen) == 1


def test_a_chunked_answer_that_breaks_off_counts_every_byte_it_gave(hostile, make, monkeypatch):
    """The error of a chunked answer cut off after 300,000 bytes says 300000, though they came in several
    reads (not only what the last read got)."""
    body = b'{"1": {"output_url": "http://127.0.0.1:9/a.wav", "pad": "' + b"x" * 299950
    raw = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50000]), body[i:i + 50000])
                   for i in range(0, len(body), 50000))
    hostile.handler = lambda method, path, sent: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + raw,)
    out = make(max_attempts=1).get_results([1])
    assert out[1].status == "missing" and "%d bytes read" % len(body) in out[1].error, out[1].error
