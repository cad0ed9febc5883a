"""Pure functions at their edges: the cases a mutation run showed no test held (tools/mutate.py)."""

import email.utils
import time

import pytest
from hypothesis import example, given, strategies as st

import sound_bulk as sb

U = "https://storage.example/bucket/a.wav?X-Amz-Signature=abc"
NOW = 1_700_000_000.0


# -- validate_run_ids --------------------------------------------------------------------------

def test_validate_names_at_most_20_bad_values_and_counts_the_rest():
    with pytest.raises(sb.InvalidRunIdError) as info:
        sb.validate_run_ids(["x%d" % i for i in range(25)])
    text = str(info.value)
    assert "'x19'" in text and "'x20'" not in text and "and 5 more" in text
    assert len(info.value.invalid) == 25
    with pytest.raises(sb.InvalidRunIdError) as info:
        sb.validate_run_ids(["x%d" % i for i in range(20)])
    assert "'x19'" in str(info.value) and "more" not in str(info.value)


def test_validate_something_that_is_not_a_list_says_so():
    with pytest.raises(sb.InvalidRunIdError, match="must be given as a list, not float"):
        sb.validate_run_ids(3.5)
    with pytest.raises(sb.InvalidRunIdError) as info:
        sb.validate_run_ids(b"12")  # bytes are one value, and not a run ID
    assert info.value.invalid == [b"12"]


def test_validate_digit_strings_up_to_40_characters():
    assert sb.validate_run_ids(["0" * 39 + "7"]) == [7]
    with pytest.raises(sb.InvalidRunIdError):
        sb.validate_run_ids(["0" * 40 + "7"])


# -- chunked ------------------------------------------------------------------------------------

def test_chunked_sizes_one_and_five_are_allowed_and_the_message_names_the_range():
    assert sb.chunked([1, 2, 3], 1) == [[1], [2], [3]]
    assert sb.chunked(range(1, 7), 5) == [[1, 2, 3, 4, 5], [6]]
    assert sb.chunked([], 5) == []
    with pytest.raises(ValueError, match="from 1 to 5, not 6"):
        sb.chunked([1], 6)


# -- parse_results ------------------------------------------------------------------------------

@pytest.mark.parametrize("value,error", [
    ("surprise", "unexpected entry 'surprise'"),
    (17, "unexpected entry of type a number"),
    ([U], "unexpected entry of type a list"),
    (" failed ", "the service reports status FAILED"),
    ({"status": "FAILED"}, "the service reports status FAILED"),
    ({"status": "ERROR", "detail": {"code": 7}}, "{'code': 7}"),
    ({"status": "ERROR", "error": " quota exceeded ", "message": "m"}, "quota exceeded"),
    ({"exception_reason": "nsfw", "message": "m"}, "nsfw"),
    ({"error_message": "bad prompt"}, "bad prompt"),
    ({"output_url": "nope"}, "output_url is not an http(s) URL: 'nope'"),
])
def test_parse_says_why_a_run_is_failed_or_missing(value, error):
    assert sb.parse_results({"9": value}, [9])[9].error == error


def test_parse_a_long_reason_is_cut_to_500_characters():
    out = sb.parse_results({"9": {"status": "ERROR", "message": "x" * 900}}, [9])
    assert out[9].error == "x" * 500


@pytest.mark.parametrize("value", [
    " %s " % U,
    {"output_url": " %s\n" % U},
    {"output_url": U, "status": " success "},
    {"output_url": U, "error": ""},
    {"output_url": U, "error": None, "status": "SUCCESS"},
    {"output_url": U, "status": "SUCCESS", "error": "ignored once it succeeded"},
])
def test_parse_ready_urls_come_back_trimmed(value):
    out = sb.parse_results({"9": value}, [9])
    assert out[9].status == "ready" and out[9].url == U


@pytest.mark.parametrize("value", [" pending ", "", "   ", {"status": " running "},
                                   {"status": "queued", "output_url": U}])
def test_parse_pending_words_in_any_case(value):
    assert sb.parse_results({"9": value}, [9])[9].status == "pending"


@pytest.mark.parametrize("url", ["http://", "https:///path", "https://h/a b", "https://h/a\x00", "https://h/a\x1fb",
                                 "https://h/a\u00a0b", "https://h/a\u2028b", "https://h/a\u3000b", "mailto:x@y"])
def test_parse_urls_without_a_host_or_with_spaces_are_not_ready(url):
    out = sb.parse_results({"9": {"output_url": url}}, [9])
    assert out[9].status == "missing" and "not an http(s) URL" in out[9].error


def test_parse_keys_are_run_ids_written_any_way_and_the_first_wins():
    out = sb.parse_results({" 09": {"output_url": U}, "9": {"status": "PENDING"}, "x": 1}, [9])
    assert out[9].status == "ready"
    assert sb.parse_results({9: {"output_url": U}}, [9])[9].status == "missing"  # JSON keys are strings


def test_parse_a_body_that_is_not_an_object_names_its_kind():
    assert sb.parse_results([1], [9])[9].error == "the response is not a JSON object (it is a list)"
    assert "(it is null)" in sb.parse_results(None, [9])[9].error


# -- retry waits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers,wait", [
    ({"retry-after": " 7 "}, 7.0),
    ({"retry-after": "0"}, 0.0),
    ({"retry-after-ms": "1500", "retry-after": "7"}, 1.5),  # the finer one first
    ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
    ({"retry-after-ms": "-20"}, 0.0),
    ({"retry-after": "Tue, 14 Nov 2023 22:13:32 -0000"}, 12.0),  # no zone: read as UTC
    ({"retry-after": "\u00b2"}, 0.5),  # a digit to str.isdigit, not a number of seconds
    ({"x-ratelimit-reset": str(NOW - 5)}, 0.5),  # in the past: backoff
    ({"x-ratelimit-reset": "soon"}, 0.5),
    ({"retry-after": "soon", "x-ratelimit-reset": str(NOW + 3)}, 3.0),
])
def test_retry_wait_more_headers(headers, wait):
    assert sb.retry_wait(headers, 0, now=NOW, rand=lambda: 0.5) == pytest.approx(wait)


def test_retry_wait_defaults_to_the_real_clock_and_random_jitter():
    """Timing assumed: fewer than 30 s pass between making the date and reading it."""
    date = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 69 <= sb.retry_wait({"retry-after": date}, 0) <= 100
    waits = [sb.retry_wait({}, 3) for _ in range(50)]
    assert all(3.6 <= w <= 4.4 for w in waits) and len(set(waits)) > 1
    assert sb.retry_wait(None, 1, rand=lambda: 0.5) == 1.0


def test_backoff_values_up_to_the_cap():
    assert [sb.backoff(a, lambda: 0.5) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert sb.backoff(6, lambda: 1.0) == pytest.approx(33.0)  # the jitter applies to the capped value


# -- _redact_key: the redactor's search for a cut-off piece of the key --------------------------------

def _redact_key_by_the_book(text, key, mark):
    """What _redact_key must give, the slow way: every length of a piece at either end is tried."""
    text = text.replace(key, mark)
    for n in range(len(key) - 1, sb._MIN_KEY_FRAGMENT - 1, -1):
        if text.endswith(key[:n]):
            text = text[:len(text) - n] + mark
            break
    for n in range(len(key) - 1, sb._MIN_KEY_FRAGMENT - 1, -1):
        if text.startswith(key[len(key) - n:]):
            text = mark + text[n:]
            break
    return text


_KEYS = ["sk-probe-0123456789abcdefSECRET", "abcabcabcabc", "k" * 7, "short", "x" * 40]


@given(st.sampled_from(_KEYS), st.lists(st.one_of(
    st.integers(0, 40).map(lambda n: ("prefix", n)), st.integers(0, 40).map(lambda n: ("suffix", n)),
    st.sampled_from(["", " ", "abc", "SECRET", "\u00e9", "x" * 37, "k", "0123"]).map(lambda t: ("text", t))),
    max_size=6))
@example(_KEYS[0], [("text", "abc"), ("prefix", 30)])  # all but the key's last character, at the end
@example(_KEYS[0], [("suffix", 30), ("text", "abc")])  # all but its first, at the start
@example(_KEYS[0], [("text", "x" * 37), ("prefix", 6)])  # the shortest piece hidden, after a long text
@example(_KEYS[0], [("suffix", 6), ("text", "x" * 37)])
@example(_KEYS[0], [("text", "abc"), ("prefix", 5)])  # five characters say nothing and stay
def test_redact_key_finds_every_piece_the_slow_search_finds(key, parts):
    """The quick guard before each search (the key's first or last six characters near that end) never
    skips a piece the full search would hide: same output, str and bytes, for texts made of pieces of
    the key (whole, or cut at any length from either end) and other text, short and long."""
    text = "".join(key[:n] if kind == "prefix" else key[len(key) - n:] if kind == "suffix" else n
                   for kind, n in parts)
    assert sb._redact_key(text, key, "<r>") == _redact_key_by_the_book(text, key, "<r>")
    raw, secret = text.encode("utf-8"), key.encode("ascii")
    assert sb._redact_key(raw, secret, b"<r>") == _redact_key_by_the_book(raw, secret, b"<r>")
