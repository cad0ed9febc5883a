"""The suite on two cores: a pytest plugin (registered by conftest) that shares the tests between pytest's
process and a forked copy of it.

After collection (the long tests, marked early, come last: conftest), pytest's process takes tests from the
front of the list, in order, as its loop reaches them, and the forked copy (the worker) takes them from
the back, one at a time, until the two meet.  So the long tests start at once on the other core, and both
cores stay busy to the end whatever each test costs.  A claim is made under a lock (one token in a pipe) on
counters in shared memory.

The worker runs each test it takes through pytest's whole protocol (fixtures, capture, warnings) and
records what pytest reports (each report as pytest serializes it for other processes, and the warnings)
in a file both processes hold open and nobody can see (unlinked: nothing is left on disk, whatever
happens).  When pytest's loop here reaches a test the worker took, it waits for that record and hands the
reports to pytest as if the test had run here: the terminal, `--durations`, `-x` and the exit status see
every test, in collection order.

If the worker ends without a test's record (it crashed, or was killed), this process runs every test
without a record itself, as it would have without the worker.  There is no worker without `os.fork`, on
one core, with threads already running, for fewer than 40 tests, with output not captured (`-s`), with
`--pdb`, or with SOUND_BULK_EARLY=0 (then everything runs in one process).  The worker stays in pytest's
process group, so whatever stops that group (a Ctrl-C at the terminal, tools/mutate.py's timeout) stops
it too; if pytest alone is killed, the worker ends after its current test.
"""
import mmap
import os
import pickle
import struct
import sys
import time
import warnings

import pytest
from _pytest.runner import runtestprotocol

_COUNTERS = struct.Struct("qqq")  # front (taken here: [0, front)), back (taken there: [back, n)), bytes
_RECORD = struct.Struct("qq")  # a record's test index and the length of its pickled reports
MIN_TESTS = 40


class TwoCores:
    """The plugin: conftest registers one per session."""

    def __init__(self, config):
        self.config = config
        self.shared = []  # the tests, in collection order
        self.index = {}  # test -> its place in self.shared
        self.role = None  # None: no worker; "main"; "worker"
        self.pid = None  # the worker, while it may still send records
        self.records = {}  # index -> the worker's pickled record, read so far
        self.read_upto = 0
        self.reports = None  # in the worker: what pytest reports about the test under way

    # -- start ----------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        """Starts the worker, then lets pytest's loop run here (the worker never comes back into it)."""
        import threading
        config = self.config
        capman = config.pluginmanager.getplugin("capturemanager")
        if (len(session.items) < MIN_TESTS or not hasattr(os, "fork") or os.environ.get("SOUND_BULK_EARLY") == "0"
                or (os.cpu_count() or 1) < 2 or threading.active_count() != 1 or _os_threads() != 1
                or session.testsfailed or config.option.collectonly or config.getoption("usepdb", False)
                or config.getoption("capture", "fd") == "no" or not hasattr(capman, "_global_capturing")):
            return None
        import tempfile
        self.shared = list(session.items)
        self.index = {item: i for i, item in enumerate(self.shared)}
        self.memory = mmap.mmap(-1, _COUNTERS.size)
        _COUNTERS.pack_into(self.memory, 0, 0, len(self.shared), 0)
        self.lock_r, self.lock_w = os.pipe()
        os.write(self.lock_w, b"t")
        self.log = tempfile.TemporaryFile(prefix="sound_bulk-back-worker-")  # unlinked: never left behind
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into pytest's loop, never runs exit handlers
            status = 0
            try:
                self.role = "worker"
                self._quiet(capman)
                self._work(session, parent)
            except BaseException:  # a Ctrl-C, or pytest stopping: what it did not record runs there
                status = 1
            finally:
                os._exit(status)
        self.role, self.pid = "main", pid
        return None

    def _quiet(self, capman):
        """The worker's output goes nowhere, and its tests' output is captured in files of its own: the
        capture of the session, suspended between tests, is left as it is (its files are shared with
        pytest's process) and a new one starts over /dev/null."""
        quiet = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(quiet, fd)
        os.close(quiet)
        if capman is not None and capman._global_capturing is not None:
            capman._global_capturing = None
            capman.start_global_capturing()
            capman.suspend_global_capture()

    # -- shared counters ------------------------------------------------------------------------------

    def _counters(self, change=None):
        """(front, back, bytes recorded), read under the lock; ``change(front, back, size)`` may give
        new values, written under the same lock."""
        os.read(self.lock_r, 1)
        try:
            values = _COUNTERS.unpack_from(self.memory, 0)
            if change is not None:
                new = change(*values)
                if new is not None:
                    _COUNTERS.pack_into(self.memory, 0, *new)
            return values
        finally:
            os.write(self.lock_w, b"t")

    def _claim(self, from_front):
        """The next test from the front (here) or the back (the worker): its index, or None when the two
        have met."""
        def take(front, back, size):
            if front < back:
                return (front + 1, back, size) if from_front else (front, back - 1, size)
            return None
        front, back, _ = self._counters(take)
        if front >= back:
            return None
        return front if from_front else back - 1

    # -- the worker -----------------------------------------------------------------------------------

    def _work(self, session, parent):
        offset = 0
        current = self._claim(from_front=False)
        while current is not None and os.getppid() == parent:
            following = self._claim(from_front=False)
            item = self.shared[current]
            self.reports, self.seen = [], []
            nextitem = None if following is None else self.shared[following]
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            data = pickle.dumps((self.reports, self.seen))
            os.pwrite(self.log.fileno(), _RECORD.pack(current, len(data)) + data, offset)
            offset += _RECORD.size + len(data)
            self._counters(lambda front, back, size, end=offset: (front, back, end))
            if session.shouldfail or session.shouldstop:
                break
            current = following

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report):
        if self.role == "worker" and self.reports is not None:
            self.reports.append(self.config.hook.pytest_report_to_serializable(config=self.config, report=report))

    @pytest.hookimpl
    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        if self.role == "worker" and self.reports is not None:
            self.seen.append(_warning(warning_message) + (when,))

    # -- this process ---------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if self.role != "main" or item not in self.index:
            return None  # pytest's own protocol
        i = self.index[item]
        front = self._counters()[0]
        if i >= front and (self.pid is None or self._claim(from_front=True) == i):
            pass  # ours now (the worker gone: everything without a record is ours)
        elif i < front:
            pass  # claimed as the test after the one before
        else:
            record = self._wait_for(i)
            if record is not None:
                self._replay(item, record)
                return True
        self._run_here(item, i)
        return True

    def _run_here(self, item, i):
        following = None
        if i + 1 < len(self.shared):
            nxt = i + 1
            if self.pid is None or nxt < self._counters()[0] or self._claim(from_front=True) == nxt:
                following = self.shared[nxt]
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        runtestprotocol(item, nextitem=following)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    def _wait_for(self, i):
        """The worker's record of test i, waiting for it; None if the worker ended without it."""
        while i not in self.records:
            size = self._counters()[2]
            while self.read_upto < size:
                head = os.pread(self.log.fileno(), _RECORD.size, self.read_upto)
                index, length = _RECORD.unpack(head)
                self.records[index] = os.pread(self.log.fileno(), length, self.read_upto + _RECORD.size)
                self.read_upto += _RECORD.size + length
            if i in self.records:
                break
            if self.pid is None:
                return None
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                self.pid = None  # ended: one last look at what it wrote
                continue
            time.sleep(0.002)
        return self.records.pop(i)

    def _replay(self, item, record):
        reports, seen = pickle.loads(record)
        hook = self.config.hook
        for message, category, filename, lineno, when in seen:
            warning = warnings.WarningMessage(message, category, filename, lineno)
            hook.pytest_warning_recorded.call_historic(
                kwargs=dict(warning_message=warning, when=when, nodeid=item.nodeid, location=None))
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for data in reports:
            item.ihook.pytest_runtest_logreport(
                report=hook.pytest_report_from_serializable(config=self.config, data=data))
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    def stop(self):
        if self.pid is not None:  # the session ended before it did (-x, Ctrl-C)
            import signal
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = None


def _warning(w):
    """A recorded warning as plain data (its message as text; its category, if it pickles)."""
    category = w.category
    try:
        pickle.loads(pickle.dumps(category))
    except Exception:
        category = UserWarning
    return str(w.message), category, w.filename, w.lineno


def _os_threads():
    try:
        with open("/proc/self/status") as f:
            return [int(line.split()[1]) for line in f if line.startswith("Threads:")][0]
    except (OSError, IndexError, ValueError):
        return 1

