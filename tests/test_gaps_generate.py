"""generate, through its public function and the Client's sleep/clock seams (no real waiting)."""

import json
import os

import sound_bulk as sb


def test_a_pending_task_is_polled_with_growing_pauses_until_it_succeeds(fake, make_client, sleeps, tmp_path):
    fake.task_plan.append(("success", 2))  # PENDING twice, then SUCCESS
    out = sb.generate(make_client(), ["rain"], str(tmp_path), wait=60)
    assert out[0].status == "saved" and os.path.isfile(out[0].path)
    assert [t["polls"] for t in fake.tasks.values()] == [3]
    pauses = [w for w in sleeps.waits if w]
    assert len(pauses) == 2 and pauses[0] == sb.POLL_INITIAL and pauses[1] > pauses[0]


def test_pauses_between_polls_grow_to_poll_max_and_stay_there(fake, make_client, sleeps, tmp_path):
    fake.task_plan.append(("success", 12))
    out = sb.generate(make_client(), ["rain"], str(tmp_path), wait=600)
    assert out[0].status == "saved"
    pauses = [w for w in sleeps.waits if w]
    assert pauses[0] == 1.0 and max(pauses) == 15.0  # POLL_INITIAL, POLL_MAX
    assert pauses == sorted(pauses) and pauses[-3:] == [15.0] * 3


def test_a_poll_that_fails_is_tried_again_and_each_prompt_gets_its_own_run(fake, make_client, tmp_path):
    fake.poll_faults.append(500)
    out = sb.generate(make_client(max_attempts=1), ["wind", "waves"], str(tmp_path), wait=600, workers=1)
    assert [o.status for o in out] == ["saved", "saved"]
    by_prompt = {t["prompt"]: t["run_id"] for t in fake.tasks.values()}
    assert [o.run_id for o in out] == [by_prompt["wind"], by_prompt["waves"]]
    assert len({o.path for o in out}) == 2 and all(os.path.isfile(o.path) for o in out)


def test_project_fields_reach_every_task_request(fake, make_client, tmp_path):
    fake.default_task_plan = ("success", 0)
    sb.generate(make_client(), ["a", "b"], str(tmp_path), project_name="film", project_description="reel 2",
                folder_id=7)
    bodies = [json.loads(r["body"]) for r in fake.seen("api", "POST") if r["path"] == "/apis/text-to-sound"]
    assert len(bodies) == 2
    assert all((b["project_name"], b["project_description"], b["folder_id"]) == ("film", "reel 2", 7) for b in bodies)


def test_a_200_without_task_id_is_an_error_and_is_not_paid_again(fake, make_client, tmp_path):
    fake.create_faults.append(("answer", {"id": "x"}))
    out = sb.generate(make_client(), ["z"], str(tmp_path))
    assert out[0].status == "error" and "did not return a task_id" in out[0].error
    again = sb.generate(make_client(), ["z"], str(tmp_path))
    assert again[0].status == "error" and "--resubmit" in again[0].error
    assert len(fake.tasks) == 1


def test_success_without_run_id_is_a_failed_prompt(fake, make_client, tmp_path):
    fake.task_plan.append(("answer", 0, {"status": "SUCCESS", "run_id": None}))
    out = sb.generate(make_client(), ["y"], str(tmp_path))
    assert out[0].status == "failed" and out[0].error == "the task succeeded but the API gave no run_id"
    assert os.listdir(str(tmp_path)) == [sb.MANIFEST_NAME]


def test_a_failed_task_is_not_asked_about_again_on_a_rerun(fake, make_client, tmp_path):
    fake.task_plan.append(("error", 0, "prompt violates policy"))
    out = sb.generate(make_client(), ["bad"], str(tmp_path))
    assert out[0].status == "failed" and out[0].error == "prompt violates policy"
    fake.reset_counts()
    again = sb.generate(make_client(), ["bad"], str(tmp_path))
    assert again[0].status == "failed" and again[0].error == "prompt violates policy"
    assert fake.requests == [] and len(fake.tasks) == 1  # nothing paid, nothing asked


def test_a_run_not_ready_when_its_task_ends_is_asked_for_again(fake, make_client, sleeps, tmp_path):
    fake.task_plan.append(("answer", 0, {"status": "SUCCESS", "run_id": 777}))
    fake.add_run(777, size=2048, ready_after=1)
    out = sb.generate(make_client(), ["late"], str(tmp_path))
    assert (out[0].status, out[0].run_id) == ("saved", 777) and os.path.isfile(out[0].path)
    bulk = [json.loads(r["body"])["run_ids"] for r in fake.seen("api", "POST", "/apis/text-to-sound-results")]
    assert bulk == [[777], [777]]
    assert len(fake.seen("api", "GET")) == 1  # the task was asked about once


def test_manifest_lines_say_when_a_task_was_submitted_and_created(fake, make_client, tmp_path):
    """Timing assumed: none beyond the wall clock moving forward by less than an hour during the test."""
    import time
    fake.default_task_plan = ("success", 0)
    before = time.time()
    sb.generate(make_client(), ["rain"], str(tmp_path))
    with open(str(tmp_path / sb.MANIFEST_NAME)) as f:
        records = [json.loads(line) for line in f]
    stamped = [r for r in records if r["event"] in ("submitting", "created")]
    assert [r["event"] for r in stamped] == ["submitting", "created"]
    assert all(before - 1 <= r["time"] <= before + 3600 for r in stamped)


def test_a_rerun_after_the_file_was_removed_downloads_again_without_asking_about_the_task(fake, make_client,
                                                                                         tmp_path):
    fake.default_task_plan = ("success", 0)
    out = sb.generate(make_client(), ["rain"], str(tmp_path))
    os.unlink(out[0].path)
    fake.reset_counts()
    again = sb.generate(make_client(), ["rain"], str(tmp_path))
    assert (again[0].status, again[0].run_id) == ("saved", out[0].run_id) and os.path.isfile(again[0].path)
    assert fake.seen("api", "GET") == [] and len(fake.tasks) == 1  # the manifest knew the run
