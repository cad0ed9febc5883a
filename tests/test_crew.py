"""The engine's thread crews: a burst of work gets as many threads as it needs, up to the crew's size."""

import threading
import time

import sound_bulk as sb


def test_a_burst_of_work_is_not_left_to_one_woken_thread():
    """Timing assumed: a thread starts and runs within 10 s (items 2 and 3 hold theirs up to 30 s).
    One thread finishes item 1 and waits for more; then items 2 and 3 arrive together, before that thread
    has woken.  Both must be worked on at once (the crew may start a second thread).  Before, the woken
    thread was counted as idle for both, no thread was started, and item 3 waited for item 2: downloads
    of a fetch ran one after another (a flaky CI failure of test_interrupt_by_sigterm_ends_the_run_like_
    ctrl_c, which needs two at once)."""
    inbox = sb._Inbox()
    started, release = [], threading.Event()

    def work(item):
        started.append(item)
        if item != 1:
            release.wait(30)
        return item

    crew = sb._Crew("transfer", 3, work, inbox)
    crew._cond = threading.Condition(threading.RLock())  # so that this test can hold it across two puts
    try:
        crew.put(1)
        assert [item for _kind, item, _result, _error in inbox.take(10)] == [1]
        deadline = time.monotonic() + 10
        while crew._idle != 1 and time.monotonic() < deadline:  # the thread waits for more work
            time.sleep(0.001)
        with crew._cond:  # the woken thread cannot run until both are queued: the burst
            crew.put(2)
            crew.put(3)
        deadline = time.monotonic() + 10
        while len(started) < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert sorted(started) == [1, 2, 3]  # 2 and 3 under way together
        assert len(crew._threads) == 2
    finally:
        release.set()
        crew.close()
        crew.join()


def test_a_crew_never_grows_past_its_size_nor_starts_threads_it_does_not_need():
    inbox = sb._Inbox()
    release = threading.Event()
    crew = sb._Crew("transfer", 2, lambda item: release.wait(10), inbox)
    try:
        for item in range(5):
            crew.put(item)
        assert len(crew._threads) == 2
    finally:
        release.set()
        crew.close()
        crew.join()
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        got += inbox.take(0.1)
    assert sorted(item for _kind, item, _result, _error in got) == [0, 1, 2, 3, 4]
