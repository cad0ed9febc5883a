import importlib.machinery
import io
import json
import os
import sys


class _HypothesisUnrewritten:
    """Imports hypothesis the plain way.  pytest rewrites the asserts of every module of a package that
    ships a pytest plugin, hypothesis included, and with no bytecode cache (PYTHONDONTWRITEBYTECODE=1,
    as in CI) it does so on every run: about 1.5 s of CPU for asserts that are hypothesis's own
    business.  Our test files are still rewritten."""

    def find_spec(self, name, path=None, target=None):
        if name == "hypothesis" or name.startswith("hypothesis."):
            return importlib.machinery.PathFinder.find_spec(name, path)
        return None


sys.meta_path.insert(0, _HypothesisUnrewritten())

# Several tests press Ctrl-C on the test process itself (os.kill(getpid(), SIGINT)) and check what the
# user would see.  A process started as a background job of a shell without job control inherits
# SIGINT ignored; give the tests the interpreter's normal Ctrl-C whatever started them.
try:
    import signal as _signal
    if _signal.getsignal(_signal.SIGINT) == _signal.SIG_IGN:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
except (ImportError, ValueError, AttributeError):  # not the main thread, or no signals here
    pass

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings, strategies as st  # noqa: E402

# SOUND_BULK_THOROUGH=1: a long search (2000 examples per property, more Ctrl-C moments), for before a
# release.  By default few examples per property, so the whole suite stays under 10 s (it runs many times
# a day, each run drawing new examples).  No deadline and no "too slow" check: a loaded machine must not
# fail a test that is correct.  `--hypothesis-profile thorough` also works for the properties alone.
THOROUGH = bool(os.environ.get("SOUND_BULK_THOROUGH"))
# No "target" phase either: no test calls hypothesis.target(), and with nothing to aim at, the
# hypothesis releases for 3.6 and 3.7 (6.31, 6.79) still spend that phase shrinking the examples they
# keep for the database (measured: 2 s of the suite's ~20 s of CPU on 3.6, 1 s on 3.7; nothing on 3.8+).
_relaxed = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[phase for phase in Phase if phase is not Phase.target])
settings.register_profile("default", max_examples=40, **_relaxed)
settings.register_profile("thorough", max_examples=2000, **_relaxed)
settings.load_profile("thorough" if THOROUGH else "default")

# Text for property tests, drawn without st.text()/st.characters(): those build hypothesis's table of
# Unicode categories the first time they run in a checkout (in .hypothesis/, 2-3 s of CPU per Python
# version), which every CI run, on a fresh clone, would pay.  Instead, characters that break things:
# all of ASCII and Latin-1 (controls, C1 controls such as CSI, quotes, NBSP, soft hyphen), combining
# and invisible marks, bidi overrides and isolates, line and paragraph separators, BOM, U+FFFD,
# noncharacters, wide CJK, Arabic-Indic digits, and characters beyond the BMP up to U+10FFFF.
# No surrogates (st.text() leaves them out too).  As cheap to draw as st.text().
_ALPHABET = ([chr(i) for i in range(0x100)] + list(
    "\u0300\u034f\u061c\u0663\u200b\u200d\u200e\u200f\u2028\u2029\u202a\u202e\u2066\u2069"
    "\u3000\u4e2d\ufeff\ufffd\uffff") + ["\U0001D11E", "\U0001F600", "\U000E0001", "\U0010FFFF"])


def any_text(max_size):
    return st.lists(st.sampled_from(_ALPHABET), max_size=max_size).map("".join)


def _temp_files_in_memory(folder="/dev/shm", room=2 << 30):
    """The tests' temp files (tmp_path, and everything else tempfile makes in this process) go to a
    memory file system when there is one with room, unless TMPDIR says where they go.  The module fsyncs
    every file it saves and its folder; on this machine's disk that was ~1 s of each run (on 3.11), on
    tmpfs it is next to nothing.  What the tests check is that the syncs are asked for (they count and
    order the calls), which does not depend on where the files are.  Child interpreters keep the usual
    temp folder."""
    import tempfile
    if os.environ.get("TMPDIR") or not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        disk = os.statvfs(folder)
    except (OSError, AttributeError):
        return
    if disk.f_bavail * disk.f_frsize >= room:
        tempfile.tempdir = folder


_temp_files_in_memory()

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
# The module under test: this repository's copy, or a vendored copy named by SOUND_BULK_UNDER_TEST.
UNDER_TEST = os.environ.get("SOUND_BULK_UNDER_TEST", os.path.join(ROOT, "sound_bulk.py"))
sys.path.insert(0, os.path.dirname(os.path.abspath(UNDER_TEST)))

from fake_api import API_KEY, FakeCamb  # noqa: E402


def _import_and_copy_for_children():
    """Import the module under test, and make a temp folder holding a copy of it and its .pyc, for child
    interpreters (their cwd and PYTHONPATH); returns the folder.  With PYTHONDONTWRITEBYTECODE=1 (CI,
    and many shells) no .pyc is ever written, so every `python -m sound_bulk` child compiled the whole
    module again: ~0.1 s of CPU per child.  Children still read a .pyc that exists, so the one compile
    here serves this process and all of them (an import fixes the file name a .pyc's code carries).
    Children that run a file as a script (`python sound_bulk.py`) or a lone copy compile it themselves."""
    import atexit
    import importlib.util
    import marshal
    import shutil
    import tempfile
    with open(UNDER_TEST, "rb") as f:
        source = f.read()
    code = compile(source, UNDER_TEST, "exec", dont_inherit=True)
    spec = importlib.util.spec_from_file_location("sound_bulk", UNDER_TEST)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sound_bulk"] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules["sound_bulk"]
        raise
    folder = tempfile.mkdtemp(prefix="sound_bulk-children-")
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, "sound_bulk.py")
    with open(copy, "wb") as f:
        f.write(source)
    stat = os.stat(copy)
    # The .pyc header: magic, flags (3.7+; 0: checked by the source's time and size), time, size.
    header = importlib.util.MAGIC_NUMBER + (b"\0\0\0\0" if sys.version_info >= (3, 7) else b"")
    for value in (int(stat.st_mtime), stat.st_size):
        header += (value & 0xFFFFFFFF).to_bytes(4, "little")
    cached = importlib.util.cache_from_source(copy)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "wb") as f:
        f.write(header + marshal.dumps(code))
    return folder


#: cwd and PYTHONPATH for child interpreters that import the module (`python -m sound_bulk`, `-c`).
CHILD_MODULE_DIR = _import_and_copy_for_children()
import sound_bulk  # noqa: E402  (imported above)


@pytest.fixture
def sockets(monkeypatch):
    """Every socket the client opens (socket.create_connection, as http.client opens them), to check
    afterwards that none is left open."""
    import socket
    opened = []
    real = socket.create_connection

    def create_connection(*a, **kw):
        sock = real(*a, **kw)
        opened.append(sock)
        return sock

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return opened


def json_calls(monkeypatch, name, hook):
    """The module's json (``sound_bulk._json()``) with its function ``name`` (``dumps``, ``loads``) calling
    ``hook(argument)`` first: to act at the moment a request's body is encoded, or to see what is parsed."""
    import json

    def call(value, *args, **kw):
        hook(value)
        return getattr(json, name)(value, *args, **kw)

    class Json:
        def __getattr__(self, attr):
            return call if attr == name else getattr(json, attr)
    monkeypatch.setattr(sound_bulk, "_json", Json)


def hold_api_calls(fake, count, skip=0, then=0.0, wait=5.0):
    """After the first ``skip`` API requests, the next ``count`` wait (at most ``wait`` s) in the fake until
    ``count`` are in the server, then ``then`` seconds more, so whatever can be under way alongside them is."""
    import threading
    lock = threading.Lock()
    arrived = [0]
    together = threading.Event()

    def gate():
        with lock:
            arrived[0] += 1
            n = arrived[0] - skip
        if n < 1 or n > count:
            return
        if n == count:
            together.set()
        together.wait(wait)
        if then:
            threading.Event().wait(then)

    fake.api_gate = gate


class Sleeps:
    """A fake sleep that records every wait and moves a fake clock."""

    def __init__(self):
        self.waits = []
        self.t = 1000.0

    def __call__(self, seconds):
        assert seconds is None or seconds >= 0
        self.waits.append(seconds)
        if seconds:
            self.t += seconds

    def clock(self):
        return self.t


@pytest.fixture
def tmp_path(request, tmp_path_factory):
    """pytest's tmp_path (a new folder in the run's basetemp, named after the test), made in constant
    time.  pytest numbers its folders by listing the whole basetemp for each one, and ours holds a
    folder per test by the end: 1.35 s of CPU for 600 folders on 3.6 (0.6 s on 3.11)."""
    import pathlib
    import re
    import tempfile
    name = re.sub(r"\W", "_", request.node.name)[:30]
    return pathlib.Path(tempfile.mkdtemp(prefix=name + "-", dir=str(tmp_path_factory.getbasetemp())))


@pytest.fixture
def fake():
    with FakeCamb() as f:
        yield f


@pytest.fixture
def sleeps():
    return Sleeps()


def _clients(sleeps, base_url, api_key):
    """``make(**kw)`` for a fixture: a Client for ``base_url`` with ``api_key``, the fake sleep and clock,
    no jitter and a 5 s timeout unless ``kw`` says otherwise; and the list of those made, to close."""
    made = []

    def make(**kw):
        kw.setdefault("base_url", base_url)
        kw.setdefault("api_key", api_key)
        kw.setdefault("sleep", sleeps)
        kw.setdefault("clock", sleeps.clock)
        kw.setdefault("rand", lambda: 0.5)
        kw.setdefault("timeout", 5)
        made.append(sound_bulk.Client(**kw))
        return made[-1]
    return make, made


@pytest.fixture
def make_client(fake, sleeps):
    make, made = _clients(sleeps, fake.base_url, API_KEY)
    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def hostile():
    """A ``Hostile`` server (tests/hostile_server.py): each test sets its ``handler``."""
    from hostile_server import Hostile
    server = Hostile()
    yield server
    server.close()


@pytest.fixture
def make(hostile, sleeps):
    """``make(**kw)``: a Client for the hostile server, with its key KEY and the fake sleep and clock."""
    from hostile_server import KEY
    make, made = _clients(sleeps, hostile.base_url, KEY)
    yield make
    for c in made:
        c.close()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("CAMB_API_KEY", raising=False)
    monkeypatch.delenv("CAMB_API_BASE_URL", raising=False)


# -- the command line, in process -------------------------------------------------------------------

class TTY(io.StringIO):
    """A captured stream that says it is a terminal (progress and status lines are drawn on it)."""

    def isatty(self):
        return True


def run(argv, stdin="", stderr=None):
    """``sound_bulk.main(argv)`` with captured streams: (exit status, stdout, stderr) as text."""
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    code = sound_bulk.main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def lines(text):
    """The JSON lines of a --json output."""
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def env(fake, monkeypatch):
    """The command line's environment pointed at the fake (key and base URL); the fake itself."""
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    return fake


def _set_aside_what_lives_to_the_end():
    """Moves every object made so far out of the garbage collector's sight (3.7+, gc.freeze): the
    imported modules, pytest's and hypothesis's state, then the collected tests, ~60,000 objects that
    live to the end of the session.  Full collections walked through all of them again and again, 50-90
    ms each: five while the tests are collected, a few while they run, five more at the end of the
    session (pytest's unraisable-exception check).  What the tests make is collected as before.
    3.6 has no gc.freeze: there, full collections are held back from the start (see _hold_back_...)."""
    import gc
    if hasattr(gc, "freeze"):
        gc.freeze()


def _hold_back_full_collections_without_freeze():
    """On 3.6 (no gc.freeze), no automatic full collection: each walked the ~60,000 objects of pytest,
    hypothesis and the collected tests, 50 ms a time, 0.3 s of CPU per process in all.  The young
    generations are collected as before, so the tests' short-lived cycles still go; what reaches the
    oldest generation waits for an explicit gc.collect() or the end of the session."""
    import gc
    if not hasattr(gc, "freeze"):
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1000000)


_hold_back_full_collections_without_freeze()


def pytest_collection_modifyitems(items):
    # The long tests (marked early) come last: the workers (tests/two_cores.py) start there
    marked = [item for item in items if item.get_closest_marker("early") is not None]
    items[:] = [item for item in items if item.get_closest_marker("early") is None] + marked


def pytest_collection_finish(session):
    _set_aside_what_lives_to_the_end()  # the second time: the collected tests


def pytest_addoption(parser, pluginmanager):
    # The suite on two cores (tests/two_cores.py).  Registered here, not in pytest_configure: a plugin
    # registered while pytest_configure runs can make some pluggy versions skip another plugin's
    # pytest_configure (hypothesis's, on 3.7: its marker was then unknown to --strict-markers).
    import two_cores
    pluginmanager.register(two_cores.TwoCores(), "sound_bulk-two-cores")


# -- long tests: scenario and checks -----------------------------------------------------------------------
#
# A test marked ``@pytest.mark.early(scenario=function)`` gets, by calling its ``early`` fixture, what
# ``function(folder, **its parameters)`` returned (``folder``: a new empty folder).  These are the tests that
# mostly wait (for the child interpreters they start, for a timeout) or compute alone (the costliest
# hypothesis properties, property_scenario below).  They run last in collection order, which is where the
# workers (tests/two_cores.py) start taking tests, so they start at once and overlap with the short tests
# that run here.  The scenario, the doing part, is kept apart from the checks, which
# are the test's body.


def property_scenario(prop, folder_as=None):
    """An early scenario that runs ``prop``, a hypothesis property (a function under @given; ``folder_as``:
    the name of its one other argument, given the scenario's folder as a Path).  It returns None; when the
    property fails, the failure carries hypothesis's report (the falsifying example), whichever process ran
    it (tests/two_cores.py)."""
    def scenario(folder):
        import pathlib
        from hypothesis.reporting import with_reporter
        report = []
        try:
            with with_reporter(report.append):
                prop(**({folder_as: pathlib.Path(folder)} if folder_as else {}))
        except BaseException as exc:
            if report:
                raise AssertionError("hypothesis reported:\n" + "\n".join(map(str, report))) from exc
            raise
    return scenario


@pytest.fixture
def early(request, tmp_path):
    """``early()``: what the test's scenario (``@pytest.mark.early(scenario=function)``) returned, run in
    a new empty folder; a scenario that raised fails the test with its traceback.  See above."""
    def result():
        scenario = request.node.get_closest_marker("early").kwargs["scenario"]
        params = dict(request.node.callspec.params) if hasattr(request.node, "callspec") else {}
        folder = tmp_path / "scenario"
        folder.mkdir()
        return scenario(str(folder), **params)
    return result


def _hypothesis_random_before_the_freeze():
    """hypothesis registers a Random of its own the first time a property runs in a process, and the
    release for 3.7 (6.79) warns when nothing it can see refers to that Random ("It looks like
    `register_random` was passed an object that could be garbage collected"): gc.get_referrers does not
    see objects set aside with gc.freeze, such as the module that holds it.  Made here, before the
    freeze, it is seen (a warning in 3.7's runs, now and then, from the first property of a process)."""
    try:
        from hypothesis.internal.entropy import deterministic_PRNG
    except ImportError:  # another hypothesis: nothing to do
        return
    with deterministic_PRNG():
        pass


_hypothesis_random_before_the_freeze()
_set_aside_what_lives_to_the_end()  # the first time: start-up (pytest, hypothesis, the module)
