"""Pure functions: run-ID validation, chunking, response parsing, audio sniffing, retry waits."""

import email.utils
import json

import pytest
from hypothesis import example, given, strategies as st

import sound_bulk as sb
from conftest import any_text, property_scenario

MAX = 2 ** 63 - 1


# -- validate_run_ids -------------------------------------------------------------

def test_validate_accepts_ints_and_digit_strings_in_order_without_repeats():
    assert sb.validate_run_ids([5, " 12 ", "7", 5, "0005", 12]) == [5, 12, 7]


def test_validate_lone_value_is_one_id():
    assert sb.validate_run_ids("42") == [42]
    assert sb.validate_run_ids(42) == [42]


@pytest.mark.parametrize("bad", [True, False, 1.0, 0, -3, "", " ", "12a", "1e3", "-5", "+5", "٣", "²",
                                 MAX + 1, str(MAX + 1), None, b"12", [1], "1 2"])
def test_validate_rejects(bad):
    with pytest.raises(sb.InvalidRunIdError) as info:
        sb.validate_run_ids([1, bad])
    assert info.value.invalid == [bad]
    assert isinstance(info.value, ValueError) and isinstance(info.value, sb.SoundBulkError)


def test_validate_names_every_bad_value_once():
    with pytest.raises(sb.InvalidRunIdError) as info:
        sb.validate_run_ids(["x", 3, -1, "y"])
    assert info.value.invalid == ["x", -1, "y"]
    for shown in ("'x'", "-1", "'y'"):
        assert shown in str(info.value)


def test_validate_empty_is_an_error():
    with pytest.raises(sb.InvalidRunIdError, match="no run IDs"):
        sb.validate_run_ids([])


def test_validate_boundaries():
    assert sb.validate_run_ids([1, MAX, str(MAX)]) == [1, MAX]


def _valid_value(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 1 <= v <= MAX else None
    if isinstance(v, str):
        t = v.strip()
        if t and all(c in "0123456789" for c in t):
            n = int(t)
            return n if 1 <= n <= MAX else None
    return None


id_like = st.one_of(
    st.integers(min_value=-10, max_value=MAX + 10),
    st.integers(min_value=1, max_value=50),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.sampled_from("0123456789 \t-+x٣"), max_size=22).map("".join),
    st.integers(min_value=1, max_value=50).map(lambda n: " %d " % n),
    st.none(),
)


@given(st.lists(id_like, max_size=20))
@example([7, " 7 ", 3, 7])  # repeats, however written, are kept once (drawn too seldom: 2-4 runs in 10 on 3.6)
@example([1, 1])
def validate_accepts_exactly_the_valid_set(values):
    expected_values = [_valid_value(v) for v in values]
    if values and all(v is not None for v in expected_values):
        out = sb.validate_run_ids(values)
        dedup = []
        for v in expected_values:
            if v not in dedup:
                dedup.append(v)
        assert out == dedup
    else:
        with pytest.raises(sb.InvalidRunIdError) as info:
            sb.validate_run_ids(values)
        assert len(info.value.invalid) == sum(1 for v in expected_values if v is None)


@pytest.mark.early(scenario=property_scenario(validate_accepts_exactly_the_valid_set))
def test_validate_accepts_exactly_the_valid_set(early):
    """The property above, run as an early scenario (conftest): pure computation, among the longest tests."""
    early()  # fails the test with the property's failure, if any


# -- chunked ----------------------------------------------------------------------

@given(st.lists(st.integers()), st.integers(min_value=1, max_value=5))
def chunked_concatenation_is_input(items, size):
    chunks = sb.chunked(items, size)
    assert [x for c in chunks for x in c] == items
    assert all(1 <= len(c) <= size for c in chunks)
    assert all(len(c) == size for c in chunks[:-1])


@pytest.mark.early(scenario=property_scenario(chunked_concatenation_is_input))
def test_chunked_concatenation_is_input(early):
    """The property above, run as an early scenario (conftest)."""
    early()  # fails the test with the property's failure, if any


@pytest.mark.parametrize("size", [0, 6, -1, 2.5, True, "5"])
def test_chunked_rejects_bad_size(size):
    with pytest.raises(ValueError):
        sb.chunked([1, 2], size)


def test_chunked_default_is_five():
    assert [len(c) for c in sb.chunked(range(12))] == [5, 5, 2]


# -- parse_results -------------------------------------------------------------------

U = "https://storage.example/bucket/a.wav?X-Amz-Signature=abc"


@pytest.mark.parametrize("value,status", [
    ({"output_url": U}, "ready"),
    ({"output_url": U, "extra": 1, "status": "SUCCESS"}, "ready"),
    (U, "ready"),
    ({}, "pending"),
    ({"output_url": None}, "pending"),
    ({"output_url": ""}, "pending"),
    ({"status": "PENDING"}, "pending"),
    ({"status": "pending", "output_url": U}, "pending"),
    (None, "pending"),
    ("PENDING", "pending"),
    ({"status": "ERROR", "message": "boom"}, "failed"),
    ({"status": "FAILED"}, "failed"),
    ({"error": "prompt rejected"}, "failed"),
    ({"exception_reason": "nsfw"}, "failed"),
    ({"output_url": "ftp://x/y"}, "missing"),
    ({"output_url": 12}, "missing"),
    ({"output_url": "not a url"}, "missing"),
    (17, "missing"),
    ([U], "missing"),
    ("surprise", "missing"),
])
def test_parse_entry_shapes(value, status):
    out = sb.parse_results({"9": value}, [9])
    assert out[9].status == status
    assert (out[9].url is not None) == (status == "ready")
    assert out[9].raw == value
    if status == "failed":
        assert out[9].error


def test_parse_failed_keeps_reason():
    out = sb.parse_results({"9": {"status": "ERROR", "message": "model overloaded"}}, [9])
    assert out[9].error == "model overloaded"


def test_parse_absent_key_is_missing_and_extra_keys_ignored():
    out = sb.parse_results({"1": {"output_url": U}, "77": {"output_url": U}}, [1, 2])
    assert set(out) == {1, 2}
    assert out[1].status == "ready" and out[1].url == U
    assert out[2].status == "missing" and out[2].error is None


@pytest.mark.parametrize("body", [[{"1": {"output_url": U}}], "x", 3, None, True])
def test_parse_body_not_object_is_an_error_per_run(body):
    out = sb.parse_results(body, [1, 2])
    assert [r.status for r in out.values()] == ["missing", "missing"]
    assert all("not a JSON object" in r.error for r in out.values())


def test_run_result_repr_hides_signature():
    r = sb.parse_results({"1": {"output_url": U}}, [1])[1]
    assert "abc" not in repr(r) and "storage.example/bucket/a.wav" in repr(r)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text(30)
    | st.sampled_from([U, "http://h/x", "PENDING", "ERROR", ""]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["output_url", "status", "error", "message", "1", "2", "3", "x"]) | any_text(5),
        kids, max_size=5),
    max_leaves=8)


@given(json_values, st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5, unique=True))
def parse_never_crashes_and_answers_every_id(body, ids):
    out = sb.parse_results(body, ids)
    assert list(out) == ids
    for rid, r in out.items():
        assert r.run_id == rid
        assert r.status in ("ready", "pending", "failed", "missing")
        if r.status == "ready":
            assert r.url.startswith(("http://", "https://"))
        else:
            assert r.url is None


@pytest.mark.early(scenario=property_scenario(parse_never_crashes_and_answers_every_id))
def test_parse_never_crashes_and_answers_every_id(early):
    """The property above, run as an early scenario (conftest)."""
    early()  # fails the test with the property's failure, if any


@given(st.dictionaries(st.integers(min_value=1, max_value=9).map(str), json_values, max_size=4),
       st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=5, unique=True))
def parse_object_bodies_through_json_round_trip(body, ids):
    out = sb.parse_results(json.loads(json.dumps(body)), ids)
    assert list(out) == ids
    for rid in ids:
        if str(rid) not in body:
            assert out[rid].status == "missing"


@pytest.mark.early(scenario=property_scenario(parse_object_bodies_through_json_round_trip))
def test_parse_object_bodies_through_json_round_trip(early):
    """The property above, run as an early scenario (conftest)."""
    early()  # fails the test with the property's failure, if any


# -- sniff_audio ------------------------------------------------------------------------

@pytest.mark.parametrize("head,ext", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", ".wav"),
    (b"RF64\xff\xff\xff\xffWAVEds64", ".wav"),
    (b"fLaC\x00\x00\x00\x22", ".flac"),
    (b"OggS\x00\x02\x00\x00", ".ogg"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x10", ".mp3"),  # the tag goes on past the head
    (b"\xff\xfb\x90\x00" + bytes(413), ".mp3"),  # one whole frame (more in test_integrity.py)
    (b"\xff\xfb\x90\x00", None),  # a frame header alone is not audio
    (b"<!DOCTYPE html><html>", None),
    (b"<?xml version='1.0'?><Error>", None),
    (b'{"detail": "x"}', None),
    (b"RIFF\x24\x00\x00\x00AVI LIST", None),
    (b"\xff\xf1\x50\x80", None),  # AAC ADTS cut short (test_integrity.py has whole frames)
    (b"", None),
])
def test_sniff_audio(head, ext):
    assert sb.sniff_audio(head) == ext


# -- retry waits ---------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize("headers,wait", [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": email.utils.formatdate(NOW + 12, usegmt=True)}, 12.0),
    ({"retry-after": email.utils.formatdate(NOW - 50, usegmt=True)}, 0.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"x-ratelimit-reset": str(int(NOW + 4))}, 4.0),
    ({"retry-after": "soon"}, 0.5),  # unreadable: backoff
    ({}, 0.5),
])
def test_retry_wait_headers(headers, wait):
    assert sb.retry_wait(headers, 0, now=NOW, rand=lambda: 0.5) == pytest.approx(wait)


def test_backoff_doubles_with_bounded_jitter_and_cap():
    assert [sb.backoff(a, lambda: 0.5) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert sb.backoff(30, lambda: 0.5) == sb.BACKOFF_MAX
    assert sb.backoff(2, lambda: 0.0) == pytest.approx(1.8)
    assert sb.backoff(2, lambda: 1.0) == pytest.approx(2.2)
