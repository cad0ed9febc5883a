"""The suite on two cores: a pytest plugin (registered by conftest) that shares the tests between pytest's
process and forked copies of it (the workers; two of them).

After collection (the long tests, marked early, come last: conftest), pytest's process takes tests from the
front of the list, in order, as its loop reaches them, and the workers take them from the back, one at a
time each, until the two ends meet.  So the long tests start at once, and the cores stay busy to the end
whatever each test costs.  Three processes on two cores: many tests wait (for a child interpreter, a
server, a timeout), and while one waits another can run.  A claim is made under a lock (one token in a
pipe) on counters in shared memory, where a worker also notes each test it takes as its own.

A worker runs each test it takes through pytest's whole protocol (fixtures, capture, warnings) and
records what pytest reports (each report as pytest serializes it for other processes, and the warnings)
in a file all processes hold open and nobody can see (unlinked: nothing is left on disk, whatever
happens).  When pytest's loop here reaches a test a worker took, it waits for that record and hands the
reports to pytest as if the test had run here: the terminal, `--durations`, `-x` and the exit status see
every test, in collection order.

A worker that ends without a test's record leaves that test to this process.  One that dies (a crash, a
kill) may have died holding the lock: the other is stopped, and this process runs every test without a
record itself, as it would have without workers.  There is no worker without `os.fork`, on one core, with
threads already running, for fewer than 40 tests, with output not captured (`-s`), with `--pdb`, or with
SOUND_BULK_EARLY=0 (then everything runs in one process).  The workers stay in pytest's process group, so
whatever stops that group (a Ctrl-C at the terminal, tools/mutate.py's timeout) stops them too; if pytest
alone is killed, each ends after its current test.
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

MIN_TESTS = 40


def _workers():
    """The workers to fork: SOUND_BULK_WORKERS (a whole number; 0: none), else 2, three processes on two
    cores (see above).  tools/suite_time.py compares counts."""
    text = os.environ.get("SOUND_BULK_WORKERS", "")
    return int(text) if text.isdigit() else 2


WORKERS = _workers()


def can_fork():
    """Whether a forked copy of this process can share the work: fork, two cores, no other thread yet
    (a fork copies only the thread that calls it), and not turned off."""
    import threading
    return (hasattr(os, "fork") and (os.cpu_count() or 1) >= 2 and os.environ.get("SOUND_BULK_EARLY") != "0"
            and threading.active_count() == 1 and _os_threads() == 1)


class _Split:
    """A list of n jobs shared with forked copies: this process takes jobs by index from the front, the
    forks take them from the back, until the two ends meet.  A fork appends each result, as (index, bytes),
    to a file all hold open (unlinked), and publishes its length; it notes each job it takes as its own
    (its pid), so this process knows whom to wait for.  Everything shared lives under one lock, a token in
    a pipe."""

    _COUNTERS = struct.Struct("qqq")  # front: jobs below it are ours; back: jobs from it are the forks'; length
    _RECORD = struct.Struct("qq")  # a result's index and length
    _CLAIM = struct.Struct("q")  # which fork took a job (its pid)

    def __init__(self, n):
        import tempfile
        self.memory = mmap.mmap(-1, self._COUNTERS.size + self._CLAIM.size * n)
        self._COUNTERS.pack_into(self.memory, 0, 0, n, 0)
        self.lock_r, self.lock_w = os.pipe()
        os.set_blocking(self.lock_r, False)  # every process waits in select(), and looks at the others
        os.write(self.lock_w, b"t")
        self.parent = os.getpid()
        self.log = tempfile.TemporaryFile(prefix="sound_bulk-two-cores-")
        self.read = 0
        self.results = {}
        self.pids = set()  # the forks, in this process, until each is known to have ended
        self.broken = False  # here: a fork died (maybe holding the token): the others were stopped

    @property
    def pid(self):
        """Here: a fork that may still give results (None once none can)."""
        return None if self.broken or not self.pids else min(self.pids)

    def _counters(self, change=None):
        """(front, back, length), read under the lock; ``change(front, back, length)`` may return new
        values, written under the same lock."""
        held = self._lock()
        try:
            values = self._COUNTERS.unpack_from(self.memory, 0)
            new = change(*values) if change is not None else None
            if new is not None:
                self._COUNTERS.pack_into(self.memory, 0, *new)
            return values
        finally:
            if held:
                os.write(self.lock_w, b"t")

    def _lock(self):
        """Takes the token: True.  False when no fork can take it any more (all have ended, or one died
        and the others were stopped): the lock is not needed then.  A fork ends itself when pytest's
        process is gone, whoever held the token."""
        import select
        while True:
            try:
                if os.read(self.lock_r, 1):
                    return True
            except BlockingIOError:
                pass
            if os.getpid() != self.parent:
                if os.getppid() != self.parent:
                    os._exit(1)
            elif self._reap() is None:
                return False
            select.select([self.lock_r], [], [], 0.5)

    def _reap(self):
        """Here: notes the forks that have ended.  One that died (a signal, or a status but 0) may have
        died holding the token: the others are stopped, and every job without a result is ours."""
        for pid in list(self.pids):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.discard(pid)
                if status:
                    self.broken = True
                    self.stop()
                    break
        return self.pid

    def _claimant(self, i):
        return self._CLAIM.unpack_from(self.memory, self._COUNTERS.size + self._CLAIM.size * i)[0]

    def take(self, i):
        """Here: whether job i is ours (then it is, and so is every job before it), or a fork's.  Once
        the fork that took it has ended, a job without a result is ours."""
        if self.pid is not None:
            front, back, _ = self._counters(lambda front, back, n: (max(front, i + 1), back, n) if i < back else None)
            if i < back:
                return True
            if self._reap() is not None and self._claimant(i) in self.pids:
                return False  # a fork's, and that fork is at work
        self._read()  # what the fork that took it wrote is all there is
        return i not in self.results

    def take_from_back(self):
        """In a fork: the index of the next job it takes, or None once the two ends have met."""
        def claim(front, back, n):
            if back > front:
                self._CLAIM.pack_into(self.memory, self._COUNTERS.size + self._CLAIM.size * (back - 1), os.getpid())
                return front, back - 1, n
            return None
        front, back, _ = self._counters(claim)
        return back - 1 if back > front else None

    def give(self, i, data):
        """In a fork: job i's result, written at the end of the file, under the lock."""
        def append(front, back, end):
            os.pwrite(self.log.fileno(), self._RECORD.pack(i, len(data)) + data, end)
            return front, back, end + self._RECORD.size + len(data)
        self._counters(append)

    def result(self, i):
        """Here: the result of job i, waiting for the fork that took it; None if it ended without it."""
        claimant = self._claimant(i)
        while i not in self.results:
            self._read()
            if i in self.results:
                break
            if self._reap() is None or claimant not in self.pids:
                self._read()  # ended: one last look at what it wrote
                break
            time.sleep(0.002)
        return self.results.pop(i, None)

    def _read(self):
        """Here: the results the forks have written since the last look."""
        length = self._counters()[2]
        while self.read < length:
            index, size = self._RECORD.unpack(os.pread(self.log.fileno(), self._RECORD.size, self.read))
            self.results[index] = os.pread(self.log.fileno(), size, self.read + self._RECORD.size)
            self.read += self._RECORD.size + size

    def stop(self):
        """Here: ends the forks that have not ended by themselves."""
        import signal
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            self.pids.discard(pid)


def _fork(split, work):
    """Starts a fork, which runs ``work()`` and ends; in this process, returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the fork: never returns, never runs exit handlers
        status = 0
        try:
            work()
        except BaseException:  # a Ctrl-C, or pytest stopping: what it did not give is done here
            status = 1
        finally:
            os._exit(status)
    split.pids.add(pid)


class TwoCores:
    """The plugin: conftest registers one per session (tests/test_two_cores.py makes its own)."""

    def __init__(self, workers=WORKERS):
        self.workers = workers  # forks that take tests from the back
        self.config = None
        self.split = None  # the tests' split, in pytest's process, while the workers may have tests
        self.index = {}  # test -> its place in the list
        self.items = []
        self.reports = None  # in a worker: what pytest reports about the test under way
        self.rewriting = None  # while the test files' asserts are rewritten on two cores: ends that

    # -- assert rewriting ----------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        self.config = config
        self.rewriting = share_rewriting(config)

    @pytest.hookimpl
    def pytest_unconfigure(self, config):
        self._end_rewriting()  # the session ended before its collection did
        self.stop()

    @pytest.hookimpl
    def pytest_collection_finish(self, session):
        self._end_rewriting()

    def _end_rewriting(self):
        if self.rewriting is not None:
            self.rewriting()
            self.rewriting = None

    # -- the tests ------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        """Starts the workers, then lets pytest's loop run here (a worker never comes back into it)."""
        config = self.config
        capman = config.pluginmanager.getplugin("capturemanager")
        if (len(session.items) < MIN_TESTS or self.workers < 1 or not can_fork() or session.testsfailed
                or config.option.collectonly or config.getoption("usepdb", False)
                or config.getoption("capture", "fd") == "no" or not hasattr(capman, "_global_capturing")):
            return None
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is not None:  # one folder of temp folders for both, made here: pytest here removes it in time
            factory.getbasetemp()  # (one made in a worker would stay for good, locked by a process that is gone)
        self.items = list(session.items)
        self.index = {item: i for i, item in enumerate(self.items)}
        split = _Split(len(self.items))
        parent = os.getpid()

        def work():
            self._quiet(capman)
            self._work(session, split, parent)
        for _ in range(self.workers):
            _fork(split, work)
        self.split = split  # here only: in a worker, pytest's own protocol runs each test
        return None

    def _quiet(self, capman):
        """A worker's output goes nowhere, and its tests' output is captured in files of its own: the
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

    def _work(self, session, split, parent):
        """In a worker: takes tests from the back one at a time (a test claimed ahead could wait here while
        another worker is idle), so its next test is not known when one ends: pytest is told it is in
        another file, and tears down what is not the session's (the module's fixtures, set up again for the
        next test if it needs them)."""
        ends = (self.items[0], self.items[-1])
        current = split.take_from_back()
        while current is not None and os.getppid() == parent:
            item = self.items[current]
            self.reports, self.seen = [], []
            elsewhere = [other for other in ends if other.nodeid.split("::")[0] != item.nodeid.split("::")[0]]
            item.ihook.pytest_runtest_protocol(item=item, nextitem=(elsewhere or [None])[0])
            split.give(current, pickle.dumps((self.reports, self.seen)))
            if session.shouldfail or session.shouldstop:
                break
            current = split.take_from_back()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report):
        if self.reports is not None:  # in a worker
            self.reports.append(self.config.hook.pytest_report_to_serializable(config=self.config, report=report))

    @pytest.hookimpl
    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        if self.reports is not None:
            self.seen.append(_warning(warning_message) + (when,))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if self.split is None or item not in self.index:
            return None  # pytest's own protocol
        i = self.index[item]
        if not self.split.take(i):
            record = self.split.result(i)
            if record is not None:
                self._replay(item, record)
                return True
        following = None  # the test this process runs next: the fixtures they share stay up
        if i + 1 < len(self.items) and self.split.take(i + 1):
            following = self.items[i + 1]
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        runtestprotocol(item, nextitem=following)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

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
        if self.split is not None:  # the session ended before the workers did (-x, Ctrl-C)
            self.split.stop()


def share_rewriting(config):
    """pytest rewrites the asserts of each test file as it imports it, and with no bytecode cache
    (PYTHONDONTWRITEBYTECODE=1, as in CI, where every run is a first run) it does so on every run: 1-1.5 s
    of CPU before the first test.  A fork rewrites the test files from the back of the list while pytest
    works from the front; pytest takes the fork's code for a file the fork has done (or is doing).  Only
    pytest's own rewriting runs, in either process, so the code is the same.  Returns what ends the
    sharing, or None when there is none (a cache may be in use, pytest does not rewrite, no fork)."""
    import glob
    import marshal
    try:
        from _pytest.assertion import rewrite
        original = rewrite._rewrite_test
    except (ImportError, AttributeError):
        return None
    if not sys.dont_write_bytecode or config.getoption("assertmode", None) != "rewrite" or not can_fork():
        return None
    files = []  # the test files the command line names, in the order pytest imports them
    for arg in config.args:
        path = os.path.join(str(config.invocation_params.dir), str(arg).split("::")[0])
        files += sorted(glob.glob(os.path.join(path, "test_*.py"))) if os.path.isdir(path) else [path]
    files = [os.path.abspath(path) for path in files if path.endswith(".py")]
    index = {path: i for i, path in enumerate(files)}
    split = _Split(len(files))

    def work():
        from pathlib import Path
        i = split.take_from_back()
        while i is not None:
            first, code = original(Path(files[i]), config)
            split.give(i, pickle.dumps((first, marshal.dumps(code))))
            i = split.take_from_back()
    _fork(split, work)

    def rewrite_test(fn, config):
        i = index.get(os.path.abspath(str(fn)))
        data = None if i is None or split.take(i) else split.result(i)
        if data is None:
            return original(fn, config)
        first, code = pickle.loads(data)
        return first, marshal.loads(code)

    def end():
        rewrite._rewrite_test = original
        split.stop()
    rewrite._rewrite_test = rewrite_test
    return end


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

