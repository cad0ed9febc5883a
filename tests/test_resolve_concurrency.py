"""get_results (and so the `urls` command) makes its bulk calls concurrently, up to api_concurrency, after a
first call alone (issue 9: resolution must keep up at real latency, not one round trip per 5 IDs)."""

import pytest

import sound_bulk as sb
from conftest import hold_api_calls


def test_bulk_calls_after_the_first_run_concurrently_up_to_the_limit(fake, make_client):
    """55 IDs = 11 calls: the first alone, then 4 at once (api_concurrency=4) held until all 4 are in the
    server; one at a time, each would wait 3 s and the peak would be 1."""
    ids = list(range(1, 56))
    fake.add_runs(ids[:50])
    hold_api_calls(fake, 4, skip=1, wait=3)
    out = make_client(api_concurrency=4).get_results(ids)
    assert list(out) == ids  # request order, whatever order the answers came in
    assert [out[i].status for i in (1, 25, 50, 51, 55)] == ["ready"] * 3 + ["missing"] * 2
    assert fake.api_peak == 4
    assert sorted(i for r in fake.seen("api") for i in sb._json().loads(r["body"])["run_ids"]) == ids


def test_a_rejected_key_in_a_later_call_is_raised_not_lost(fake, make_client):
    """A 401 met by any of the concurrent calls ends get_results with AuthenticationError (a thread that
    swallowed it would leave its chunk's IDs out of the answer)."""
    fake.add_runs(range(1, 41))
    fake.bulk_faults += [None, ("status", 401, [], b'{"detail": "Invalid API key"}')]
    with pytest.raises(sb.AuthenticationError):
        make_client(api_concurrency=3).get_results(range(1, 41))
