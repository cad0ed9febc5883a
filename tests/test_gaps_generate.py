"""generate, through its public function and the Client's sleep/clock seams (no real waiting)."""

import os

import sound_bulk as sb


def test_a_pending_task_is_polled_with_growing_pauses_until_it_succeeds(fake, make_client, sleeps, tmp_path):
    fake.task_plan.append(("success", 2))  # PENDING twice, then SUCCESS
    out = sb.generate(make_client(), ["rain"], str(tmp_path), wait=60)
    assert out[0].status == "saved" and os.path.isfile(out[0].path)
    assert [t["polls"] for t in fake.tasks.values()] == [3]
    pauses = [w for w in sleeps.waits if w]
    assert len(pauses) == 2 and pauses[0] == sb.POLL_INITIAL and pauses[1] > pauses[0]
