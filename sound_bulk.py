"""sound_bulk: turn finished text-to-sound run IDs into verified audio files.

One file, standard library only, CPython 3.6 to 3.13. Copy it into your project
(or run it in place) and either use it as a library::

    import sound_bulk
    client = sound_bulk.Client()                   # key from $CAMB_API_KEY
    results = client.get_results([101, 102])       # {101: RunResult(...), ...}
    for outcome in client.fetch([101, 102], "out"):
        print(outcome.run_id, outcome.status, outcome.path)

or as a command::

    python -m sound_bulk fetch 101 102 -o out      # out/101.wav, out/102.wav
    python -m sound_bulk urls 101 102              # resolve only, JSON lines
    python -m sound_bulk generate "rain on a tin roof" -o out

It talks to the bulk results endpoint (``POST <base>/text-to-sound-results``,
at most five run IDs per request), downloads each presigned URL with a
constant amount of memory into a temporary file beside the destination,
checks the length and that the bytes are audio, and only then gives the file
its final name.  The API key is sent to the API's own origin and nowhere else.

Home: the sound_bulk repository (sound_bulk.py).  Licence: MIT, see the end
of this docstring.

MIT License.  Copyright (c) 2026 the sound_bulk authors.  Permission is hereby
granted, free of charge, to any person obtaining a copy of this software, to
deal in it without restriction, including the rights to use, copy, modify,
merge, publish, distribute, sublicense and/or sell copies, provided this notice
is kept.  THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.
"""

__version__ = "0.1.0"

__all__ = [
    # configuration and limits
    "DEFAULT_BASE_URL", "MAX_RUN_IDS", "__version__",
    # errors
    "SoundBulkError", "ConfigurationError", "InvalidRunIdError", "APIError",
    "AuthenticationError", "TransportError", "APIUnreachableError", "DownloadError", "FetchInterrupted",
    # values
    "RunResult", "FetchOutcome", "Task", "PromptOutcome", "Manifest",
    # functions and the client
    "validate_run_ids", "chunked", "parse_results", "sniff_audio", "saved_path", "Client", "generate",
    "manifest_run_ids", "prompt_keys", "main",
]

import os
import sys
import time

# Everything else (threading, json, http.client, ssl, argparse, ...) is imported where it is first
# needed, so that ``import sound_bulk`` stays cheap: threading alone costs more than this whole file
# on some versions (it brings functools and collections), and ``--help``, a bad argument or a
# notebook's ``import`` should not pay for threads they never start.

# Annotations are strings, and the names in them come from `typing` only while a type checker reads
# the file (TYPE_CHECKING is False at run time, and mypy takes any `if TYPE_CHECKING:` as true).
# So they cost nothing at import (no `import typing`, ~10 ms), and work on 3.6, which has no
# postponed evaluation of annotations (PEP 563).  `mypy --strict sound_bulk.py` passes, no ignores.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import http.client
    import logging
    import queue
    import socket
    import ssl
    import threading
    import types
    from concurrent.futures import Future, ThreadPoolExecutor
    from typing import (Any, AnyStr, BinaryIO, Callable, Deque, Dict, Final, Iterable, Iterator, List, Literal,
                        Mapping, NoReturn, Optional, Protocol, Sequence, Set, TextIO, Tuple, Type, TypeVar, Union)

    T = TypeVar("T")
    #: ``str`` in, ``str`` out; ``None`` (or an optional str) in, optional str out.
    OptStr = TypeVar("OptStr", str, Optional[str])
    #: What the bulk endpoint says of a run (``RunResult.status``).
    RunStatus = Literal["ready", "pending", "failed", "missing"]
    #: How a run or a prompt ended (``FetchOutcome.status``, ``PromptOutcome.status``); "ready" only in
    #: the rows ``urls`` builds for its summary.
    OutcomeStatus = Literal["saved", "skipped", "ready", "pending", "failed", "missing", "error"]
    #: What submitting one prompt gives: (task_id, error, the exception that ended it)
    Submitted = Tuple[Optional[str], Optional[str], Optional["SoundBulkError"]]
    #: A task's state (``Task.status``).
    TaskStatus = Literal["SUCCESS", "PENDING", "ERROR"]
    #: Run IDs as the public API takes them: one, or any iterable of ints and digit strings.
    RunIds = Union[int, str, Iterable[Union[int, str]]]
    #: Bytes as sniff_audio and friends accept them.
    BytesLike = Union[bytes, bytearray, memoryview]
    #: One manifest line (a JSON object), or the merged state of one prompt occurrence.
    Record = Dict[str, Any]
    #: Callbacks and seams.
    Progress = Callable[[int], None]
    OnFetchOutcome = Callable[["FetchOutcome"], None]
    OnPromptOutcome = Callable[["PromptOutcome"], None]
    OnWait = Callable[[int, float, float], None]
    OnStatus = Callable[[str], None]
    Sleep = Callable[[float], None]
    Clock = Callable[[], float]
    Rand = Callable[[], float]
    #: (scheme, host, port) of a URL, as the connection pools key them.
    Origin = Tuple[str, str, int]

    class Headers(Protocol):
        """Response headers (``http.client.HTTPMessage``, or a dict in tests): looked up by name."""

        def get(self, name: str) -> "Optional[str]": ...


# ---------------------------------------------------------------------------
# Constants: the policy, as data
# ---------------------------------------------------------------------------

#: Where the API lives unless ``base_url=``, ``--base-url`` or $CAMB_API_BASE_URL says otherwise.
DEFAULT_BASE_URL = "https://client.camb.ai/apis"
#: Environment variable that holds the API key.
API_KEY_ENV = "CAMB_API_KEY"
#: Environment variable that overrides the base URL.
BASE_URL_ENV = "CAMB_API_BASE_URL"
#: The documented limit of run IDs in one bulk request.
MAX_RUN_IDS = 5
#: Largest run ID accepted (the server stores them as signed 64-bit integers).
MAX_RUN_ID = 2 ** 63 - 1
#: Seconds allowed for each network operation (connect, send, each read).
DEFAULT_TIMEOUT = 30.0
#: Most seconds a timeout or wait may be (a week): far larger values overflow the operating
#: system's timers (socket timeouts, lock waits: about 49 days on Windows).
MAX_SECONDS = 7 * 24 * 3600.0
#: Parallel downloads in ``fetch`` (and so connections to the storage, at most).
DEFAULT_WORKERS = 8
#: Most API calls one Client has under way at once (bulk calls, task polls): the top of its AIMD
#: window (see ``_CallWindow``), which a 429 shrinks and successes grow back.  ``fetch`` uses at most
#: ``min(workers, API_CONCURRENCY)``.  At 100 ms per API round trip, 8 calls resolve ~400 runs/s.
API_CONCURRENCY = 8
#: Statuses worth another try, besides every 5xx (the official SDK's list).
RETRY_STATUSES = frozenset({408, 409, 429})
#: Tries of one request, the first included.
MAX_ATTEMPTS = 5
#: First backoff wait and its cap, in seconds; each retry doubles it, +-10% jitter.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: Most seconds one call may spend waiting between its retries.
RETRY_BUDGET = 120.0
#: Headers that never leave the API's origin (not to storage, not across a redirect).
SECRET_HEADERS = frozenset({"x-api-key"})
#: API calls that are never sent twice, because each one creates a paid task: such a request goes
#: out on a new connection, and is sent again only when connecting failed (no byte of it left).
#: Every other call is idempotent and may be repeated (a stale kept-alive connection, a 5xx).
ONCE_ONLY = frozenset({("POST", "text-to-sound")})
#: Redirects followed for one request.
MAX_REDIRECTS = 5
#: Interim answers (1xx: 102 Processing, 103 Early Hints) read past before the answer, at most.
MAX_INTERIM = 10
#: Bytes read from the network and written to disk at a time.
READ_CHUNK = 64 * 1024
#: Largest JSON answer read from the API (a guard against a runaway body).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted in a JSON answer (the answers are 2 or 3 deep).
MAX_JSON_DEPTH = 64
#: Fresh URLs asked for one run when its presigned URL has expired.
URL_REFRESHES = 2
#: The low-speed rule for downloads (curl's --speed-limit/--speed-time): a transfer that brings
#: fewer than LOW_SPEED_LIMIT bytes per second, measured over LOW_SPEED_TIME seconds, is broken
#: off and tried again like any broken transfer.  (``timeout`` bounds each read; this bounds a
#: body that trickles in one byte at a time, never idle long enough to time out.)
LOW_SPEED_LIMIT = 1024
#: Seconds over which the low-speed rule measures (see LOW_SPEED_LIMIT).
LOW_SPEED_TIME = 30.0
#: Extensions a saved run may have (one per format sniff_audio knows); a rerun skips a run with any of them.
AUDIO_EXTENSIONS = (".wav", ".w64", ".aiff", ".flac", ".ogg", ".m4a", ".webm", ".mka", ".mp3", ".aac")
#: First and longest wait between two polls of runs (or tasks) that are not ready.
POLL_INITIAL = 1.0
POLL_MAX = 15.0
#: Durations the API accepts for ``audio_type="sound"`` (seconds).
MAX_SOUND_DURATION = 10.0
#: Longest prompt accepted before anything is sent.
MAX_PROMPT_CHARS = 2000
#: The manifest's file name inside the output folder.
MANIFEST_NAME = "sound_bulk-manifest.jsonl"
USER_AGENT = "sound_bulk/%s (+python %d.%d)" % (__version__, sys.version_info[0], sys.version_info[1])
#: RunResult statuses.
READY: "Final" = "ready"
PENDING: "Final" = "pending"
FAILED: "Final" = "failed"
MISSING: "Final" = "missing"
_PENDING_WORDS = frozenset({"PENDING", "QUEUED", "RUNNING", "IN_PROGRESS", "PROCESSING", "STARTED"})
_FAILED_WORDS = frozenset({"ERROR", "FAILED", "FAILURE", "TIMEOUT", "CANCELLED", "CANCELED"})


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class SoundBulkError(Exception):
    """Root of every error this module raises on purpose."""


class ConfigurationError(SoundBulkError, ValueError):
    """The client cannot be set up: no API key, a bad or insecure base URL, a bad option."""


class InvalidRunIdError(SoundBulkError, ValueError):
    """One or more run IDs are not positive integers; ``invalid`` lists every bad value."""

    def __init__(self, invalid: "Iterable[object]", message: "Optional[str]" = None) -> None:
        self.invalid = list(invalid)
        if message is None:
            shown = ", ".join(_short_repr(v) for v in self.invalid[:20])
            more = " and %d more" % (len(self.invalid) - 20) if len(self.invalid) > 20 else ""
            message = "invalid run IDs: %s%s (a run ID is a whole number from 1 to 2**63-1)" % (shown, more)
        super().__init__(message)


class APIError(SoundBulkError):
    """The API answered with an error status, or with a body this client cannot use."""

    def __init__(self, message: str, status: "Optional[int]" = None, detail: object = None,
                 retry_after: "Optional[float]" = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class AuthenticationError(APIError):
    """The API rejected the key (401 or 403)."""


class TransportError(SoundBulkError, OSError):
    """The network failed (refused, reset, timed out, bad TLS) and retries did not help.

    ``retryable`` is False where another try cannot help (a bad certificate, a refused redirect).
    ``sent`` is False only when no byte of the request can have reached the server (connecting
    failed); then even a request that creates something was certainly not acted on.
    ``answered`` is True when the server did answer and this client would not go on (a redirect it
    refuses to follow): the server is reachable, whatever else is wrong.
    """

    answered = False

    def __init__(self, message: str, retryable: bool = True, sent: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.sent = sent


class APIUnreachableError(TransportError):
    """The API itself cannot be reached (refused, DNS, TLS, timeouts on every try).

    Raised by the call that used up its retries, and then at once by every later call of the same
    ``fetch``/``get_results``/``generate`` (no point asking again).  ``url`` is the base URL,
    ``cause`` what the last try met, ``tries`` how many were made; ``sent`` as for TransportError
    (False for the calls that were not even tried).
    """

    def __init__(self, url: str, cause: str, tries: int, sent: bool = True) -> None:
        super().__init__("cannot reach the API at %s: %s (%d %s)" % (
            url, cause, tries, "try" if tries == 1 else "tries"), retryable=False, sent=sent)
        self.url, self.cause, self.tries = url, cause, tries


class DownloadError(SoundBulkError, OSError):
    """A run's audio could not be saved; nothing was left under its final name."""

    def __init__(self, message: str, run_id: "Optional[int]" = None, expected: "Optional[int]" = None,
                 received: "Optional[int]" = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.expected = expected
        self.received = received


class FetchInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``Client.fetch``; ``outcomes`` reports every run, unfinished ones as errors."""

    def __init__(self, outcomes: "Sequence[Union[FetchOutcome, PromptOutcome]]") -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

class RunResult:
    """What the bulk endpoint said about one run.

    ``status`` is ``"ready"`` (``url`` is set), ``"pending"``, ``"failed"`` (the
    service reports the generation failed) or ``"missing"`` (no usable entry).
    ``raw`` is that run's value as the server sent it; ``error`` explains a
    failure, or why the entry could not be used.
    """

    __slots__ = ("run_id", "status", "url", "raw", "error")
    run_id: "int"
    status: "RunStatus"
    url: "Optional[str]"
    raw: object
    error: "Optional[str]"

    def __init__(self, run_id: int, status: "RunStatus", url: "Optional[str]" = None, raw: object = None,
                 error: "Optional[str]" = None) -> None:
        self.run_id = run_id
        self.status = status
        self.url = url
        self.raw = raw
        self.error = error

    @property
    def ready(self) -> bool:
        return self.status == READY

    def _key(self) -> "Tuple[object, ...]":
        return (self.run_id, self.status, self.url, self.raw, self.error)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunResult) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.run_id, self.status, self.url))

    def __repr__(self) -> str:
        return "RunResult(run_id=%d, status=%r, url=%r, error=%r)" % (
            self.run_id, self.status, redact_url(self.url), self.error)


class _Outcome:
    """An outcome that is one ``--json`` line: subclasses name their ``__slots__`` in output order."""

    __slots__: "Tuple[str, ...]" = ()
    status: "OutcomeStatus"

    @property
    def ok(self) -> bool:
        """True when the file is there: the run (or prompt) was ``saved`` now or ``skipped``
        because an earlier run saved it."""
        return self.status in ("saved", "skipped")

    def as_dict(self) -> "Dict[str, object]":
        """The fields as a dict in output order: exactly what ``--json`` prints for it."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Outcome) and type(other) is type(self) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self.as_dict().items()))


class FetchOutcome(_Outcome):
    """How one requested run ended in ``fetch``: the ``--json`` line, as an object.

    ``status``: ``saved``, ``skipped``, ``pending``, ``failed``, ``missing`` or ``error``.
    """

    __slots__ = ("run_id", "status", "path", "bytes", "error")
    run_id: "int"
    status: "OutcomeStatus"
    path: "Optional[str]"
    bytes: "Optional[int]"
    error: "Optional[str]"

    def __init__(self, run_id: int, status: "OutcomeStatus", path: "Optional[str]" = None,
                 bytes: "Optional[int]" = None, error: "Optional[str]" = None) -> None:
        self.run_id = run_id
        self.status = status
        self.path = path
        self.bytes = bytes
        self.error = error


class Task:
    """A text-to-sound task: ``status`` is ``SUCCESS``, ``PENDING`` or ``ERROR`` as the API says."""

    __slots__ = ("task_id", "status", "run_id", "error", "raw")
    task_id: "str"
    status: "TaskStatus"
    run_id: "Optional[int]"
    error: "Optional[str]"
    raw: "Optional[Dict[str, Any]]"

    def __init__(self, task_id: str, status: "TaskStatus", run_id: "Optional[int]" = None,
                 error: "Optional[str]" = None, raw: "Optional[Dict[str, Any]]" = None) -> None:
        self.task_id = task_id
        self.status = status
        self.run_id = run_id
        self.error = error
        self.raw = raw

    def __repr__(self) -> str:
        return "Task(task_id=%r, status=%r, run_id=%r, error=%r)" % (
            self.task_id, self.status, self.run_id, self.error)


class PromptOutcome(_Outcome):
    """How one prompt ended in ``generate``: the ``--json`` line, as an object."""

    __slots__ = ("prompt", "task_id", "run_id", "status", "path", "bytes", "error")
    prompt: "str"
    task_id: "Optional[str]"
    run_id: "Optional[int]"
    status: "OutcomeStatus"
    path: "Optional[str]"
    bytes: "Optional[int]"
    error: "Optional[str]"

    def __init__(self, prompt: str, task_id: "Optional[str]" = None, run_id: "Optional[int]" = None,
                 status: "OutcomeStatus" = "error", path: "Optional[str]" = None, error: "Optional[str]" = None,
                 bytes: "Optional[int]" = None) -> None:
        self.prompt, self.task_id, self.run_id = prompt, task_id, run_id
        self.status, self.path, self.bytes, self.error = status, path, bytes, error


# ---------------------------------------------------------------------------
# Functions: run IDs, answers, audio bytes, retry waits
# ---------------------------------------------------------------------------

def validate_run_ids(ids: "Union[Iterable[object], int, str]") -> "List[int]":
    """Return the run IDs as ints, first-seen order, repeats dropped.

    Accepts ints and strings of ASCII decimal digits (whitespace around them is
    ignored).  Raises one ``InvalidRunIdError`` naming every bad value: bools,
    floats, zero, negatives, other strings, values above 2**63-1, an empty input.
    A lone int or string counts as one ID.
    """
    if isinstance(ids, (int, str, bytes)):
        ids = [ids]
    try:
        items = list(ids)
    except TypeError:
        raise InvalidRunIdError([ids], "run IDs must be given as a list, not %s" % type(ids).__name__) from None
    if not items:
        raise InvalidRunIdError([], "no run IDs given")
    seen: "Set[int]" = set()
    good: "List[int]" = []
    bad: "List[object]" = []
    for item in items:
        value = _run_id_value(item)
        if value is None:
            bad.append(item)
        elif value not in seen:
            seen.add(value)
            good.append(value)
    if bad:
        raise InvalidRunIdError(bad)
    return good


def chunked(ids: "Iterable[T]", size: int = MAX_RUN_IDS) -> "List[List[T]]":
    """Split ``ids`` into consecutive lists of at most ``size`` (1..MAX_RUN_IDS), order kept."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_RUN_IDS:
        raise ValueError("chunk size must be a whole number from 1 to %d, not %r" % (MAX_RUN_IDS, size))
    items = list(ids)
    return [items[i:i + size] for i in range(0, len(items), size)]


def parse_results(body: object, run_ids: "Iterable[int]") -> "Dict[int, RunResult]":
    """Turn a decoded bulk-endpoint answer into ``{run_id: RunResult}`` for exactly ``run_ids``.

    Never raises for any JSON value: a body that is not an object, or an entry of
    the wrong shape, gives ``missing`` results whose ``error`` says what was wrong.
    IDs in the answer that were not asked for are ignored.
    """
    if not isinstance(body, dict):
        why = "the response is not a JSON object (it is %s)" % _json_kind(body)
        return {rid: RunResult(rid, MISSING, error=why) for rid in run_ids}
    entries: "Dict[int, object]" = {}
    for key, value in body.items():
        rid = _run_id_value(key) if isinstance(key, str) else None
        if rid is not None and rid not in entries:
            entries[rid] = value
    results: "Dict[int, RunResult]" = {}
    for rid in run_ids:
        if rid in entries:
            results[rid] = _classify(rid, entries[rid])
        else:
            results[rid] = RunResult(rid, MISSING)
    return results


def sniff_audio(head: "BytesLike") -> "Optional[str]":
    """Return the file extension for audio bytes that start with ``head``, else None.

    Tries the formats of _AUDIO_FORMATS in order: WAV (RIFF, RIFX, RF64, BW64), W64, AIFF/AIFC,
    FLAC, Ogg, MP4 audio, WebM, Matroska, MPEG audio and ADTS AAC.  An ID3v2 tag in front is
    looked past (its size is in its header); when ``head`` ends inside the tag, ``.mp3``.
    MPEG and AAC need a complete frame, and the next frame's header when ``head`` reaches it.
    """
    head = bytes(head)
    while True:
        tag = _id3_size(head)
        if not tag:
            break
        if tag >= len(head):
            return ".mp3"
        head = head[tag:]
    for ext, test in _AUDIO_FORMATS:
        if test(head):
            return ext
    return None


def redact_url(url: "OptStr") -> "OptStr":
    """``url`` without its query string (where presigned signatures live) and its ``user:password@``."""
    if not url:
        return url
    base, sep, _query = str(url).partition("?")
    scheme, slashes, rest = base.partition("//")
    netloc, slash, path = rest.partition("/")
    if slashes and "@" in netloc:
        base = scheme + slashes + "<redacted>@" + netloc.rpartition("@")[2] + slash + path
    return base + ("?<redacted>" if sep else "")


def retry_wait(headers: "Optional[Headers]", attempt: int, now: "Optional[float]" = None,
               rand: "Optional[Rand]" = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based) after a response with ``headers``.

    ``Retry-After-Ms``, then ``Retry-After`` (seconds or an HTTP date), then
    ``X-RateLimit-Reset`` (a Unix time), else exponential backoff with +-10% jitter.
    """
    import random
    now = time.time() if now is None else now
    rand = random.random if rand is None else rand
    hint = _retry_after(headers, now) if headers is not None else None
    if hint is not None:
        return hint
    return backoff(attempt, rand)


def backoff(attempt: int, rand: "Rand") -> float:
    delay = min(BACKOFF_MAX, BACKOFF_INITIAL * (2.0 ** attempt))
    return delay * (1.0 + (rand() - 0.5) * 0.2)


def saved_path(out_dir: str, run_id: int) -> "Optional[str]":
    """The path of a run already saved in ``out_dir`` (any known extension), else None."""
    for ext in AUDIO_EXTENSIONS:
        path = os.path.join(out_dir, "%d%s" % (run_id, ext))
        if os.path.isfile(path):
            return path
    return None


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

class Client:
    """A connection to the API with its key, keep-alive pools and retry policy.

    Use it in a ``with`` block (or call ``close()``): that closes its kept-alive
    connections; a client dropped unclosed leaves them to the garbage collector,
    which warns (``ResourceWarning``).  Safe to share between threads.

    Arguments, all optional:

    - ``api_key``: the key; defaults to $CAMB_API_KEY.  Sent to the API's own
      origin only, never to the storage or across a redirect.
    - ``base_url``: defaults to $CAMB_API_BASE_URL, else DEFAULT_BASE_URL.  Plain
      http is refused except on loopback.
    - ``timeout``: seconds for each connect and each read (more than 0, at
      most MAX_SECONDS).
    - ``max_attempts``: tries of one request or one download, the first
      included (default MAX_ATTEMPTS).  Only what is safe to repeat is retried.
    - ``retry_budget``: the most seconds one call may spend waiting between its
      tries (default RETRY_BUDGET); a server asking for a longer wait
      (``Retry-After``) ends the retries instead.
    - ``ssl_context``: the ``ssl.SSLContext`` for https, for example one that
      trusts a private CA; default ``ssl.create_default_context()``, which
      verifies certificates and honours $SSL_CERT_FILE.
    - ``api_concurrency``: the most API calls under way at once from all the
      client's threads (default API_CONCURRENCY); a 429 halves that window for
      a while, answered calls grow it back.
    - ``sleep``, ``clock`` (monotonic seconds), ``now`` (wall time, for HTTP
      dates) and ``rand`` (backoff jitter in [0, 1)): seams for tests.
    """

    def __init__(self, api_key: "Optional[str]" = None, *, base_url: "Optional[str]" = None,
                 timeout: float = DEFAULT_TIMEOUT, max_attempts: int = MAX_ATTEMPTS,
                 retry_budget: float = RETRY_BUDGET, sleep: "Sleep" = time.sleep, clock: "Clock" = time.monotonic,
                 now: "Clock" = time.time, rand: "Optional[Rand]" = None,
                 ssl_context: "Optional[ssl.SSLContext]" = None, api_concurrency: int = API_CONCURRENCY) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not str(key).strip():
            raise ConfigurationError("no API key: pass api_key= or set %s" % API_KEY_ENV)
        key = str(key).strip()
        if not all("!" <= ch <= "~" for ch in key):
            # It travels in an HTTP header (Latin-1 at most); API keys are printable ASCII.
            raise ConfigurationError("the API key may contain only printable ASCII characters without "
                                     "spaces (is %s the right value?)" % API_KEY_ENV)
        self._key = key
        url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.base_url = _check_base_url(url)
        try:
            self.timeout = float(timeout)
        except (TypeError, ValueError):
            raise ConfigurationError("timeout must be a number of seconds, not %r" % (timeout,)) from None
        if not self.timeout > 0:
            raise ConfigurationError("timeout must be more than 0 seconds")
        if self.timeout > MAX_SECONDS:
            raise ConfigurationError("timeout must be at most %d seconds (MAX_SECONDS): larger values "
                                     "overflow the system's timers" % MAX_SECONDS)
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.retry_budget = float(retry_budget)
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._rand = rand if rand is not None else _random  # `random` imported at the first retry
        self._ssl_context: "Optional[ssl.SSLContext]" = ssl_context
        if isinstance(api_concurrency, bool) or not isinstance(api_concurrency, int) or api_concurrency < 1:
            raise ConfigurationError("api_concurrency must be a whole number of at least 1")
        self._window = _CallWindow(api_concurrency, clock, sleep)
        self._unreachable: "Optional[APIUnreachableError]" = None  # set once the API proved out of reach
        import threading
        # How abort() reaches what is under way: the halt event of each piece of work (a journey, a
        # get_results) while it runs, and one for calls made on their own (replaced by a new one then).
        self._halted = threading.Event()
        self._works: "Set[threading.Event]" = set()
        self._works_lock = threading.Lock()
        self._pool = _Pool(self)
        self._log = _logger()

    def __repr__(self) -> str:
        return "Client(base_url=%r, api_key=<redacted>)" % self.base_url

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close idle kept-alive connections."""
        self._pool.close()

    @property
    def unreachable(self) -> "Optional[APIUnreachableError]":
        """The ``APIUnreachableError`` of the current (or last) batch, or None.

        Once one call has used all its tries without any answer from the API (refused, DNS,
        TLS, timeouts) while no other call got one either, every later call fails at once
        with that error instead of trying again.  ``fetch``, ``get_results`` and ``generate``
        start with a clean slate (``reset_unreachable``).
        """
        return self._unreachable

    def reset_unreachable(self) -> None:
        """Forget that the API was out of reach: the next call tries the network again."""
        self._unreachable = None

    @property
    def connections_opened(self) -> "Dict[str, int]":
        """How many connections this client opened, by origin (``scheme://host:port``)."""
        return dict(self._pool.opened)

    # -- the bulk endpoint -------------------------------------------------

    def get_results(self, run_ids: "RunIds") -> "Dict[int, RunResult]":
        """Resolve run IDs: ``{run_id: RunResult}``, one entry per requested ID, request order.

        One POST per chunk of at most five IDs, up to ``api_concurrency`` of them
        under way at once.  A chunk whose answer is unusable (after retries) gives
        ``missing`` results with ``error`` set, and the other chunks are kept; a
        rejected key raises ``AuthenticationError``.
        """
        ids = validate_run_ids(run_ids)
        self.reset_unreachable()
        results: "Dict[int, RunResult]" = {}
        for part in self._resolve_chunks(list(chunked(ids))):
            results.update(part)
        return results

    def _resolve_chunks(self, chunks: "List[List[int]]") -> "List[Dict[int, RunResult]]":
        """Each chunk's results, in order: the first alone (it finds a rejected key or an API out of
        reach in one call's tries), the others from up to the API window's limit of threads.

        The first exception a thread meets stops the others taking new chunks and is raised here once
        they have stopped; Ctrl-C here stops them too, without waiting for their calls under way."""
        import threading
        if not chunks:
            return []
        halted = threading.Event()
        return self._as_work(halted, lambda: self._resolve_in_threads(chunks, halted))

    def _resolve_in_threads(self, chunks: "List[List[int]]", halted: "threading.Event") -> "List[Dict[int, RunResult]]":
        import threading
        parts = [self._resolve_chunk(chunks[0], halted)] + [{} for _ in chunks[1:]]
        todo = iter(range(1, len(chunks)))
        lock = threading.Lock()
        failed: "List[BaseException]" = []

        def work() -> None:
            try:
                while True:
                    with lock:
                        i = next(todo, None) if not failed else None
                    if i is None:
                        return
                    parts[i] = self._resolve_chunk(chunks[i], halted)
            except BaseException as exc:  # handed to the calling thread
                with lock:
                    failed.append(exc)

        threads = [threading.Thread(target=work, name="sound_bulk-resolve", daemon=True)
                   for _ in range(min(self._window.limit, len(chunks) - 1))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException as exc:
            with lock:
                failed.append(exc)  # the others take no new chunk
            self._halt(halted)  # and the calls under way try no more (Ctrl-C)
            raise
        if failed:
            raise failed[0]
        return parts

    def _resolve_chunk(self, chunk: "List[int]", halted: "Optional[threading.Event]" = None) -> "Dict[int, RunResult]":
        try:
            body = self._call_json("POST", "text-to-sound-results", {"run_ids": chunk}, halted=halted)
        except AuthenticationError:
            raise
        except APIUnreachableError as exc:
            why = "the API cannot be reached: %s" % exc.cause  # the URL is in the one summary message
            return {rid: RunResult(rid, MISSING, error=why) for rid in chunk}
        except SoundBulkError as exc:
            return {rid: RunResult(rid, MISSING, error=str(exc)) for rid in chunk}
        return parse_results(body, chunk)

    # -- tasks (prompts -> run IDs) --------------------------------------------

    def create_task(self, prompt: str, *, duration: "Optional[float]" = None, audio_type: str = "sound",
                    project_name: "Optional[str]" = None, project_description: "Optional[str]" = None,
                    folder_id: "Optional[int]" = None) -> str:
        """Start a text-to-sound task; returns its ``task_id`` (a string).  Costs credits."""
        payload = _task_payload(prompt, duration, audio_type, project_name, project_description, folder_id)
        return self._create_task(payload)

    def _create_task(self, payload: "Dict[str, object]", halted: "Optional[threading.Event]" = None) -> str:
        body = self._call_json("POST", "text-to-sound", payload, halted=halted)
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if task_id in (None, "") or isinstance(task_id, (dict, list, bool)):
            raise APIError("the API did not return a task_id (got %s)" % _short_repr(body))
        return str(task_id)

    def get_task(self, task_id: str) -> Task:
        """The task's current state as a ``Task``."""
        return self._get_task(task_id)

    def _get_task(self, task_id: str, halted: "Optional[threading.Event]" = None) -> Task:
        from urllib.parse import quote
        body = self._call_json("GET", "text-to-sound/" + quote(str(task_id), safe=""), halted=halted)
        if not isinstance(body, dict):
            raise APIError("unexpected task status answer: %s" % _short_repr(body))
        word = str(body.get("status") or "PENDING").upper()
        run_id = _run_id_value(body["run_id"]) if body.get("run_id") is not None else None
        error = None
        status: "TaskStatus" = "SUCCESS"
        if word in _FAILED_WORDS:
            status = "ERROR"
            error = _first_text(body, ("exception_reason", "message", "error")) or "the task failed"
        elif word == "SUCCESS" and run_id is None:
            status, error = "ERROR", "the task succeeded but the API gave no run_id"
        elif word != "SUCCESS":
            status = "PENDING"
        return Task(str(task_id), status, run_id, error, body)

    # -- downloads ---------------------------------------------------------

    def download(self, run_id: "Union[int, str]", out_dir: str = ".", url: "Optional[str]" = None, *,
                 progress: "Optional[Progress]" = None,
                 cancel: "Optional[threading.Event]" = None) -> "Tuple[str, int]":
        """Save one run's audio as ``out_dir/<run_id>.<ext>``; returns ``(path, size)``.

        Resolves the URL when none is given, refreshes it when it has expired,
        resumes interrupted transfers, checks length and audio format, and only
        then gives the file its final name.  Raises ``DownloadError`` (an OSError),
        or ``FileExistsError`` when the run is already saved (``saved_path`` tells
        beforehand; ``fetch`` reports such a run as ``skipped``).

        ``progress``: called with the number of bytes each time some arrive (a
        transfer that starts over counts its bytes again).  ``cancel``: a
        ``threading.Event``; once set, the transfer stops at its next read with
        ``DownloadError("interrupted")`` and leaves no file.
        """
        rid = validate_run_ids([run_id])[0]
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise DownloadError("cannot create %s: %s" % (out_dir, exc.strerror or exc), run_id=rid) from None
        existing = saved_path(out_dir, rid)
        if existing:
            raise FileExistsError(17, "already saved", existing)
        halted = self._halted
        if url is None:
            url = self._fresh_url(rid, None, halted)
        return _Download(self, rid, out_dir, url, progress, cancel, halted).run()

    def fetch(self, run_ids: "RunIds", out_dir: str = ".", *, workers: "Optional[int]" = None, wait: float = 0.0,
              progress: "Optional[Progress]" = None, on_outcome: "Optional[OnFetchOutcome]" = None,
              cancel: "Optional[threading.Event]" = None,
              on_wait: "Optional[OnWait]" = None) -> "List[FetchOutcome]":
        """The whole journey: resolve, download in parallel, report every run.

        Returns one ``FetchOutcome`` per requested run, in request order.  Runs
        already saved in ``out_dir`` are ``skipped`` without a request.  With
        ``wait`` > 0, runs not ready are asked for again (with growing pauses)
        until they are or ``wait`` seconds have passed.  Ctrl-C raises
        ``FetchInterrupted`` carrying the outcomes so far; no partial file is
        left under a final name.

        ``workers``: parallel downloads, and the most bulk calls at once (which
        are also at most ``api_concurrency``); by default 4 per CPU, from 4 to
        DEFAULT_WORKERS downloads and API_CONCURRENCY bulk calls.
        ``on_outcome(outcome)``: called with each run's ``FetchOutcome`` as soon
        as the run settles (in the order they settle), to show results before
        the batch ends.  ``progress(nbytes)``: called as bytes arrive, from
        the download threads at once, so it must be quick and thread-safe.
        ``on_wait(runs, next_check_in, seconds_left)``: called about once a
        second while only runs that are not ready remain.  ``cancel``: a
        ``threading.Event``; set it (from another thread) to stop: transfers
        stop at their next read, and every run not finished ends as ``error``
        ("interrupted") with no partial file left.
        """
        ids = validate_run_ids(run_ids)
        self.reset_unreachable()
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or not 1 <= workers <= 64):
            raise ConfigurationError("workers must be a whole number from 1 to 64")
        journey = _Fetch(self, ids, out_dir, workers, float(wait or 0), progress, on_outcome, cancel, on_wait)
        return self._as_work(journey.halted, journey.run)

    def abort(self) -> None:
        """Stop everything under way on this client, from any thread, as Ctrl-C would: every call and
        download ends at once (its connection is shut, a wait before trying again ends, nothing is
        tried again); a ``fetch`` or ``generate`` running now raises ``FetchInterrupted`` (one waiting
        for its next round of asking, when that wait is over), and ``get_results`` gives the runs it
        could not ask for as missing, saying why.  What is started afterwards is not affected."""
        import threading
        with self._works_lock:
            works, alone, self._halted = list(self._works), self._halted, threading.Event()
        for halted in works:
            halted.set()
        self._halt(alone)
        self._pool.abort()  # every connection: the works' and the calls' on their own

    def _halt(self, halted: "threading.Event", cut: bool = False) -> None:
        """Stop one piece of work (its ``halted``: Ctrl-C in fetch, generate, get_results): each of its
        calls and downloads stops at its next wait before trying again (that wait ends at once), or
        before it sends, and is not tried again.  A request on the wire still gets its answer, unless
        ``cut``: then its connections are shut (those of other work on the client are left alone)."""
        halted.set()
        self._window.wake()
        if cut:
            self._pool.abort(halted)

    def _as_work(self, halted: "threading.Event", work: "Callable[[], T]") -> "T":
        """``work()``, during which ``abort()`` sets ``halted``: the event all its calls and downloads take."""
        with self._works_lock:
            self._works.add(halted)
        try:
            return work()
        finally:
            with self._works_lock:
                self._works.discard(halted)

    # -- machinery -----------------------------------------------------------

    def _fresh_url(self, rid: int, stale: "Optional[str]", halted: "threading.Event",
                   why: "Optional[str]" = None) -> str:
        """A download URL for ``rid`` other than ``stale``; ``why`` a new one is needed goes into the error."""
        result = self._resolve_chunk([rid], halted)[rid]
        if result.ready and result.url is not None and result.url != stale:  # a ready result has a url
            return result.url
        if result.ready:
            problem = "the API gave the same URL again"
        else:
            problem = "the API has no download URL for it now (%s)" % (result.error or result.status)
        raise DownloadError("run %d: %s" % (rid, "%s, and %s" % (why, problem) if why else problem), run_id=rid)

    def _call_json(self, method: str, path: str, payload: "Optional[Dict[str, object]]" = None,
                   retry: bool = True, halted: "Optional[threading.Event]" = None) -> object:
        """One API call with retries; returns the decoded JSON answer.

        A call in ONCE_ONLY is tried again only when it certainly never reached the server.
        Every try holds a slot of the client's ``_CallWindow``.  A 429 shrinks the window, and a
        wait the server asks for (Retry-After and kin) pauses every caller, not only this one.
        When no try got an answer and no other call got one meanwhile, the API is out of reach:
        ``APIUnreachableError``, for this call and at once for every later one.
        ``halted``: the halt event of the work this call is part of (``_as_work``); by default, that of
        calls made on their own, as it is now.
        """
        once = (method, path) in ONCE_ONLY
        url = self.base_url + "/" + path
        body = None if payload is None else _json().dumps(payload).encode("utf-8")
        headers = {"x-api-key": self._key, "User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempts = self.max_attempts if retry else 1
        window = self._window
        halted = self._halted if halted is None else halted
        start = self._clock()
        answers_before = window.answers
        # What a call halted before its first try raises (Client._halt); then, the last try's error
        error: "Union[TransportError, APIError]" = TransportError(
            "%s %s: stopped before it was sent" % (method, path), sent=False)
        for attempt in range(attempts):
            known = self._unreachable
            if known is not None:  # another call found the API out of reach: this one is not even tried
                raise APIUnreachableError(known.url, known.cause, known.tries, sent=False)
            answered = False
            ticket = window.acquire(halted)
            if ticket is None:  # halted while it waited for its turn
                raise error
            try:  # the slot goes back whatever happens, Ctrl-C included
                try:
                    with self._pool.request(method, url, headers, body, once=once, halted=halted) as answer:
                        answered = True
                        data = answer.read_all(MAX_JSON_BYTES)
                except (TransportError, OSError, _http_errors()) as exc:
                    error = exc if isinstance(exc, TransportError) else TransportError(
                        "%s %s: reading the answer failed: %s" % (method, path, self._redact(_exc_text(exc))))
                    final = not error.retryable or not _may_send_again(once, error.sent)
                    wait, throttled = backoff(attempt, self._rand), False
                else:
                    if answer.status < 300:
                        window.release(ticket, True)
                        ticket = None
                        return self._decode(answer, data)
                    error, final, wait, throttled = self._refusal(answer, data, once, attempt)
                done = final or attempt + 1 >= attempts or self._clock() - start + wait > self.retry_budget
                give_up = done or halted.is_set()
                # A wait the server asked for is for every caller: the window holds them all until it is over
                # (also when this call was halted: other work on the client goes on).
                pause = wait if throttled and not done else None
                window.release(ticket, answered, shrink=answered and answer.status == 429, pause=pause)
                ticket = None
            finally:
                if ticket is not None:
                    window.release(ticket, answered)
            if give_up:
                if isinstance(error, TransportError) and not answered and not halted.is_set():
                    self._out_of_reach(error, _cause(error, method, url), answers_before, attempts, attempt)
                raise error
            self._log.info("%s %s failed (%s); retry %d in %.1f s", method, path, error, attempt + 1, wait)
            if pause is None:
                _nap(self._sleep, wait, halted)  # halted: the next acquire says so, and the error is raised
        raise AssertionError("unreachable")

    def _refusal(self, answer: "_Answer", data: bytes, once: bool,
                 attempt: int) -> "Tuple[APIError, bool, float, bool]":
        """What an answer of 300 or more means for the call: (error, final, wait before another try,
        whether the API asked every caller to wait)."""
        error = self._api_error(answer, data)
        final = not _may_send_again(once, True) or (answer.status not in RETRY_STATUSES and answer.status < 500)
        throttled = answer.status == 429 or _retry_after(answer.headers, self._now()) is not None
        error.retry_after = wait = retry_wait(answer.headers, attempt, now=self._now(), rand=self._rand)
        return error, final, wait, throttled

    def _out_of_reach(self, error: TransportError, cause: str, answers_before: int, attempts: int,
                      attempt: int) -> None:
        """Raise ``APIUnreachableError`` (and keep it for every later call) when a call that got no answer
        proves the API out of reach: no other call got one meanwhile, and its last try could not
        connect, or met an error no try would mend, or was its last."""
        if (not error.answered and self._window.answers == answers_before
                and (not error.sent or not error.retryable or (attempts > 1 and attempt + 1 >= attempts))):
            self._unreachable = APIUnreachableError(self.base_url, cause, attempt + 1, sent=error.sent)
            raise self._unreachable from None

    def _decode(self, answer: "_Answer", data: bytes) -> object:
        decoded, problem = _parse_json(data, self._redact)
        if problem:
            raise APIError("HTTP %d with %s: %s" % (answer.status, problem, _snippet(data)), status=answer.status)
        return decoded

    def _api_error(self, answer: "_Answer", data: bytes) -> APIError:
        status = answer.status
        detail: object = None
        decoded, problem = _parse_json(data, self._redact)
        if problem is None and isinstance(decoded, dict) and "detail" in decoded:
            detail = decoded["detail"]
            text = _render_detail(detail)
        elif problem is None:
            detail = decoded
            text = _short_repr(decoded, 300)
        else:
            text = _snippet(data) or answer.reason or ""
        message = "HTTP %d %s: %s" % (status, answer.reason or "", text)
        if status in (401, 403):
            return AuthenticationError("the API rejected the key (%s)" % message, status, detail)
        return APIError(message, status, detail)

    def _redact(self, text: "AnyStr") -> "AnyStr":
        """THE redactor: ``text`` (from the network) with this client's key, and any piece of it that a
        cut could have left at either end, replaced by ``<redacted>``.  Every answer, header, reason
        phrase and transport error passes here as it arrives (see ``_Answer``), before anything cuts,
        stores, logs or prints it; the strings of a decoded JSON answer pass once more (JSON escapes
        can spell the key in a way the bytes do not show)."""
        if not text:
            return text
        if isinstance(text, bytes):
            return _redact_key(text, self._key.encode("ascii"), b"<redacted>")
        return _redact_key(str(text), self._key, "<redacted>")


# ---------------------------------------------------------------------------
# From prompts to files: tasks, and a manifest that loses no paid task
# ---------------------------------------------------------------------------

class Manifest:
    """An append-only JSON-lines journal of the tasks created for prompts.

    Every line is written and fsynced before the step it records is relied on,
    so a crash at any point leaves enough to resume without paying twice.  A
    torn last line (a crash mid-write) is ignored on reading.
    """

    def __init__(self, path: str) -> None:
        import threading
        self.path = path
        self._lock = threading.Lock()

    def records(self) -> "List[Record]":
        """Every line that is a JSON object with fields of the right types, in order (see ``_manifest_record``);
        garbage, non-UTF-8 and deeply nested lines are skipped."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigurationError("cannot read the manifest %s: %s" % (self.path, exc.strerror or exc)) from None
        out: "List[Record]" = []
        for line in lines:
            try:
                record = _json().loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                continue
            record = _manifest_record(record)
            if record is not None:
                out.append(record)
        return out

    def append(self, record: "Mapping[str, object]") -> None:
        """Write one record as a line and fsync it; raises OSError when that cannot be done."""
        import errno
        data = (_json().dumps(record, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            try:
                size = os.fstat(fd).st_size
                if size and _byte_at(fd, size - 1) != b"\n":
                    data = b"\n" + data  # seal a torn line left by a crash
                view = memoryview(data)
                while view:  # os.write may write less than asked (a full disk, a signal): finish it
                    written = os.write(fd, view)
                    if not written:
                        raise OSError(errno.EIO, "could not write the manifest line")
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)

    def state(self) -> "Dict[str, Record]":
        """``{key: merged record}`` for every prompt occurrence the manifest knows."""
        merged: "Dict[str, Record]" = {}
        for record in self.records():
            key = record.get("key")
            if isinstance(key, str):
                merged.setdefault(key, {}).update({k: v for k, v in record.items() if k not in ("event", "events")})
                merged[key].setdefault("events", []).append(record.get("event"))
        return merged


def manifest_run_ids(path: str) -> "List[int]":
    """The run IDs recorded in a manifest file (or the manifest inside a folder), in order."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ConfigurationError("no manifest at %s" % path)
    ids: "List[int]" = []
    for entry in Manifest(path).state().values():
        rid = entry.get("run_id")
        if isinstance(rid, int) and not isinstance(rid, bool) and rid not in ids:
            ids.append(rid)
    return ids


def prompt_keys(prompts: "Iterable[str]", duration: "Optional[float]", audio_type: str) -> "List[str]":
    """A stable key per prompt occurrence: the same prompt twice is two sounds."""
    import hashlib
    seen: "Dict[str, int]" = {}
    keys = []
    for prompt in prompts:
        base = hashlib.sha256(_json().dumps([prompt, duration, audio_type]).encode("utf-8")).hexdigest()[:16]
        seen[base] = seen.get(base, 0) + 1
        keys.append("%s-%d" % (base, seen[base]))
    return keys


def generate(client: Client, prompts: "Iterable[str]", out_dir: str = ".", *, duration: "Optional[float]" = None,
             audio_type: str = "sound", resubmit: bool = False, workers: int = DEFAULT_WORKERS, wait: float = 600.0,
             on_outcome: "Optional[OnPromptOutcome]" = None, project_name: "Optional[str]" = None,
             project_description: "Optional[str]" = None, folder_id: "Optional[int]" = None,
             on_status: "Optional[OnStatus]" = None) -> "List[PromptOutcome]":
    """Prompts in, audio files out: create tasks, poll them, resolve and download the runs.

    Every task created is recorded in ``out_dir/sound_bulk-manifest.jsonl``
    before anything else happens, so a rerun resumes it instead of paying for a
    new one.  A prompt whose submission may have reached the API without an
    answer is not submitted again unless ``resubmit`` is true.  If the manifest
    cannot be written after a task was created, the task ID is logged as an
    error (shown on stderr when logging is not configured) and kept in the
    outcome's ``error``.  Tasks are polled concurrently (at most ``workers``
    requests at a time) for up to ``wait`` seconds, finished runs are resolved
    five at a time and downloaded as they finish.  ``on_outcome(outcome)`` is
    called as each prompt settles; ``on_status(text)`` before each pause
    between polling rounds (``3 tasks: 1 done, 2 generating, next check in
    4 s``).  ``project_name``, ``project_description`` and ``folder_id`` go into
    every task's request.  Returns one ``PromptOutcome`` per prompt, in order;
    Ctrl-C raises ``FetchInterrupted`` carrying them (every created task is in
    the manifest by then).
    """
    return _generate_job(client, prompts, out_dir, duration=duration, audio_type=audio_type,
                         resubmit=resubmit, workers=workers, wait=wait, on_outcome=on_outcome,
                         project_name=project_name, project_description=project_description,
                         folder_id=folder_id, on_status=on_status).run()


# ---------------------------------------------------------------------------
# Machinery: parsing and checking helpers
# ---------------------------------------------------------------------------

_SUBMISSION_EVENTS = ("submitting", "submit_unknown", "created")


def _manifest_record(line: object) -> "Optional[Record]":
    """A manifest line as a record, or None to ignore it: a line (hand-edited, say) whose ``task_id`` is not
    a non-empty string, ``run_id`` not a valid run ID, ``event``, ``key``, ``error`` or ``task_status`` not a
    string, is ignored as a whole, with one exception: if it has a string ``key`` and may record a
    submission (its event is one, or is there but not a string, or it names a task), it becomes a bare
    ``submit_unknown`` for that key, so the prompt is not paid for again without ``--resubmit``."""
    if not isinstance(line, dict):
        return None
    record: "Record" = line
    task_id, key = record.get("task_id", "?"), record.get("key", "")
    if (isinstance(task_id, str) and task_id
            and ("run_id" not in record or (isinstance(record["run_id"], int)
                                            and _run_id_value(record["run_id"]) is not None))
            and all(isinstance(record.get(name, ""), str) for name in ("event", "key", "task_status"))
            and isinstance(record.get("error"), (str, type(None)))):
        return record
    event = record.get("event")
    if isinstance(key, str) and ("task_id" in record or event in _SUBMISSION_EVENTS
                                 or ("event" in record and not isinstance(event, str))):
        return {"event": "submit_unknown", "key": key}
    return None


def _run_id_value(item: object) -> "Optional[int]":
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        value = item
    elif isinstance(item, str):
        text = item.strip()
        if not text or len(text) > 40 or text.strip("0123456789"):  # ASCII digits only (no str.isascii on 3.6)
            return None
        value = int(text)
    else:
        return None
    return value if 1 <= value <= MAX_RUN_ID else None


def _classify(rid: int, value: object) -> RunResult:
    if value is None:
        return RunResult(rid, PENDING, raw=value)
    if isinstance(value, str):  # lenient: the URL itself, or a bare status word
        word = value.strip().upper()
        if _is_http_url(value):
            return RunResult(rid, READY, url=value.strip(), raw=value)
        if word in _PENDING_WORDS or not word:
            return RunResult(rid, PENDING, raw=value)
        if word in _FAILED_WORDS:
            return RunResult(rid, FAILED, raw=value, error="the service reports status %s" % word)
        return RunResult(rid, MISSING, raw=value, error="unexpected entry %s" % _short_repr(value))
    if not isinstance(value, dict):
        return RunResult(rid, MISSING, raw=value, error="unexpected entry of type %s" % _json_kind(value))
    status = value.get("status")
    word = status.strip().upper() if isinstance(status, str) else ""
    url = value.get("output_url")
    reason = _first_text(value, ("error", "exception_reason", "error_message"))
    if word in _FAILED_WORDS or (reason and not word):
        why = reason or _first_text(value, ("message", "detail")) or "the service reports status %s" % word
        return RunResult(rid, FAILED, raw=value, error=why)
    if word in _PENDING_WORDS:
        return RunResult(rid, PENDING, raw=value)
    if url is None or url == "":
        return RunResult(rid, PENDING, raw=value)
    if isinstance(url, str) and _is_http_url(url):
        return RunResult(rid, READY, url=url.strip(), raw=value)
    return RunResult(rid, MISSING, raw=value, error="output_url is not an http(s) URL: %s" % _short_repr(url))


def _first_text(mapping: "Mapping[str, object]", keys: "Iterable[str]") -> "Optional[str]":
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:500]
        if value not in (None, "", [], {}, False):
            return _short_repr(value, 500)
    return None


def _is_http_url(text: str) -> bool:
    import re
    from urllib.parse import urlsplit
    text = text.strip()
    if not text or re.search(r"[\s\x00-\x1f]", text):  # \s: what str.isspace() calls a space
        return False
    try:
        parts = urlsplit(text)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _id3_size(head: bytes) -> int:
    """The length of the ID3v2 tag at the start of ``head`` (header and footer included), else 0."""
    if len(head) < 10 or head[:3] != b"ID3" or head[3] not in (2, 3, 4) or head[4] == 0xFF:
        return 0
    if any(b & 0x80 for b in head[6:10]):  # "syncsafe": seven bits per byte
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    return 10 + size + (10 if head[5] & 0x10 else 0)


#: MPEG audio bitrates in kbit/s for indexes 1-14, by (MPEG-1?, layer); 0 (free) and 15 are refused.
_MPEG_KBPS = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
#: Sample rates for indexes 0-2 (3 is reserved), by the version bits (1 is reserved).
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
#: ADTS sample-rate indexes 0-12 are defined; 13-15 are not.
_ADTS_RATES = 13


def _mpeg_frame(head: bytes, pos: int) -> int:
    """The length of the MPEG audio frame whose header is at ``pos``, or 0 when there is none."""
    if len(head) < pos + 4 or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return 0
    version, layer = (head[pos + 1] >> 3) & 3, 4 - ((head[pos + 1] >> 1) & 3)
    rate_index, kbps_index = (head[pos + 2] >> 2) & 3, head[pos + 2] >> 4
    if version == 1 or layer == 4 or rate_index == 3 or kbps_index in (0, 15) or head[pos + 3] & 3 == 2:
        return 0  # reserved version, layer, sample rate, bitrate or emphasis: not a frame
    mpeg1 = version == 3
    bitrate = _MPEG_KBPS[(mpeg1, layer)][kbps_index - 1] * 1000
    rate = _MPEG_RATES[version][rate_index]
    padding = (head[pos + 2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    return (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding


def _adts_frame(head: bytes, pos: int) -> int:
    """The length of the ADTS (AAC) frame whose header is at ``pos``, or 0 when there is none."""
    if len(head) < pos + 7 or head[pos] != 0xFF or head[pos + 1] & 0xF6 != 0xF0:
        return 0
    if (head[pos + 2] >> 2) & 0x0F >= _ADTS_RATES:
        return 0
    length = ((head[pos + 3] & 3) << 11) | (head[pos + 4] << 3) | (head[pos + 5] >> 5)
    return length if length >= 7 else 0


def _frames(frame_length: "Callable[[bytes, int], int]") -> "Callable[[bytes], bool]":
    """A test for a stream of frames: one whole frame, and the next header when ``head`` reaches it."""
    def test(head: bytes) -> bool:
        length = frame_length(head, 0)
        if not length or len(head) < length:
            return False
        return len(head) < length + 4 or bool(frame_length(head, length))
    return test


def _ebml_doctype(head: bytes) -> "Optional[bytes]":
    """The DocType of a Matroska/WebM (EBML) header, as bytes, else None."""
    if head[:4] != b"\x1a\x45\xdf\xa3":
        return None
    at = head.find(b"\x42\x82", 4, 64)
    if at < 0 or at + 3 > len(head) or not head[at + 2] & 0x80:
        return None
    return head[at + 3:at + 3 + (head[at + 2] & 0x7F)].rstrip(b"\0")


#: MP4 brands (bytes 8-12 of an ``ftyp`` box) that mean audio, or that generic writers use for it.
_MP4_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ", b"mp41", b"mp42", b"isom",
                               b"iso2", b"iso4", b"iso5", b"iso6", b"dash", b"3gp4", b"3gp5", b"3gp6"})

#: What sniff_audio recognises, in the order it tries: (extension, test of the first bytes).
_AUDIO_FORMATS: "Tuple[Tuple[str, Callable[[bytes], bool]], ...]" = (
    (".wav", lambda h: h[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and h[8:12] == b"WAVE"),
    (".w64", lambda h: h[:16] == _W64_RIFF and h[24:40] == _W64_WAVE),
    (".aiff", lambda h: h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC")),
    (".flac", lambda h: h[:4] == b"fLaC" and len(h) >= 8 and h[4] & 0x7F == 0 and h[5:8] == b"\0\0\x22"),
    (".ogg", lambda h: h[:5] == b"OggS\0"),
    (".m4a", lambda h: h[4:8] == b"ftyp" and h[8:12] in _MP4_AUDIO_BRANDS),
    (".webm", lambda h: _ebml_doctype(h) == b"webm"),
    (".mka", lambda h: _ebml_doctype(h) == b"matroska"),
    (".mp3", _frames(_mpeg_frame)),
    (".aac", _frames(_adts_frame)),
)

#: Containers and formats recognised but not saved: their first bytes, and what to call them.
_UNSUPPORTED = (
    (b"RIFF", "RIFF"), (b"RIFX", "RIFF"), (b"FORM", "IFF"), (b"\x1a\x45\xdf\xa3", "Matroska"),
    (b"caff", "Core Audio"), (b".snd", "Sun AU"), (b"MThd", "MIDI"), (b"#!AMR", "AMR"), (b"wvpk", "WavPack"),
    (b"MAC ", "Monkey's Audio"), (b"MPCK", "Musepack"), (b"TTA1", "TTA"), (b"OggS", "Ogg"),
    (b"0&\xb2u\x8ef\xcf\x11", "ASF"),
)


def _unsupported_audio(head: "BytesLike") -> "Optional[str]":
    """A name for a container or audio format that sniff_audio does not save, else None."""
    head = bytes(head)
    if head[4:8] == b"ftyp":
        return "MP4 (brand %s)" % _short_repr(head[8:12].decode("latin-1"))
    for magic, name in _UNSUPPORTED:
        if head.startswith(magic):
            kind = head[8:12] if magic in (b"RIFF", b"RIFX", b"FORM") else _ebml_doctype(head)
            return "%s (%s)" % (name, _short_repr(kind.decode("latin-1"))) if kind else name
    return None


def _describe_bytes(head: "BytesLike") -> str:
    head = bytes(head)
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8")):
        if head.startswith(bom):
            text = head[len(bom):len(bom) + 256].decode(codec, "replace").encode("ascii", "replace")
            return "%s (%s text)" % (_describe_bytes(text), codec[:6].upper())
    text = bytes(head[:64]).lstrip().lower()
    if text.startswith((b"<!doctype", b"<html")) or b"<body" in text:
        return "an HTML page"
    if text.startswith((b"<?xml", b"<error")):
        return "an XML document"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if not head:
        return "an empty body"
    return "bytes in no known format"


#: The 16-byte chunk IDs of Sony Wave64 (W64): the file's own, its form type and its audio data.
_W64_RIFF: "bytes" = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_W64_WAVE: "bytes" = b"wave\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"
_W64_DATA = b"data\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"
_UNKNOWN_SIZE = 0xFFFFFFFF  # what a streaming WAV writer leaves in a size it could not go back to


def _declared_length(head: "BytesLike") -> "Optional[int]":
    """How many bytes a file that starts with ``head`` says it has, or None when it does not say.

    WAV (RIFF, RIFX, RF64/BW64 through their ds64 chunk, W64) and AIFF carry the size of the whole
    file in their first bytes, WAV also the size of its ``data`` chunk: the longer of the two counts.
    MP4 boxes and a Matroska/WebM segment carry their own sizes: the last one that starts within
    ``head`` must end within the file.
    """
    import struct
    head = bytes(head)
    if head[4:8] == b"ftyp":
        return _mp4_length(head)
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _ebml_length(head)
    if head[:16] == _W64_RIFF and len(head) >= 24:
        return _chunk_walk(head, struct.unpack("<Q", head[16:24])[0], 40, 16, "<Q", 8, (_W64_DATA,), None)
    if head[:4] not in (b"RIFF", b"RIFX", b"RF64", b"BW64", b"FORM") or len(head) < 8:
        return None
    order = ">" if head[:4] in (b"RIFX", b"FORM") else "<"
    size = struct.unpack(order + "I", head[4:8])[0]
    total = size + 8 if size != _UNKNOWN_SIZE else None
    data64 = None
    if head[12:16] == b"ds64" and len(head) >= 36:  # RF64/BW64: the real sizes, in 64 bits
        riff64, data64 = struct.unpack("<QQ", head[20:36])
        total = riff64 + 8
    return _chunk_walk(head, total, 12, 4, order + "I", 2, (b"data", b"SSND"), data64)


def _mp4_length(head: bytes) -> "Optional[int]":
    """Where the last MP4 box that starts within ``head`` ends (None if a size is 0, "to the end", or broken)."""
    import struct
    pos = end = 0
    while pos + 8 <= len(head):
        size = struct.unpack(">I", head[pos:pos + 4])[0]
        if size == 1 and pos + 16 <= len(head):
            size = struct.unpack(">Q", head[pos + 8:pos + 16])[0]
        if size < 8:
            return None
        end = pos = pos + size
    return end or None


def _ebml_vint(head: bytes, pos: int) -> "Tuple[Optional[int], int]":
    """An EBML variable-length number at ``pos``: (value, length); value None when all ones (unknown)."""
    if pos >= len(head) or not head[pos]:
        return None, 0
    length = 9 - head[pos].bit_length()
    if pos + length > len(head):
        return None, 0
    value = head[pos] & (0xFF >> length)
    for byte in head[pos + 1:pos + length]:
        value = (value << 8) | byte
    return (None if value == (1 << (7 * length)) - 1 else value), length


def _ebml_length(head: bytes) -> "Optional[int]":
    """Where a Matroska/WebM file's Segment ends, when its header says (a live stream's does not)."""
    size, n = _ebml_vint(head, 4)
    if size is None:
        return None
    pos = 4 + n + size
    if head[pos:pos + 4] != b"\x18\x53\x80\x67":
        return None
    size, n = _ebml_vint(head, pos + 4)
    return pos + 4 + n + size if size is not None else None


def _chunk_walk(head: bytes, total: "Optional[int]", pos: int, id_size: int, size_format: str, align: int,
                data_ids: "Tuple[bytes, ...]", data64: "Optional[int]") -> "Optional[int]":
    """The larger of ``total`` and the end of the audio data chunk, if that chunk is within ``head``.

    Chunks are an ID of ``id_size`` bytes and a size (``size_format``), padded to ``align`` bytes;
    a W64 size counts its own header, a RIFF or AIFF size does not.
    """
    import struct
    header = id_size + struct.calcsize(size_format)
    ends = [total] if total is not None else []
    while pos + header <= len(head):
        chunk_id = head[pos:pos + id_size]
        size = struct.unpack(size_format, head[pos + id_size:pos + header])[0]
        body = size - header if id_size == 16 else size
        if chunk_id in data_ids:
            if size == _UNKNOWN_SIZE:
                body = data64
            if body is not None and body >= 0:
                ends.append(pos + header + body)
            break
        if body < 0:
            break
        pos += header + body + (-body % align)
    return max(ends) if ends else None


def _short_repr(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply; an int too long for repr (3.11+)
        text = "<%s too large to show>" % _json_kind(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


#: Shortest piece of a key, at either end of a text (where a cut leaves it), that is still redacted.
_MIN_KEY_FRAGMENT = 6


def _redact_key(text: "AnyStr", key: "AnyStr", mark: "AnyStr") -> "AnyStr":
    """``text`` (str or bytes) with ``key`` replaced by ``mark``, and a piece of the key that a cut left
    at the end (a prefix of it) or at the start (a suffix); the work of ``Client._redact``."""
    text = text.replace(key, mark)
    # A piece of n >= _MIN_KEY_FRAGMENT characters at an end holds the key's first (or last) few within
    # len(key) - 1 characters of that end: where neither is, as in almost every text, no search is needed.
    reach = len(key) - 1
    if key[:_MIN_KEY_FRAGMENT] in text[max(0, len(text) - reach):]:
        for n in range(reach, _MIN_KEY_FRAGMENT - 1, -1):
            if text.endswith(key[:n]):
                text = text[:len(text) - n] + mark
                break
    if key[len(key) - _MIN_KEY_FRAGMENT:] in text[:reach]:
        for n in range(reach, _MIN_KEY_FRAGMENT - 1, -1):
            if text.startswith(key[len(key) - n:]):
                text = mark + text[n:]
                break
    return text


class _TooDeep(Exception):
    pass


def _parse_json(data: bytes, redact: "Callable[[str], str]") -> "Tuple[object, Optional[str]]":
    """A JSON answer as ``(value, None)``, or ``(None, what is wrong)``; never raises.

    Every string in the value, object keys too, passes through ``redact``; nesting deeper than
    MAX_JSON_DEPTH is refused (so nothing downstream can recurse too deep).
    """
    try:
        text = data.decode("utf-8")
        if _nests_too_deep(text):  # not even parsed: see _nests_too_deep
            return None, "JSON nested more than %d deep" % MAX_JSON_DEPTH
        value = _json().loads(text)
    except (UnicodeDecodeError, ValueError):
        return None, "a body that is not JSON"
    except RecursionError:
        return None, "JSON nested too deeply"

    def scrub(item: object, depth: int) -> object:
        if isinstance(item, str):
            return redact(item)
        if isinstance(item, (list, dict)) and depth >= MAX_JSON_DEPTH:
            raise _TooDeep
        if isinstance(item, list):
            return [scrub(v, depth + 1) for v in item]
        if isinstance(item, dict):
            return {redact(k): scrub(v, depth + 1) for k, v in item.items()}
        return item

    try:
        return scrub(value, 0), None
    except _TooDeep:
        return None, "JSON nested more than %d deep" % MAX_JSON_DEPTH


def _nests_too_deep(text: str) -> bool:
    """Whether JSON ``text`` opens more than MAX_JSON_DEPTH arrays or objects inside one another (strings
    skipped).  Such text is refused before ``json.loads`` sees it: parsing it runs into the interpreter's
    recursion limit, and on 3.8 that can abort the whole process ("Fatal Python error: Cannot recover
    from stack overflow"), which no ``except`` catches.  Cheap for every answer with few brackets."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    import re
    depth = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        mark = token.group()
        if mark == "[" or mark == "{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif mark == "]" or mark == "}":
            depth -= 1
    return False


#: What ``_terminal_safe`` escapes: C0 controls, DEL, C1 controls, lone surrogates (unprintable), the
#: Unicode line/paragraph separators and the bidi controls that can reorder what a terminal shows.
_UNSAFE_CHARS = u"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _terminal_safe(text: object) -> str:
    """THE sanitiser for human output: ``text`` on one line, every character of _UNSAFE_CHARS shown as
    an escape (``\\n``, ``\\x1b``, ``\\u202e``), so a server cannot draw, move, hide or forge lines.
    Applied where lines are written for people (``_Console``, the ``-v`` log formatter); ``--json``
    keeps the exact text (JSON escapes it)."""
    import re
    return re.sub(_UNSAFE_CHARS, lambda m: _ESCAPES.get(m.group(0)) or (
        "\\x%02x" % ord(m.group(0)) if ord(m.group(0)) < 0x100 else "\\u%04x" % ord(m.group(0))), str(text))


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _render_detail(detail: object) -> str:
    """A readable one-line account of a FastAPI-style ``detail``."""
    if isinstance(detail, str):
        return detail[:500]
    if isinstance(detail, list):
        parts: "List[str]" = []
        for item in detail[:10]:
            if isinstance(item, dict):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
                msg = item.get("msg") or item.get("message") or _short_repr(item)
                parts.append("%s: %s" % (where, msg) if where else str(msg))
            else:
                parts.append(str(item))
        return "; ".join(parts)[:500]
    return _short_repr(detail, 500)


def _retry_after(headers: "Headers", now: float) -> "Optional[float]":
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        if value and all("0" <= ch <= "9" for ch in value):  # not isdigit(): "\u00b2" is a digit to it
            return float(value)
        import email.utils
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
        else:
            if when is not None:
                if when.tzinfo is None:
                    import datetime
                    when = when.replace(tzinfo=datetime.timezone.utc)
                return max(0.0, when.timestamp() - now)
    value = headers.get("x-ratelimit-reset")
    if value is not None:
        try:
            delay = float(value) - now
        except ValueError:
            return None
        if delay > 0:
            return delay
    return None


def _snippet(data: bytes, limit: int = 200) -> str:
    text = data[:limit * 4].decode("utf-8", "replace")
    import re
    text = re.sub(r"<[^>]{0,200}>", " ", text)
    text = " ".join(text.split())
    return text[:limit]


def _task_payload(prompt: str, duration: "Optional[float]", audio_type: str, project_name: "Optional[str]",
                  project_description: "Optional[str]", folder_id: "Optional[int]") -> "Dict[str, object]":
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigurationError("a prompt must be non-empty text")
    if any(u"\ud800" <= ch <= u"\udfff" for ch in prompt):  # how Python holds bytes it could not decode
        raise ConfigurationError("prompt %s is not valid text (bytes that are not UTF-8?)" % ascii(prompt[:60]))
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigurationError("a prompt is at most %d characters (this one has %d)" % (
            MAX_PROMPT_CHARS, len(prompt)))
    if audio_type not in ("sound", "music"):
        raise ConfigurationError("audio_type must be 'sound' or 'music', not %r" % (audio_type,))
    payload: "Dict[str, object]" = {"prompt": prompt.strip(), "audio_type": audio_type}
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
            raise ConfigurationError("duration must be a positive number of seconds")
        if audio_type == "sound" and duration > MAX_SOUND_DURATION:
            raise ConfigurationError("the API accepts at most %g s for sound (asked for %g s)" % (
                MAX_SOUND_DURATION, duration))
        payload["duration"] = float(duration)
    value: object
    for name, value in (("project_name", project_name), ("project_description", project_description),
                        ("folder_id", folder_id)):
        if value is not None:
            payload[name] = value
    return payload


def _content_range(value: "Optional[str]") -> "Tuple[Optional[int], Optional[int], Optional[int]]":
    """``bytes START-END/TOTAL`` -> (START, END, TOTAL); (None, None, None) when unreadable."""
    try:
        unit, _, rest = (value or "").strip().partition(" ")
        span, _, total = rest.partition("/")
        start, _, end = span.partition("-")
        if unit.lower() != "bytes":
            raise ValueError(unit)
        return int(start), int(end), int(total)
    except ValueError:
        return None, None, None


def _validator(answer: "_Answer") -> "Optional[Tuple[str, str]]":
    """What names this version of the object for ``If-Range``: a strong ETag, else Last-Modified.

    None when the storage sent neither (a weak ETag cannot be used with ``If-Range``).
    """
    etag = answer.header("etag")
    if etag and not etag.startswith("W/"):
        return ("ETag", etag)
    modified = answer.header("last-modified")
    return ("Last-Modified", modified) if modified else None


def _logger() -> "_LazyLog":
    return _LAZY_LOG


class _LazyLog:
    """The module's logger, without importing ``logging`` (~5 ms) on every run.  Debug and info records
    go out only when ``logging`` is already imported: otherwise nobody can have given them a handler
    (``-v`` imports it).  Warnings and errors always do: where nobody gave them a handler, to stderr
    through ``_terminal_safe`` (as Python's last-resort handler would, but safe)."""

    def _get(self, always: bool = False) -> "Optional[logging.Logger]":
        if sys.modules.get("logging") is None and not always:
            return None
        import logging
        return logging.getLogger(__name__)

    def isEnabledFor(self, level: int) -> bool:
        log = self._get(level >= 30)
        return log is not None and log.isEnabledFor(level)

    def log(self, level: int, msg: str, *args: object) -> None:
        log = self._get(level >= 30)
        if log is None:
            return
        last_resort = sys.modules["logging"].lastResort
        if level >= 30 and last_resort is not None and not log.hasHandlers():
            # Nobody gave it a handler: Python's last resort would print the message as it is, server text
            # and all (a task ID with a newline forges a line).  The same line, through the one sanitiser.
            if log.isEnabledFor(level) and level >= last_resort.level:
                sys.stderr.write(_terminal_safe(msg % args if args else msg) + "\n")
            return
        log.log(level, msg, *args)

    def debug(self, msg: str, *args: object) -> None:
        self.log(10, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(20, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(30, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(40, msg, *args)


_LAZY_LOG = _LazyLog()


def _random() -> float:
    import random
    return random.random()


def _json() -> "types.ModuleType":

    import json  # not at module level: it pulls in `re`, which dominates import time
    return json


# ---------------------------------------------------------------------------
# The HTTP layer: keep-alive pools per origin, redirects that keep the key home
# ---------------------------------------------------------------------------

def _is_loopback(host: "Optional[str]") -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, judged from the name alone (no DNS: an answer looked up
    now need not be the address connected to later).  ``*.localhost`` names are not trusted."""
    host = (host or "").lower().strip("[]")
    if host == "localhost":
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(url: object) -> str:
    from urllib.parse import urlsplit
    text = str(url).strip().rstrip("/")
    bad = [ch for ch in text if ch.isspace() or ord(ch) < 32 or 127 <= ord(ch) < 160]
    if bad:  # http.client would refuse to send it, and the user would be told the API cannot be reached
        raise ConfigurationError("the base URL may not contain whitespace or control characters: %r" % (text,))
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError("bad base URL %r: %s" % (url, exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("the base URL must be an http(s) URL, not %r" % (url,))
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError("the base URL may not carry a query, fragment or credentials")
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            "refusing plain http to %s: the API key would travel in clear (use https)" % parts.hostname)
    del port
    return text


def _origin(url: str) -> "Tuple[Origin, str]":
    """``((scheme, host, port), target)`` for a URL, ready for the wire: an IDN host becomes its ASCII
    (IDNA) form, and every byte of path and query outside printable ASCII is percent-encoded (UTF-8)."""
    import re
    from urllib.parse import urlsplit, quote
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
        if host and re.search(r"[^\x21-\x7e]", host):
            host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise TransportError("bad URL: %s" % redact_url(url), retryable=False) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host or not re.match(r"[A-Za-z0-9._:%-]+$", host):
        raise TransportError("not an http(s) URL: %s" % redact_url(url), retryable=False)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    target = re.sub(r"[^\x21-\x7e]", lambda m: quote(m.group(0), safe="", errors="surrogatepass"), target)
    return (scheme, host.lower(), port or (443 if scheme == "https" else 80)), target


def _origin_text(origin: "Origin") -> str:
    scheme, host, port = origin
    return "%s://%s:%d" % (scheme, "[%s]" % host if ":" in host else host, port)


class _Answer:
    """One response on a pooled connection; a context manager that returns the connection."""

    # Every text of an answer that the rest of the module sees (reason phrase, headers, bodies read
    # whole) leaves here redacted; audio bodies (readinto) are bytes nobody prints.

    def __init__(self, pool: "_Pool", origin: "Origin", conn: "http.client.HTTPConnection",
                 response: "http.client.HTTPResponse", url: str) -> None:
        self._pool, self._origin, self.response = pool, origin, response
        self._conn: "Optional[http.client.HTTPConnection]" = conn
        self._redact = pool._client._redact
        self.url = url
        self.status: int = response.status
        self.reason: str = self._redact(response.reason or "")
        self.headers: "http.client.HTTPMessage" = response.headers if hasattr(response, "headers") else response.msg
        self._done = False
        self._sock: "Optional[socket.socket]" = None  # set once the body is read straight from the socket
        self._left: "Optional[int]" = None  # then: the body's bytes still to come

    def header(self, name: str) -> "Optional[str]":
        value = self.headers.get(name)
        return self._redact(value) if value else value

    def read1(self, limit: int) -> bytes:
        """What has arrived, up to ``limit`` bytes, with at most one read from the socket."""
        try:
            data = self.response.read1(limit)
        except ValueError as exc:  # http.client: a chunk-size line that is not hex
            raise TransportError("unreadable body framing: %s" % self._redact(_exc_text(exc))) from None
        if not data:
            self.response.close()  # as readinto does at the end: the connection may carry the next request
        return data

    def readinto1(self, view: memoryview) -> int:
        """``read1`` into ``view``: the number of bytes that had arrived, 0 at the end of the body.

        A body of known length (no Transfer-Encoding) is read straight from the socket once
        http.client's buffer is empty, which a read1 that returns less than it was asked for shows:
        the same bytes, without three layers of Python per TLS record (a download's main CPU cost)."""
        left = self._left
        if left is None:
            data = self.read1(len(view))
            n = len(data)
            view[:n] = data
            if 0 < n < len(view):
                self._go_direct()
            return n
        if left == 0:
            self.response.close()
            return 0
        assert self._sock is not None
        n = self._sock.recv_into(view, min(len(view), left))
        self._left = left - n
        if not n:
            self.response.close()  # cut short: the caller counts the bytes
        return n

    def _go_direct(self) -> None:
        import socket
        sock = getattr(self._conn, "sock", None)
        left = getattr(self.response, "length", None)
        if isinstance(sock, socket.socket) and isinstance(left, int) and not getattr(self.response, "chunked", True):
            self._sock, self._left = sock, left

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of an error body; b"" when even that fails."""
        try:
            return self._redact(self.response.read(limit))
        except (OSError, ValueError, _http_errors()):
            return b""

    def read_all(self, limit: int) -> bytes:
        """The whole body, redacted; TransportError when it is over ``limit`` bytes or cut short."""
        expected = self.length()
        data = b""
        if expected is None or expected <= limit:  # else refused unread
            try:
                data = self._read_unframed(limit + 1) if expected is None else self.response.read(expected)
            except ValueError as exc:
                raise TransportError("unreadable body framing: %s" % self._redact(_exc_text(exc))) from None
        if max(len(data), expected or 0) > limit:
            raise TransportError("the answer is larger than %d bytes" % limit, retryable=False)
        if expected is not None and len(data) < expected:
            # http.client returns short at EOF without raising: count the bytes ourselves.
            raise TransportError("the answer was cut short (%d of %d bytes)" % (len(data), expected))
        self._done = True
        return self._redact(data)

    def _read_unframed(self, most: int) -> bytes:
        # In pieces: http.client's read(n) first allocates n bytes, and n would be the 16 MiB limit here.
        import http.client
        pieces: "List[bytes]" = []
        size = 0
        while size < most:
            try:
                piece = self.response.read(min(most - size, 256 * 1024))
            except http.client.IncompleteRead as exc:  # its count should cover the earlier reads too
                raise http.client.IncompleteRead(b"".join(pieces) + exc.partial, exc.expected) from None
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
        return b"".join(pieces)

    def length(self) -> "Optional[int]":
        """The body's length as the answer frames it: its Content-Length, unless the body is sent with a
        Transfer-Encoding (that wins, RFC 9112) or the value is not a whole number; None when unknown."""
        value = self.headers.get("content-length")
        if value is None or self.headers.get("transfer-encoding") is not None:
            return None
        value = value.strip()
        return int(value) if value and all("0" <= c <= "9" for c in value) else None

    def finished(self) -> None:
        """Mark the body as read to its end, so the connection may be reused."""
        self._done = True

    def __enter__(self) -> "_Answer":
        return self

    def __exit__(self, exc_type: "Optional[Type[BaseException]]", exc: "Optional[BaseException]",
                 tb: object) -> None:
        self.close(reuse=exc_type is None and self._done)

    def close(self, reuse: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            keep = reuse and not getattr(self.response, "will_close", False)
            self._pool.give_back(self._origin, conn, keep)


class _Pool:
    """Idle kept-alive connections per origin, shared by threads."""

    def __init__(self, client: "Client") -> None:
        import threading
        self._client = client
        self._idle: "Dict[Origin, List[http.client.HTTPConnection]]" = {}
        self._busy: "Dict[http.client.HTTPConnection, Optional[threading.Event]]" = {}  # -> its work's halt
        self._lock = threading.Lock()
        self.opened: "Dict[str, int]" = {}

    def _connect(self, origin: "Origin") -> "http.client.HTTPConnection":
        import http.client
        scheme, host, port = origin
        timeout = self._client.timeout
        if scheme == "https":
            with self._lock:
                if self._client._ssl_context is None:
                    import ssl
                    self._client._ssl_context = ssl.create_default_context()
                context = self._client._ssl_context
            # Looked up at call time so that vcrpy's patched classes are used.
            conn: "http.client.HTTPConnection" = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.response_class = _final_response_class()
        with self._lock:
            key = _origin_text(origin)
            self.opened[key] = self.opened.get(key, 0) + 1
        return conn

    def _take(self, origin: "Origin") -> "Tuple[http.client.HTTPConnection, bool]":
        """An idle kept-alive connection that is still fit to carry a request, else a new one."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(origin), False
            if not _dropped(conn):
                return conn, True
            conn.close()  # closed by the server, or holding bytes nobody asked for: never read them as an answer

    def give_back(self, origin: "Origin", conn: "http.client.HTTPConnection", reuse: bool) -> None:
        with self._lock:
            self._busy.pop(conn, None)
            if reuse:
                self._idle.setdefault(origin, []).append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def abort(self, halted: "Optional[threading.Event]" = None) -> None:
        """Shut the connections under way: every one, or those of the work whose halt event is ``halted``."""
        import socket
        with self._lock:
            busy = [conn for conn, theirs in self._busy.items() if halted is None or theirs is halted]
        for conn in busy:
            sock = getattr(conn, "sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass

    def _send(self, method: str, url: str, headers: "Mapping[str, str]", body: "Optional[bytes]",
              once: bool, halted: "Optional[threading.Event]") -> "_Answer":
        import http.client
        import ssl
        origin, target = _origin(url)
        # A once-only request takes a new connection: on a kept-alive one that the server closed
        # meanwhile it would fail after being sent, and nobody could tell whether it was acted on.
        for fresh in ((True,) if once else (False, True)):
            conn, reused = (self._connect(origin), False) if fresh else self._take(origin)
            with self._lock:
                self._busy[conn] = halted
            sent = reused
            try:
                if not reused:
                    conn.connect()  # TCP and TLS: if this fails, no byte of the request has left
                if halted is not None and halted.is_set():  # halted while it connected (abort() cannot cut that)
                    raise _Halted
                sent = True
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
            except _Halted:
                self.give_back(origin, conn, False)
                raise TransportError("%s %s: stopped before it was sent" % (method, redact_url(url)),
                                     sent=False, retryable=False) from None
            except (OSError, ValueError, http.client.HTTPException, ssl.CertificateError) as exc:
                self.give_back(origin, conn, False)
                if _tls_rejected(exc):
                    raise TransportError("TLS verification failed for %s: %s" % (
                        _origin_text(origin), exc), retryable=False) from None
                stale = reused and isinstance(exc, (ConnectionError, http.client.BadStatusLine))
                if stale and _may_send_again(once, sent):
                    continue  # a kept-alive connection the server had closed: once more, fresh
                raise TransportError("%s %s: %s" % (method, redact_url(url), self._client._redact(_exc_text(exc))),
                                     sent=sent) from None
            except BaseException:
                self.give_back(origin, conn, False)
                raise
            return _Answer(self, origin, conn, response, url)
        raise AssertionError("unreachable")

    def request(self, method: str, url: str, headers: "Mapping[str, str]", body: "Optional[bytes]" = None,
                once: bool = False, halted: "Optional[threading.Event]" = None) -> "_Answer":
        """Send, following redirects; secret headers are dropped when the origin changes.

        ``once``: the request must never be sent twice (see ONCE_ONLY and ``_may_send_again``).
        ``halted``: once it is set, nothing more is sent (``Client._halt``).
        """
        log = self._client._log
        headers = dict(headers)
        home = _origin(url)[0]
        for _hop in range(MAX_REDIRECTS + 1):
            started = time.monotonic()
            answer = self._send(method, url, headers, body, once, halted)
            if log.isEnabledFor(10):
                log.debug("%s %s -> %d (%.0f ms)", method, redact_url(url), answer.status,
                          (time.monotonic() - started) * 1000)
            location = answer.header("location")
            if answer.status not in (301, 302, 303, 307, 308) or not location:
                return answer
            try:
                url = self._redirect_target(method, url, answer, location, once)
            except TransportError as exc:
                exc.answered = True
                raise
            if _origin(url)[0] != home:
                for name in list(headers):
                    if name.lower() in SECRET_HEADERS:
                        del headers[name]
        error = TransportError("more than %d redirects for %s" % (MAX_REDIRECTS, redact_url(url)), retryable=False)
        error.answered = True
        raise error

    def _redirect_target(self, method: "str", url: "str", answer: "_Answer", location: "str", once: "bool") -> "str":
        """Where a redirect ``answer`` to ``url`` sends the request, or TransportError if it is not followed."""
        from urllib.parse import urljoin
        try:
            answer.read_all(64 * 1024)  # drain it, so the connection can carry the next request
        except (OSError, _http_errors()):
            pass
        answer.close(reuse=answer._done)
        try:
            location = location.encode("latin-1").decode("utf-8")  # http.client read it as Latin-1
        except UnicodeError:
            pass
        try:
            new_url = urljoin(url, location.strip())
        except ValueError:
            raise TransportError("unusable redirect target: %s" % redact_url(location), retryable=False) from None
        new_origin = _origin(new_url)[0]
        if new_origin[0] == "http" and _origin(url)[0][0] == "https" and not _is_loopback(new_origin[1]):
            raise TransportError("refusing a redirect from https to plain http: %s" % redact_url(new_url),
                                 retryable=False)
        if method not in ("GET", "HEAD") and answer.status not in (307, 308):
            raise TransportError("refusing to turn %s into GET on a %d redirect" % (method, answer.status),
                                 retryable=False)
        if not _may_send_again(once, True):  # following it would send the request a second time
            raise TransportError("%s %s: the answer was %d, a redirect to %s; not followed, since the request "
                                 "may already have been acted on" % (method, redact_url(url), answer.status,
                                                                    redact_url(new_url)), retryable=False)
        return new_url


def _dropped(conn: "http.client.HTTPConnection") -> bool:
    """Whether an idle connection is unfit for reuse: its socket is gone, or is readable now (checked without
    waiting).  An idle connection has nothing to say: readable means the server closed it, or sent bytes
    after the last answer (a body on a 204, a second response) that the next request would take as its own.
    An SSL socket may hold such bytes already decrypted, where the socket check cannot see them."""
    import select
    sock = getattr(conn, "sock", None)
    if sock is None:
        return True
    try:
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        if hasattr(select, "poll"):  # select.select cannot watch descriptors above FD_SETSIZE
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError, TypeError):
        return True


_FINAL_RESPONSE: "List[Type[http.client.HTTPResponse]]" = []


def _final_response_class() -> "Type[http.client.HTTPResponse]":
    """http.client's response class, reading past interim answers (``102 Processing``, ``103 Early Hints``):
    http.client itself skips only ``100 Continue`` and would return the 103 as the answer, leaving the real
    one unread on a kept-alive connection, for the next request to take as its own."""
    if not _FINAL_RESPONSE:
        import http.client

        if TYPE_CHECKING:  # for the checker: the private method overridden here (not in http.client's stubs)
            class _Response(http.client.HTTPResponse):
                def _read_status(self) -> "Tuple[str, int, str]": ...
        else:
            _Response = http.client.HTTPResponse

        class _FinalResponse(_Response):
            def _read_status(self) -> "Tuple[str, int, str]":
                for _interim in range(MAX_INTERIM):
                    version, status, reason = super()._read_status()
                    if not 100 < status < 200 or status == 101:  # 100: begin() skips it; 101: not for us
                        return version, status, reason
                    for _header in range(101):  # skip its header lines, bounded as http.client bounds them
                        line = self.fp.readline(65537)
                        if len(line) > 65536:
                            raise http.client.LineTooLong("header line")
                        if line in (b"\r\n", b"\n", b""):
                            break
                    else:
                        raise http.client.HTTPException("an interim answer with more than 100 header lines")
                raise http.client.HTTPException("more than %d interim (1xx) answers" % MAX_INTERIM)

        _FINAL_RESPONSE.append(_FinalResponse)
    return _FINAL_RESPONSE[0]


def _may_send_again(once: bool, sent: bool) -> bool:
    """THE retry rule: a request may go out again unless it is once-only (ONCE_ONLY) and a byte of it
    may already have reached the server.  Only a failure to connect proves it did not."""
    return not (once and sent)


def _cause(error: BaseException, method: str, url: str) -> str:
    """What a failed call met, without the method and URL its message starts with."""
    text = str(error)
    prefix = "%s %s: " % (method, redact_url(url))
    return text[len(prefix):] if text.startswith(prefix) else text


class _CallWindow:
    """How many API calls a Client may have under way: an AIMD window shared by its threads.

    It starts at ``limit``.  A 429 halves it (once per round: the 429s of calls that were already
    under way when it shrank do not shrink it again); a wait the server asks for holds every caller
    until it is over; each answered call then grows it by 1/size, so it gains back one slot per
    window-full of answers, up to ``limit``.  ``clock`` and ``sleep`` are the Client's seams.
    """
    SAFETY_NET = 1.0  # seconds a caller waits for a slot before it looks again without being woken

    def __init__(self, limit: int, clock: "Clock", sleep: "Sleep") -> None:
        import threading
        self.limit = limit
        self.size = float(limit)
        self.active = 0
        self.answers = 0  # answered calls so far: tells "the API is down" from "this call was unlucky"
        self.resume_at: "Optional[float]" = None
        self._round = 0
        self._cond = threading.Condition()
        self._clock, self._sleep = clock, sleep

    def acquire(self, halted: "threading.Event") -> "Optional[int]":
        """Wait for a free slot (and for any pause to end); returns a ticket for ``release``, or None
        once ``halted`` is set (``Client._halt``)."""
        while True:
            with self._cond:  # halted is looked at under the lock, so wake()'s notify cannot come between
                if halted.is_set():
                    return None
                wait = self.resume_at - self._clock() if self.resume_at is not None else 0
                if wait <= 0:
                    self.resume_at = None
                    if self.active < int(self.size):
                        self.active += 1
                        return self._round
                    self._cond.wait(self.SAFETY_NET)  # release() and wake() notify
                    continue
            _nap(self._sleep, wait, halted)

    def wake(self) -> None:
        """Have every caller waiting for a slot look again (``Client._halt``)."""
        with self._cond:
            self._cond.notify_all()

    def release(self, ticket: int, answered: bool, shrink: bool = False, pause: "Optional[float]" = None) -> None:
        with self._cond:
            self.active -= 1
            if answered:
                self.answers += 1
            if shrink:
                if ticket == self._round:  # the first 429 of this round: halve
                    self.size = max(1.0, self.size / 2)
                    self._round += 1
            elif answered:
                self.size = min(float(self.limit), self.size + 1.0 / self.size)
            if pause is not None:
                until = self._clock() + pause
                self.resume_at = until if self.resume_at is None else max(self.resume_at, until)
            self._cond.notify_all()


def _nap(sleep: "Sleep", seconds: float, halted: "threading.Event") -> None:
    """Wait ``seconds`` before trying again.  With the real sleep this is ``halted.wait``, which
    ``Client._halt`` (Ctrl-C) ends at once; a sleep given to the Client (tests' fake time) is called as
    it is, and the caller sees ``halted`` when it returns."""
    if sleep is time.sleep:
        halted.wait(seconds)
    else:
        sleep(seconds)


def _exc_text(exc: BaseException) -> str:
    import socket
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _tls_rejected(exc: BaseException) -> bool:
    """The server's certificate failed verification: ssl.CertificateError on 3.7+, a plain SSLError on 3.6."""
    import ssl
    return isinstance(exc, ssl.CertificateError) or getattr(exc, "reason", None) == "CERTIFICATE_VERIFY_FAILED"


def _os_error_text(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the words and the errno name a search finds."""
    import errno
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    words = exc.strerror or str(exc) or type(exc).__name__
    return "%s (%s)" % (words, name) if name else words


def _plural(n: int, noun: str) -> str:
    return "%d %s%s" % (n, noun, "" if n == 1 else "s")


def _http_errors() -> "Type[http.client.HTTPException]":
    import http.client
    return http.client.HTTPException


# ---------------------------------------------------------------------------
# One download: temp file beside the destination, resume, checks, rename
# ---------------------------------------------------------------------------

class _Halted(Exception):
    """Inside ``_Pool._send``: the work was halted while the connection was being made."""


class _Refused(Exception):
    """The storage refused the URL (401/403, or a 400 that speaks of expiry): a fresh URL may help."""

    def __init__(self, text: str, expired: bool) -> None:
        Exception.__init__(self, text)
        self.expired = expired


class _Retry(Exception):
    pass


class _Download:
    def __init__(self, client: "Client", rid: int, out_dir: str, url: str,
                 progress: "Optional[Progress]", cancel: "Optional[threading.Event]",
                 halted: "threading.Event") -> None:
        self.client, self.rid, self.out_dir, self.url = client, rid, out_dir, url
        self.progress = progress
        self.cancel, self.halted = cancel, halted  # halted: see Client._call_json
        # What the storage said of the object, kept across tries: its length, (header, value) naming
        # this version of it, and the extension its first bytes call for.
        self.total: "Optional[int]" = None
        self.validator: "Optional[Tuple[str, str]]" = None
        self.ext: "Optional[str]" = None

    def run(self) -> "Tuple[str, int]":
        """Download, fsync, name, fsync the folder: one run on its own (``Client.download``)."""
        staged = self.stage()
        try:
            path = staged.publish()
        finally:
            staged.discard()
        _sync_folder(self.out_dir)
        return path, staged.size

    def stage(self) -> "_Staged":
        """The whole body, checked, in a temp file beside the destination: a ``_Staged`` to publish."""
        tmp_path = os.path.join(self.out_dir, ".%d.%d-%s.part" % (self.rid, os.getpid(), os.urandom(4).hex()))
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise DownloadError("cannot write in %s: %s" % (self.out_dir, exc.strerror or exc),
                                run_id=self.rid) from None
        writer = _Writer(os.fdopen(fd, "wb", buffering=0))
        staged = _Staged(self.rid, self.out_dir, tmp_path, writer)
        try:
            staged.ext, staged.size = self._transfer(writer)
            writer.start_writeback()
            return staged
        except BaseException as exc:
            staged.discard()
            if isinstance(exc, OSError) and not isinstance(exc, (DownloadError, FileExistsError)):
                raise DownloadError("cannot save run %d: %s" % (self.rid, exc.strerror or exc),
                                    run_id=self.rid) from None
            raise

    def _transfer(self, writer: "_Writer") -> "Tuple[str, int]":
        """Get the whole body into ``writer``; returns (extension, size)."""
        client, halted = self.client, self.halted
        attempt = refreshes = 0
        while True:
            if (self.cancel is not None and self.cancel.is_set()) or halted.is_set():
                raise DownloadError("interrupted", run_id=self.rid)
            try:
                return self._attempt(writer), writer.size
            except _Refused as exc:
                why = ("the download URL expired (%s)" if exc.expired else
                       "the storage refused the download URL (%s; it does not say the URL expired)") % exc
                if refreshes >= URL_REFRESHES:
                    raise DownloadError("run %d: %s, and %d fresh URLs did not help" % (self.rid, why, refreshes),
                                        run_id=self.rid) from None
                refreshes += 1
                client._log.info("run %d: %s; asking for a fresh URL", self.rid, why)
                self.url = client._fresh_url(self.rid, self.url, halted, why)
                continue
            except (_Retry, TransportError) as exc:
                if halted.is_set():
                    continue  # the top of the loop says "interrupted"
                if isinstance(exc, TransportError) and not exc.retryable:
                    raise DownloadError("run %d: %s" % (self.rid, exc), run_id=self.rid) from None
                last_error = exc
            attempt += 1
            if attempt >= client.max_attempts:
                raise DownloadError("run %d: %s (after %d tries)" % (self.rid, last_error, attempt),
                                    run_id=self.rid, expected=self.total, received=writer.size)
            wait = backoff(attempt - 1, client._rand)
            client._log.info("run %d: %s; retry %d in %.1f s", self.rid, last_error, attempt, wait)
            _nap(client._sleep, wait, halted)

    def _attempt(self, writer: "_Writer") -> str:
        """One GET: from the start, or from ``writer.size`` when the object's length and validator are known."""
        import http.client
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
        validator = self.validator if writer.size > 0 and self.total is not None else None
        resume = validator is not None
        if validator is not None:
            headers["Range"] = "bytes=%d-" % writer.size
            headers["If-Range"] = validator[1]
        elif writer.size:
            writer.restart()  # no validator: appending could splice two versions of the object
        with self.client._pool.request("GET", self.url, headers, halted=self.halted) as answer:
            status = answer.status
            if status in (400, 401, 403):
                body = answer.read_some(8192)
                expired = b"xpire" in body or b"xpiry" in body  # S3: 403 AccessDenied "Request has expired"
                if status != 400 or expired:
                    raise _Refused("HTTP %d: %s" % (status, _snippet(body, 120)), expired)
                raise DownloadError("run %d: HTTP 400 from storage: %s" % (self.rid, _snippet(body, 120)),
                                    run_id=self.rid)
            if status in RETRY_STATUSES or status >= 500:
                raise _Retry("HTTP %d from storage" % status)
            if resume and status in (206, 416):
                problem = self._resume_problem(answer, writer)
                if problem:
                    self._forget(writer)
                    raise _Retry(problem + "; starting over")
            elif status == 200:
                if writer.size:
                    writer.restart()  # the storage ignored Range (or the object changed): start over
                self.total = answer.length()
                self.validator = _validator(answer)
                self.ext = None
            else:
                raise DownloadError("run %d: HTTP %d %s from storage: %s" % (
                    self.rid, status, answer.reason, _snippet(answer.read_some(8192), 120)), run_id=self.rid)
            try:
                ext = self.ext = self._stream(answer, writer, self.ext, self.total)
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, DownloadError) or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS):
                    raise
                raise _Retry("transfer broke after %d bytes: %s" % (writer.size, _exc_text(exc))) from None
            answer.finished()
        return ext

    def _resume_problem(self, answer: "_Answer", writer: "_Writer") -> "Optional[str]":
        """Why the answer to a range request cannot be appended to what we have, or None when it can.

        The storage's word is not taken for it (some ignore ``If-Range``): the 206 must name the
        same version of the object, and cover exactly the bytes from ``writer.size`` to the end.
        """
        if answer.status == 416:
            return "HTTP 416 for bytes %d-" % writer.size
        assert self.total is not None and self.validator is not None  # asked for a range: both are known
        start, end, total = _content_range(answer.header("content-range"))
        if start is None or end is None or total is None:  # all three or none
            return "a 206 without a readable Content-Range"
        if (start, end, total) != (writer.size, self.total - 1, self.total):
            return "a 206 for bytes %d-%d/%d instead of %d-%d/%d" % (
                start, end, total, writer.size, self.total - 1, self.total)
        if _validator(answer) != self.validator:
            return "the object changed while resuming (its %s differs)" % self.validator[0]
        return None

    def _forget(self, writer: "_Writer") -> None:
        """Drop the partial body and what the storage said of the object: the next try starts over."""
        writer.restart()
        self.total = self.validator = self.ext = None

    def _stream(self, answer: "_Answer", writer: "_Writer", ext: "Optional[str]", expected: "Optional[int]") -> str:
        cancel = self.cancel
        progress = self.progress
        clock = self.client._clock
        since, got = clock(), 0  # the low-speed rule's window
        view = memoryview(bytearray(READ_CHUNK))
        filled = 0
        readinto1 = answer.readinto1
        while True:
            if cancel is not None and cancel.is_set():
                raise DownloadError("interrupted", run_id=self.rid)
            # readinto1 returns what has arrived (a trickle cannot hold it); the pieces (a TLS record
            # is at most 16 KiB) are gathered so that the disk gets READ_CHUNK at a time.
            n = readinto1(view[filled:])
            filled += n
            got += n
            now = clock()
            if now - since >= LOW_SPEED_TIME:
                if got < LOW_SPEED_LIMIT * (now - since):
                    raise _Retry("too slow: %d bytes in %.0f s (the limit is %d bytes/s over %.0f s)" % (
                        got, now - since, LOW_SPEED_LIMIT, LOW_SPEED_TIME))
                since, got = now, 0
            if n and filled < READ_CHUNK:
                continue
            if filled:
                writer.write(view[:filled])
                if ext is None and writer.head_ready():
                    ext = self._check_head(writer)
                if progress is not None:
                    progress(filled)
                filled = 0
            if not n:
                break
        if self.halted.is_set():  # this end may be a connection that the halt cut (nothing else may tell)
            raise DownloadError("interrupted", run_id=self.rid)
        if ext is None:
            ext = self._check_head(writer)
        if expected is not None and writer.size != expected:
            raise _Retry("truncated: got %d of %d bytes" % (writer.size, expected))
        declared = _declared_length(writer.head)
        if declared is not None and writer.size < writer.head_at + declared:
            raise _Retry("truncated: got %d of the %d bytes its header declares" % (
                writer.size, writer.head_at + declared))
        return ext

    def _check_head(self, writer: "_Writer") -> str:
        """The extension for what ``writer`` holds, once its name is known to be free; else DownloadError."""
        head = writer.head
        ext = sniff_audio(head)
        if ext is None:
            unsupported = _unsupported_audio(head)
            if unsupported:
                raise DownloadError("run %d: the storage sent an unsupported audio format: %s" % (
                    self.rid, unsupported), run_id=self.rid)
            what = _describe_bytes(head) if head or not writer.head_at else "an ID3 tag and nothing after it"
            raise DownloadError("run %d: the storage sent %s, not audio" % (self.rid, what), run_id=self.rid)
        path = os.path.join(self.out_dir, "%d%s" % (self.rid, ext))
        why = _in_the_way(path)
        if why:  # said now, not after the whole body
            raise DownloadError("run %d: cannot save %s: %s" % (self.rid, path, why), run_id=self.rid)
        return ext


#: Open flags for the temp file beyond O_EXCL (which already refuses a link): no link followed; binary on Windows.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)

#: Errors of the local disk: a new try over the network cannot help them.
_DISK_ERRNOS = frozenset(getattr(__import__("errno"), name, -1)
                         for name in ("ENOSPC", "EDQUOT", "EACCES", "EROFS", "EIO", "EFBIG"))


class _Writer:
    """Appends to the temp file and keeps the first bytes of the audio for the format check.

    ``head`` holds HEAD bytes from offset ``head_at``: 0, or past the ID3v2 tags in front (a tag
    says its size in its first ten bytes), so that what the tags carry is recognised.

    Every WRITEBACK_STEP bytes a short-lived thread writes what has arrived to disk behind the
    download (fdatasync, then posix_fadvise DONTNEED to spare the page cache), so the disk works while
    the network does and the fsync before the rename finds little left to do.  At most one such
    thread per file; an error it meets is raised by ``commit`` (the kernel reports a write-back error
    once per open file, so it must not be lost there).
    """

    HEAD = 4096  # enough to recognise audio (two MPEG frames), find a WAV's data chunk, name a non-audio body
    WRITEBACK_STEP = 8 * 1024 * 1024

    def __init__(self, fileobj: "BinaryIO") -> None:
        self.file = fileobj
        self.size = 0
        self.head = b""
        self.head_at = 0
        self._flushed = 0
        self._behind: "Optional[threading.Thread]" = None
        self._behind_error: "Optional[OSError]" = None

    def write(self, data: "BytesLike") -> None:
        if len(self.head) < self.HEAD:
            self._keep_head(data)
        view = memoryview(data)
        while view:
            written = self.file.write(view)
            if not written:
                raise OSError(28, "No space left on device")
            view = view[written:]
        self.size += len(data)
        if self.size - self._flushed >= self.WRITEBACK_STEP and not (self._behind and self._behind.is_alive()):
            self._flushed = self.size
            try:
                fd = os.dup(self.file.fileno())  # closed by the thread: this file may be closed first
            except OSError:
                return  # no descriptor to spare: the final fsync does it all
            import threading
            behind = threading.Thread(target=self._write_behind, args=(fd, self.size),
                                      name="sound_bulk-write-behind", daemon=True)
            try:
                behind.start()
            except RuntimeError:  # no thread to spare: likewise
                os.close(fd)
                return
            self._behind = behind

    def _write_behind(self, fd: int, end: int) -> None:
        try:
            try:
                getattr(os, "fdatasync", os.fsync)(fd)
            except OSError as exc:
                self._behind_error = exc
                return
            _dont_need(fd, end)  # written now: drop it from the cache
        finally:
            os.close(fd)

    def _keep_head(self, data: "BytesLike") -> None:
        while len(self.head) < self.HEAD:
            start = self.head_at + len(self.head) - self.size  # where the head goes on, in ``data``
            if start >= len(data):
                return
            self.head += bytes(data[start:start + self.HEAD - len(self.head)])
            tag = _id3_size(self.head)
            if not tag:
                return
            self.head_at += tag
            self.head = self.head[tag:]

    def head_ready(self) -> bool:
        return len(self.head) >= self.HEAD

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.size = self._flushed = self.head_at = 0
        self.head = b""

    def start_writeback(self) -> None:
        """The body is complete: have the kernel start writing it to disk now.  POSIX_FADV_DONTNEED
        starts the writeback without waiting for it (Linux), so the committer's fsync, later and in
        another thread, finds the file mostly written instead of all of it still to write: the disk
        works while the network does.  Only a hint; without it the fsync does it all."""
        _dont_need(self.file.fileno(), 0)

    def commit(self) -> None:
        if self._behind is not None:
            self._behind.join()
        self.file.flush()
        os.fsync(self.file.fileno())
        if self._behind_error is not None:
            raise self._behind_error

    def close(self) -> None:
        self.file.close()


def _dont_need(fd: int, length: int) -> None:
    """posix_fadvise(POSIX_FADV_DONTNEED) over the first ``length`` bytes (0: all) of ``fd``: on Linux it
    starts writing back what is dirty, without waiting, and drops from the page cache what is written.
    Only a hint: where it does not exist, or the file system refuses it, nothing happens."""
    if hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_DONTNEED"):
        try:
            os.posix_fadvise(fd, 0, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _sweep_stale_parts(out_dir: str) -> None:
    """Remove temp files left by a run that was killed (its process is gone); POSIX only."""
    if os.name != "posix" or not hasattr(os, "kill"):
        return
    import re
    try:
        names = os.listdir(out_dir)
    except OSError:
        return
    for name in names:
        match = re.match(r"\.\d+\.(\d+)-[0-9a-f]{8}\.part$", name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # that process still runs: its download may be under way
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):
            continue
        try:
            os.unlink(os.path.join(out_dir, name))
        except OSError:
            pass


def _in_the_way(path: str) -> "Optional[str]":
    """Why what is at ``path`` blocks saving there (a folder, a dangling link...); None for nothing or a file."""
    if os.path.isfile(path) or not os.path.lexists(path):
        return None
    if os.path.islink(path):
        target = "nothing" if not os.path.exists(path) else "something that is not a file"
        return "it is a symbolic link to %s (left as it is)" % target
    if os.path.isdir(path):
        return "it is a folder, not a file"
    return "it is not a regular file"


def _name_taken(path: str) -> "NoReturn":
    """Raise for a final name that is taken: FileExistsError for a file (the run is saved), else DownloadError."""
    why = _in_the_way(path)
    if why:
        raise DownloadError("cannot save %s: %s" % (path, why)) from None
    raise FileExistsError(17, "already saved", path) from None


def _byte_at(fd: int, offset: int) -> bytes:
    """One byte of an open file (os.pread is POSIX-only; elsewhere seek and read, the fd being ours alone)."""
    if hasattr(os, "pread"):
        return os.pread(fd, 1, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, 1)


def _publish(tmp_path: str, path: str) -> None:
    """Give the finished temp file its final name, never replacing an existing file (or link, or folder)."""
    try:
        if not hasattr(os, "link"):
            raise OSError("no hard links on this platform")
        os.link(tmp_path, path)  # never follows a link at ``path``: fails if anything is there
    except FileExistsError:
        _name_taken(path)
    except OSError:
        # Filesystems without hard links: the small window between check and rename is the price.
        if os.path.lexists(path):
            _name_taken(path)
        os.replace(tmp_path, path)


def _sync_folder(folder: str) -> None:
    """fsync a folder, so the names given in it are on disk (one call covers every name given so far)."""
    try:
        dir_fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class _Staged:
    """A finished, checked download in its temp file: fsync it and give it its name (``publish``),
    then ``discard`` the temp name.  Naming is durable once the folder is fsynced (``_sync_folder``),
    which ``fetch`` does once for every group of files named together."""

    def __init__(self, rid: int, out_dir: str, tmp_path: str, writer: "_Writer") -> None:
        self.rid, self.out_dir, self.tmp_path, self.writer = rid, out_dir, tmp_path, writer
        self.ext = ""  # both set by _Download.stage before anyone publishes
        self.size = 0

    def publish(self) -> str:
        path = os.path.join(self.out_dir, "%d%s" % (self.rid, self.ext))
        try:
            self.writer.commit()
            _publish(self.tmp_path, path)
        except OSError as exc:
            if isinstance(exc, (DownloadError, FileExistsError)):
                raise
            raise DownloadError("cannot save run %d: %s" % (self.rid, exc.strerror or exc),
                                run_id=self.rid) from None
        return path

    def discard(self) -> None:
        self.writer.close()
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Many runs: resolve in chunks, download in parallel, poll the pending ones
# ---------------------------------------------------------------------------

#: The longest a journey's calling thread goes without looking at its Ctrl-C flag (seconds): a Ctrl-C
#: is seen within it while the thread waits for its workers.
_FLAG_SLICE = 0.05


class _InterruptFlag:
    """While a journey runs in the main thread, Ctrl-C (and a SIGTERM the CLI maps to it) raises a flag
    that the loop checks, instead of an exception at whatever line runs then (one raised inside a lock's
    code could leave the lock held, and the threads could never be joined).  While the loop only
    sleeps, nothing is held, so there the exception is raised at once.

    Flags nest: the outermost one installs the handler, and a signal raises every flag entered (the
    CLI's around the whole command, ``fetch``'s inside it), so none is lost between them.  A signal
    after the work is done, or a second one during clean-up, only raises the flag again: it can no
    longer break off anything.  ``ignore_after``: leave SIGINT/SIGTERM ignored on exit (the CLI, whose
    process only prints and exits then), instead of restoring Python's default handler."""

    _stack: "List[_InterruptFlag]" = []

    def __init__(self) -> None:
        self.raised = False
        self.sleeping = False
        self.ignore_after = False
        self._saved: "List[int]" = []

    def __enter__(self) -> "_InterruptFlag":
        import signal
        import threading
        if not _InterruptFlag._stack and threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGTERM"):
                signum = getattr(signal, name, None)
                if signum is not None and signal.getsignal(signum) is signal.default_int_handler:
                    signal.signal(signum, _InterruptFlag._handle)
                    self._saved.append(signum)
        if self._saved or _InterruptFlag._stack:
            self.raised = any(flag.raised for flag in _InterruptFlag._stack)  # a signal before we came
            _InterruptFlag._stack.append(self)
        return self

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        sleeping = False
        for flag in _InterruptFlag._stack:
            flag.raised = True
            sleeping = sleeping or flag.sleeping
        if sleeping:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        import signal
        if self in _InterruptFlag._stack:
            _InterruptFlag._stack.remove(self)
        for signum in self._saved:
            signal.signal(signum, signal.SIG_IGN if self.ignore_after else signal.default_int_handler)


class _Inbox:
    """The completion queue: crews put what they finished, the calling thread takes it all at once."""

    def __init__(self) -> None:
        import threading
        self._cond = threading.Condition(threading.Lock())
        self._items: "List[Tuple[str, Any, Any, Optional[BaseException]]]" = []

    def put(self, item: "Tuple[str, Any, Any, Optional[BaseException]]") -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def take(self, timeout: float) -> "List[Tuple[str, Any, Any, Optional[BaseException]]]":
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait(timeout)
            items, self._items = self._items, []
        return items


class _Crew:
    """Up to ``size`` threads (started as work arrives) that run ``work(item)`` for each queued item,
    or ``work(items)`` for all queued at once (``batch``), and put ``(kind, item, result, error)`` in
    the inbox.  No futures: the cost of an item does not depend on how many others there are."""

    def __init__(self, kind: str, size: int, work: "Callable[[Any], Any]", inbox: "_Inbox",
                 batch: bool = False) -> None:
        import threading
        self.kind, self.size, self.work, self.inbox, self.batch = kind, size, work, inbox, batch
        self._queue: "List[Any]" = []
        self._head = 0
        self._cond = threading.Condition(threading.Lock())
        self._threads: "List[threading.Thread]" = []
        self._idle = 0
        self._closed = False

    def put(self, item: "Any") -> None:
        with self._cond:
            self._queue.append(item)
            if self._idle:
                self._cond.notify()
            # A thread woken above counts as idle until it runs again, so a burst of puts must not take
            # one idle thread for all of them: a new thread starts while items outnumber idle threads.
            if len(self._queue) - self._head <= self._idle or len(self._threads) >= self.size:
                return
            import threading
            thread = threading.Thread(target=self._serve, name="sound_bulk-%s" % self.kind, daemon=True)
            self._threads.append(thread)
        thread.start()

    def _next(self) -> "Optional[List[Any]]":
        with self._cond:
            while self._head >= len(self._queue) and not self._closed:
                self._idle += 1
                self._cond.wait()
                self._idle -= 1
            if self._head >= len(self._queue):
                return None
            if self.batch:
                items = self._queue[self._head:]
                self._queue, self._head = [], 0
                return [items]
            item = self._queue[self._head]
            self._head += 1
            if self._head > 1024 and self._head * 2 > len(self._queue):
                del self._queue[:self._head]
                self._head = 0
            return [item]

    def _serve(self) -> None:
        while True:
            got = self._next()
            if got is None:
                return
            item = got[0]
            try:
                result, error = self.work(item), None
            except BaseException as exc:  # reported to the calling thread, which decides
                result, error = None, exc
            self.inbox.put((self.kind, item, result, error))

    def close(self, drop: bool = False) -> "List[Any]":
        """No more work: threads end when the queue is empty (at once with ``drop``); returns what was dropped."""
        with self._cond:
            self._closed = True
            dropped = []
            if drop:
                dropped = self._queue[self._head:]
                self._queue, self._head = [], 0
            self._cond.notify_all()
        return dropped

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


def _download_failure(out_dir: str, rid: int, exc: "Union[SoundBulkError, OSError]") -> "FetchOutcome":
    """The outcome of a download that raised ``exc``: a name already taken by a file is ``skipped``."""
    if isinstance(exc, FileExistsError):
        path = exc.filename or saved_path(out_dir, rid)
        return FetchOutcome(rid, "skipped", path, os.path.getsize(path) if path else None)
    if isinstance(exc, SoundBulkError):
        return FetchOutcome(rid, "error", error=str(exc))
    return FetchOutcome(rid, "error", error="run %d: %s" % (rid, _os_error_text(exc)))


def _transfer_threads(workers: "Optional[int]") -> int:
    """Transfer threads for ``workers``: as given, or by default 4 per CPU, from 4 up to DEFAULT_WORKERS
    (on 2 cores, more threads of big files only fight over the GIL; small files are latency-bound
    and fine with 8)."""
    if workers is not None:
        return workers
    return max(4, min(DEFAULT_WORKERS, 4 * (os.cpu_count() or 1)))


class _Fetch:
    """The journey of ``fetch``, at a flat cost per run whatever the batch.

    The calling thread plans and settles; three crews only run requests and report on one completion
    queue (``_Inbox``): resolvers (bulk calls, at most min(workers, the client's API window)),
    transfers (``_transfer_threads``) and one committer, which fsyncs finished files, names them and
    fsyncs the folder once per group named together; so no fsync holds a transfer slot, and a run
    is reported ``saved`` only once its bytes and its name are on disk.  At most ``window`` runs are
    between "sent to be resolved" and "settled" (IDs are taken from the list only as room frees up),
    so memory grows with the window, not the batch, and presigned URLs are used soon after they are
    issued.  Runs not ready wait in a list and are asked for again in rounds with growing pauses."""

    def __init__(self, client: "Client", ids: "List[int]", out_dir: str, workers: "Optional[int]", wait: float,
                 progress: "Optional[Progress]", on_outcome: "Optional[OnFetchOutcome]",
                 cancel: "Optional[threading.Event]",
                 on_wait: "Optional[OnWait]" = None) -> None:
        import collections
        import threading
        self.client, self.ids, self.out_dir = client, ids, out_dir
        self.wait = wait
        self.progress, self.on_outcome, self.on_wait = progress, on_outcome, on_wait
        self.cancel = cancel if cancel is not None else threading.Event()
        self.halted = threading.Event()  # every call and download of this journey stops once it is set
        self.outcomes: "Dict[int, FetchOutcome]" = {}
        self.flying = 0  # runs sent to be resolved and not settled (nor back to waiting) yet
        self.waiting: "List[int]" = []  # run IDs not ready, to ask for again at next_poll
        self.again: "Deque[int]" = collections.deque()  # run IDs whose round of asking has come
        self.polls = 0
        self.next_poll = 0.0  # set when the first run starts waiting (read only while some wait)
        self.deadline = 0.0  # set when the loop starts
        self.stems: "Set[str]" = set()
        self.todo: "Iterator[int]" = iter(())
        self.interrupt = _InterruptFlag()
        self.inbox = _Inbox()
        transfers = _transfer_threads(workers)
        bulk = min(workers or API_CONCURRENCY, client._window.limit)
        self.window = MAX_RUN_IDS * bulk + 4 * transfers
        self.crews = [_Crew("resolve", bulk, self._resolve, self.inbox),
                      _Crew("transfer", transfers, self._transfer, self.inbox),
                      _Crew("commit", 1, self._commit, self.inbox, batch=True)]

    def _settle(self, outcome: "FetchOutcome", flying: bool = True) -> None:
        self.outcomes[outcome.run_id] = outcome
        if flying:
            self.flying -= 1
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def ordered(self) -> "List[FetchOutcome]":
        return [self.outcomes.get(rid) or FetchOutcome(rid, "error", error="interrupted") for rid in self.ids]

    def run(self) -> "List[FetchOutcome]":
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as exc:
            why = "cannot create %s: %s" % (self.out_dir, exc.strerror or exc)
            for rid in self.ids:
                self._settle(FetchOutcome(rid, "error", error=why), flying=False)
            return self.ordered()
        _sweep_stale_parts(self.out_dir)
        try:
            names = os.listdir(self.out_dir)
        except OSError:
            names = []
        self.stems = {name.partition(".")[0] for name in names}  # saved_path() only for these
        self.todo = iter(self.ids)
        with self.interrupt:
            try:
                self._loop()
            except BaseException as exc:
                self._stop(cancel=True)  # a second Ctrl-C meanwhile only raises the flag again
                if isinstance(exc, KeyboardInterrupt):
                    raise FetchInterrupted(self.ordered()) from None
                raise
            self._stop(cancel=False)
        return self.ordered()

    def _loop(self) -> None:
        clock = self.client._clock
        self.deadline = clock() + self.wait
        resolvers = self.crews[0]
        while True:
            if self.interrupt.raised or self.halted.is_set():  # Ctrl-C, or Client.abort()
                raise KeyboardInterrupt
            if self.waiting and clock() >= self.next_poll:
                self.again.extend(self.waiting)
                self.waiting = []
                self.polls += 1
            while self.flying == 0 or self.window - self.flying >= MAX_RUN_IDS:
                chunk = self._next_chunk()
                if not chunk:
                    break
                self.flying += len(chunk)
                resolvers.put(chunk)
            if self.flying == 0:
                if not self.waiting:
                    return  # every run settled
                self._pause(self.next_poll - clock())
                continue
            timeout = _FLAG_SLICE if not self.waiting else max(0.0, min(_FLAG_SLICE, self.next_poll - clock()))
            for event in self.inbox.take(timeout):
                self._handle(*event)

    def _next_chunk(self) -> "List[int]":
        chunk: "List[int]" = []
        while len(chunk) < MAX_RUN_IDS:
            if self.again:
                chunk.append(self.again.popleft())
                continue
            rid = next(self.todo, None)
            if rid is None:
                break
            path = saved_path(self.out_dir, rid) if str(rid) in self.stems else None
            if path:
                self._settle(FetchOutcome(rid, "skipped", path, os.path.getsize(path)), flying=False)
            else:
                chunk.append(rid)
        return chunk

    def _pause(self, seconds: float) -> None:
        """Sleep until the next round (through the client's seam); Ctrl-C here raises at once.
        With ``on_wait`` the pause is cut into seconds, each announced."""
        clock = self.client._clock
        end = clock() + max(0.0, seconds)
        self.interrupt.sleeping = True
        try:
            if self.interrupt.raised or self.halted.is_set():  # Ctrl-C, or Client.abort()
                raise KeyboardInterrupt
            while True:
                left = end - clock()
                if self.on_wait is None:
                    self.client._sleep(max(0.0, left))
                    return
                if left <= 0:
                    return
                self.on_wait(len(self.waiting), left, max(0.0, self.deadline - clock()))
                self.client._sleep(min(1.0, left))
        finally:
            self.interrupt.sleeping = False

    def _handle(self, kind: str, item: "Any", result: "Any", error: "Optional[BaseException]") -> None:
        if error is not None and not (kind == "transfer" and isinstance(error, (SoundBulkError, OSError))
                                      and not isinstance(error, AuthenticationError)):
            raise error  # AuthenticationError (every call would fail), or a bug: not hidden
        if kind == "resolve":
            for rid in item:
                self._resolved(result[rid])
        elif kind == "transfer":
            if isinstance(error, (SoundBulkError, OSError)):  # not None: the only errors not raised above
                self._settle(self._failed_download(item.run_id, error))
            else:
                self.crews[2].put(result)
        else:
            for outcome in result:
                self._settle(outcome)

    def _resolved(self, result: "RunResult") -> None:
        rid = result.run_id
        if result.ready:
            self.crews[1].put(result)
        elif result.status == FAILED:
            self._settle(FetchOutcome(rid, "failed", error=result.error or "generation failed"))
        elif result.error:
            self._settle(FetchOutcome(rid, "error", error=result.error))
        elif self.wait > 0 and self.client._clock() < self.deadline:
            if not self.waiting:
                delay = min(POLL_MAX, POLL_INITIAL * (2 ** self.polls))
                self.next_poll = min(self.client._clock() + delay, self.deadline)
            self.waiting.append(rid)
            self.flying -= 1
        else:
            why = "not ready yet" if result.status == PENDING else "the API returned no entry for it"
            self._settle(FetchOutcome(rid, result.status, error=why))

    def _failed_download(self, rid: int, exc: "Union[SoundBulkError, OSError]") -> "FetchOutcome":
        return _download_failure(self.out_dir, rid, exc)

    def _stop(self, cancel: bool) -> None:
        """End the crews; with ``cancel``, at once: queued work is dropped, transfers break off, and every
        temp file goes.  What was named before that is still reported ``saved``."""
        resolvers, transfers, committer = self.crews
        if cancel:
            self.cancel.set()
            self.client._halt(self.halted, cut=True)  # transfers under way stop at their next read
        resolvers.close(drop=cancel)
        transfers.close(drop=cancel)
        resolvers.join()
        transfers.join()
        for staged in committer.close(drop=cancel):
            staged.discard()
        committer.join()
        for kind, _item, result, _error in self.inbox.take(0):
            if kind == "commit" and result:
                for outcome in result:
                    self._settle(outcome)
            elif kind == "transfer" and result is not None:
                result.discard()  # finished, never named: no file left behind

    # -- the crews' work (worker threads: they return values, and change nothing here) ------------

    def _resolve(self, chunk: "List[int]") -> "Dict[int, RunResult]":
        if self.cancel.is_set():
            return {rid: RunResult(rid, MISSING, error="interrupted") for rid in chunk}
        return self.client._resolve_chunk(chunk, self.halted)

    def _transfer(self, result: "RunResult") -> "_Staged":
        assert result.url is not None  # a ready run has its URL
        return _Download(self.client, result.run_id, self.out_dir, result.url, self.progress, self.cancel,
                         self.halted).stage()

    def _commit(self, batch: "List[_Staged]") -> "List[FetchOutcome]":
        outcomes = []
        named = False
        for staged in batch:
            try:
                path = staged.publish()
                outcomes.append(FetchOutcome(staged.rid, "saved", path, staged.size))
                named = True
            except (SoundBulkError, OSError) as exc:
                outcomes.append(self._failed_download(staged.rid, exc))
            finally:
                staged.discard()
        if named:
            _sync_folder(self.out_dir)  # one fsync makes every name of the group durable
        return outcomes


# ---------------------------------------------------------------------------
# Many prompts: submit tasks, poll them in rounds, resolve and download the runs
# ---------------------------------------------------------------------------

_NOT_CHECKED = "not checked: the API could not be reached; the task is in the manifest: run the same command again"
_NOT_PAYING_TWICE = ("a task may already exist for this prompt (an earlier submission got no answer); "
                     "not paying twice: rerun with --resubmit to submit it again")


def _generate_job(client: "Client", prompts: "Iterable[str]", out_dir: "str", duration: "Optional[float]",
                  audio_type: "str", resubmit: "bool", workers: "int", wait: "Optional[float]",
                  on_outcome: "Optional[OnPromptOutcome]", project_name: "Optional[str]",
                  project_description: "Optional[str]", folder_id: "Optional[int]",
                  on_status: "Optional[OnStatus]") -> "_Generate":
    """Check everything (nothing is sent on bad input) and build the journey's ``_Generate``."""
    prompts = list(prompts)
    if not prompts:
        raise ConfigurationError("no prompts given")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise ConfigurationError("workers must be a whole number from 1 to 64")
    payloads: "List[Dict[str, Any]]" = [
        _task_payload(p, duration, audio_type, project_name, project_description, folder_id) for p in prompts]
    keys = prompt_keys([p["prompt"] for p in payloads], duration, audio_type)
    return _Generate(client, payloads, keys, out_dir, workers, float(wait or 0), resubmit,
                     on_outcome, on_status)


def _lock_manifest(path: "str") -> "Optional[int]":
    """An open descriptor holding an exclusive advisory lock (flock) on the manifest, so that two generate
    runs on one folder cannot both submit a prompt; ConfigurationError when another run holds it.  None
    where there is no fcntl (Windows): there, nothing stops two runs at once."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError:
        return None  # a manifest that cannot be opened is reported where it is read or written
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        import errno
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise ConfigurationError("another generate run is using %s (its manifest is locked); nothing was "
                                     "submitted: wait for it to finish, then run this again" % path) from None
        return None  # a file system without flock (some network mounts): go on unlocked, as on Windows
    return fd


class _Generate:
    """The journey of ``generate``.  Prompts go through submit -> poll -> resolve -> download; every
    request runs on a worker, and only the calling thread changes this object (workers return values;
    the manifest has its own lock).  Each task is polled on its own timer with growing pauses; finished
    runs are resolved five at a time, and each prompt settles (``on_outcome``) as soon as its fate is known."""

    settled: "Set[int]"
    notes: "Dict[int, str]"
    timers: "List[Tuple[float, int, str, int]]"
    asked: "Dict[Tuple[str, int], int]"
    runs: "Dict[int, List[int]]"
    ended: "Dict[int, FetchOutcome]"
    unresolved: "List[int]"
    inflight: "Dict[Future[Any], Tuple[str, Any]]"
    unreachable: "Optional[APIUnreachableError]"
    to_submit: "List[int]"
    done: "queue.Queue[Future[Any]]"
    api: "ThreadPoolExecutor"
    downloads: "ThreadPoolExecutor"

    def __init__(self, client: "Client", payloads: "List[Dict[str, Any]]", keys: "List[str]", out_dir: "str",
                 workers: "int", wait: "float", resubmit: "bool",
                 on_outcome: "Optional[OnPromptOutcome]",
                 on_status: "Optional[OnStatus]") -> None:
        import threading
        self.client, self.payloads, self.keys, self.out_dir = client, payloads, keys, out_dir
        self.workers, self.wait, self.resubmit = workers, wait, resubmit
        self.on_outcome, self.on_status = on_outcome, on_status
        self.manifest = Manifest(os.path.join(out_dir, MANIFEST_NAME))
        self.outcomes = [PromptOutcome(p["prompt"]) for p in payloads]
        self.settled = set()
        self.notes = {}         # prompt index -> what the user must know even if it ends well
        self.timers = []        # heap of (when, seq, "poll", prompt index) | (when, seq, "resolve", run ID)
        self.seq = 0
        self.asked = {}         # ("poll", index) | ("resolve", run ID) -> answers so far
        self.runs = {}          # run ID -> prompt indices
        self.ended = {}         # run ID -> its FetchOutcome, once it has one
        self.unresolved = []    # run IDs to resolve (flushed five at a time)
        self.inflight = {}      # future -> (kind, argument)
        self.busy = {"submit": 0, "poll": 0, "resolve": 0, "download": 0}
        self.unreachable = None
        self.to_submit = []     # prompt indices held back until the first submission has its answer
        self.cancel = threading.Event()
        self.halted = threading.Event()  # every call and download of this journey stops once it is set
        self.interrupt = _InterruptFlag()
        self.deadline = client._clock() + wait

    # -- the calling thread ------------------------------------------------------

    def run(self) -> "List[PromptOutcome]":
        self.client.reset_unreachable()
        os.makedirs(self.out_dir, exist_ok=True)
        lock = _lock_manifest(self.manifest.path)
        try:
            return self.client._as_work(self.halted, self._run)
        finally:
            if lock is not None:
                os.close(lock)  # and the lock goes with it

    def _run(self) -> "List[PromptOutcome]":
        _sweep_stale_parts(self.out_dir)
        to_submit = self._plan(self.manifest.state())
        import queue
        from concurrent.futures import ThreadPoolExecutor
        self.done = queue.Queue()
        # Task creation, polls and bulk calls share these threads; the Client's call window (AIMD: a 429
        # shrinks it) bounds how many are under way, as for fetch's bulk calls.
        self.api = ThreadPoolExecutor(max_workers=min(self.workers, self.client._window.limit),
                                      thread_name_prefix="sound_bulk-api")
        self.downloads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sound_bulk-download")
        with self.interrupt:  # also around _stop: a second Ctrl-C there raises the flag, not an exception
            try:
                if to_submit:  # the first alone: an API that cannot be reached is then one error, not N
                    self._start("submit", to_submit[0])
                self.to_submit = to_submit[1:]
                self._loop()
            except BaseException as exc:
                self._stop()
                if isinstance(exc, KeyboardInterrupt):
                    for i in range(len(self.outcomes)):
                        if i not in self.settled:
                            self.outcomes[i].status, self.outcomes[i].error = "error", "interrupted"
                    raise FetchInterrupted(self.outcomes) from None
                raise
        self.api.shutdown(wait=True)
        self.downloads.shutdown(wait=True)
        return self.outcomes

    def _plan(self, known: "Dict[str, Record]") -> "List[int]":
        """Settle what the manifest and the folder already answer; return the prompts to submit."""
        to_submit: "List[int]" = []
        for i, key in enumerate(self.keys):
            entry, outcome = known.get(key, {}), self.outcomes[i]
            outcome.task_id, rid = entry.get("task_id"), entry.get("run_id")
            events = entry.get("events") or []
            if isinstance(rid, int) and not isinstance(rid, bool) and rid > 0:
                outcome.run_id = rid
                path = saved_path(self.out_dir, rid)
                if path:
                    self._settle(i, "skipped", path=path, size=os.path.getsize(path))
                else:
                    self._run_found(rid, i)
            elif entry.get("task_id") and entry.get("task_status") == "ERROR":
                self._settle(i, "failed", error=entry.get("error") or "the task failed")
            elif entry.get("task_id"):
                self._again("poll", i, 0)
            elif events and events[-1] in ("submitting", "submit_unknown") and not self.resubmit:
                self._settle(i, "error", error=_NOT_PAYING_TWICE)
            else:
                to_submit.append(i)
        return to_submit

    def _loop(self) -> None:
        import heapq
        clock = self.client._clock
        while True:
            if self.interrupt.raised or self.halted.is_set():  # Ctrl-C, or Client.abort()
                raise KeyboardInterrupt
            self._flush_runs()
            now = clock()
            if not self.inflight and self.timers and self.timers[0][0] > now:
                self._pause(self.timers[0][0] - now)  # then it is due, whatever the clock says
            elif not self.timers or self.timers[0][0] > now:
                if not self.inflight:
                    return
                self._wait_for_answer(self.timers[0][0] - now if self.timers else None)
                continue
            _due, _seq, kind, arg = heapq.heappop(self.timers)
            if kind == "poll":
                self._start("poll", arg)
            else:
                self.unresolved.append(arg)

    def _wait_for_answer(self, due_in: "Optional[float]") -> None:
        import queue
        try:  # in short slices, so a raised flag is seen soon
            future = self.done.get(timeout=_FLAG_SLICE if due_in is None else max(0.0, min(_FLAG_SLICE, due_in)))
        except queue.Empty:
            return
        kind, arg = self.inflight.pop(future)
        self.busy[kind] -= 1
        getattr(self, "_after_" + kind)(arg, future)
        if self.client.unreachable is not None and self.unreachable is None:
            self._give_up_on_api()

    def _start(self, kind: "str", arg: "Any") -> None:
        pool = self.downloads if kind == "download" else self.api
        future = pool.submit(getattr(self, "_" + kind), arg)
        self.inflight[future] = (kind, arg)
        self.busy[kind] += 1
        future.add_done_callback(self.done.put)

    def _again(self, kind: "str", arg: "int", asked: "int") -> bool:
        """Ask again later (pauses 1, 1.5, 2.25 ... 15 s, the last at the deadline); False when time is up.
        ``kind`` is "poll" (prompt index) or "resolve" (run ID); ``asked`` how often it was asked so far."""
        import heapq
        now = self.client._clock()
        if asked and now >= self.deadline:
            return False
        pause = 0.0 if not asked else min(POLL_MAX, POLL_INITIAL * (1.5 ** (asked - 1)))
        self.seq += 1
        heapq.heappush(self.timers, (max(now, min(now + pause, self.deadline)), self.seq, kind, arg))
        return True

    def _flush_runs(self) -> None:
        """Bulk calls of five run IDs; fewer only when no poll or submission under way, nor a poll due
        now, could fill the chunk (a run is not held back for a poll that is seconds away)."""
        due = self.timers and self.timers[0][0] <= self.client._clock()
        while len(self.unresolved) >= MAX_RUN_IDS or (
                self.unresolved and not (self.busy["poll"] or self.busy["submit"] or due)):
            chunk, self.unresolved = self.unresolved[:MAX_RUN_IDS], self.unresolved[MAX_RUN_IDS:]
            self._start("resolve", chunk)

    def _pause(self, seconds: "float") -> None:
        """Wait for the next round through the client's sleep; Ctrl-C while asleep stops at once."""
        self.interrupt.sleeping = True
        try:
            if self.interrupt.raised or self.halted.is_set():  # Ctrl-C, or Client.abort()
                raise KeyboardInterrupt
            if self.on_status is None:
                self.client._sleep(seconds)
                return
            while seconds > 0:  # steps of a second, so the countdown moves
                self.on_status(self._status_text(seconds))
                step = min(seconds, 1.0)
                self.client._sleep(step)
                seconds -= step
        finally:
            self.interrupt.sleeping = False

    def _status_text(self, seconds: "float") -> str:
        tasks = [i for i, o in enumerate(self.outcomes) if o.task_id]
        generating = sum(1 for i in tasks if i not in self.settled and self.outcomes[i].run_id is None)
        return "%s: %d done, %d generating, next check in %d s" % (
            _plural(len(tasks), "task"), len(tasks) - generating, generating, int(seconds + 0.999))

    def _settle(self, i: "int", status: "OutcomeStatus", path: "Optional[str]" = None, size: "Optional[int]" = None,
                error: "Optional[str]" = None) -> None:
        if i in self.settled:
            return
        self.settled.add(i)
        outcome = self.outcomes[i]
        note = self.notes.pop(i, None)
        outcome.status, outcome.path, outcome.bytes = status, path, size
        outcome.error = error if error or not note else note
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _record(self, record: "Record") -> None:
        """A manifest line that later steps do not rely on: a failure is logged, not fatal."""
        try:
            self.manifest.append(record)
        except OSError as exc:
            self.client._log.warning("cannot write %s: %s", self.manifest.path, _os_error_text(exc))

    def _run_found(self, rid: "int", i: "int") -> None:
        if rid in self.runs:  # two prompts, one run (a manifest edited by hand, say): both get its end
            self.runs[rid].append(i)
            if rid in self.ended:
                self._after_run(rid, self.ended[rid])
            return
        self.runs[rid] = [i]
        self.unresolved.append(rid)

    def _give_up_on_api(self) -> None:
        """The API cannot be reached (the Client says so): nothing more is asked of it; every prompt
        left says why, once (the cause is for one message: ``unreachable``)."""
        import heapq
        self.unreachable = self.client.unreachable
        for future, (kind, _arg) in list(self.inflight.items()):
            if kind in ("submit", "poll"):
                future.cancel()  # its completion still arrives, as cancelled
        for _when, _seq, kind, arg in self.timers:
            if kind == "poll":
                self._settle(arg, "pending", error=_NOT_CHECKED)
        self.timers = [t for t in self.timers if t[2] != "poll"]
        heapq.heapify(self.timers)

    # -- what came back (calling thread) ------------------------------------------

    def _after_submit(self, i: "int", future: "Future[Submitted]") -> None:
        if future.cancelled():
            why = "the API could not be reached" if self.unreachable else "interrupted"
            return self._settle(i, "error", error="not submitted: " + why)
        task_id, error, exc = future.result()  # AuthenticationError propagates: every prompt would fail
        self.outcomes[i].task_id = task_id
        if isinstance(exc, APIUnreachableError):
            self._give_up_on_api()
            if not exc.sent:  # nothing reached the API: the cause goes in the one message
                error = "not submitted: the API could not be reached"
        if task_id and error:
            self.notes[i] = error
        if not task_id:
            self._settle(i, "error", error=error)
        elif self.unreachable:
            self._settle(i, "pending", error=_NOT_CHECKED)
        else:
            self._again("poll", i, 0)
        for j in self.to_submit:  # after the first answer, the others
            if self.unreachable:
                self._settle(j, "error", error="not submitted: the API could not be reached")
            else:
                self._start("submit", j)
        self.to_submit = []

    def _after_poll(self, i: "int", future: "Future[Task]") -> None:
        if future.cancelled():
            return self._settle(i, "pending", error=_NOT_CHECKED)
        asked = self.asked[("poll", i)] = self.asked.get(("poll", i), 0) + 1
        exc = future.exception()
        if exc is not None:
            if not isinstance(exc, SoundBulkError) or isinstance(exc, AuthenticationError):
                raise exc
            if isinstance(exc, APIUnreachableError):
                self._give_up_on_api()
                return self._settle(i, "pending", error=_NOT_CHECKED)
            return self._poll_later(i, asked, "could not check the task: %s" % exc)
        task = future.result()
        if task.status == "SUCCESS":
            assert task.run_id is not None  # get_task makes a SUCCESS without a run_id an ERROR
            self.outcomes[i].run_id = task.run_id
            self._record({"event": "task", "key": self.keys[i], "task_id": task.task_id,
                          "task_status": "SUCCESS", "run_id": task.run_id})
            self._run_found(task.run_id, i)
        elif task.status == "ERROR":
            self._record({"event": "task", "key": self.keys[i], "task_id": task.task_id,
                          "task_status": "ERROR", "error": task.error})
            self._settle(i, "failed", error=task.error or "the task failed")
        else:
            self._poll_later(i, asked, "the task is not finished yet")

    def _poll_later(self, i: "int", asked: "int", why: "str") -> None:
        if not self._again("poll", i, asked):
            self._settle(i, "pending", error=why + "; run the same command again later")

    def _after_resolve(self, chunk: "List[int]", future: "Future[Dict[int, RunResult]]") -> None:
        results = future.result()  # AuthenticationError propagates
        for rid in chunk:
            result = results[rid]
            if result.ready:
                self._start("download", result)
            elif result.status == FAILED:
                self._after_run(rid, FetchOutcome(rid, "failed", error=result.error or "generation failed"))
            elif result.error:
                self._after_run(rid, FetchOutcome(rid, "error", error=result.error))
            else:
                asked = self.asked[("resolve", rid)] = self.asked.get(("resolve", rid), 0) + 1
                if not self._again("resolve", rid, asked):
                    why = result.error or ("not ready yet" if result.status == PENDING else
                                           "the API returned no entry for it")
                    self._after_run(rid, FetchOutcome(rid, result.status, error=why))

    def _after_download(self, result: "RunResult", future: "Future[FetchOutcome]") -> None:
        self._after_run(result.run_id, future.result())

    def _after_run(self, rid: "int", outcome: "FetchOutcome") -> None:
        self.ended[rid] = outcome
        for i in self.runs[rid]:
            if i in self.settled:
                continue
            if outcome.status == "saved":
                self._record({"event": "saved", "key": self.keys[i], "run_id": rid, "path": outcome.path})
            self._settle(i, outcome.status, path=outcome.path, size=outcome.bytes, error=outcome.error)

    # -- workers ----------------------------------------------------------------------

    def _submit(self, i: "int") -> "Submitted":
        """Create prompt i's task: ``(task_id, error, exception)``.  The task is on disk (fsynced)
        before this returns; if that cannot be, its ID is logged and returned with the error."""
        key, payload = self.keys[i], self.payloads[i]
        if self.cancel.is_set() or self.unreachable:
            return None, "not submitted: " + ("interrupted" if self.cancel.is_set() else
                                              "the API could not be reached"), None
        try:
            self.manifest.append({"event": "submitting", "key": key, "prompt": payload["prompt"],
                                  "time": time.time()})
        except OSError as exc:
            return None, "not submitted: cannot write %s: %s" % (self.manifest.path, _os_error_text(exc)), None
        try:
            task_id = self.client._create_task(payload, self.halted)
        except (APIError, TransportError) as exc:
            self._submission_failed(key, exc)
            return None, "submission failed: %s" % exc, exc
        try:
            self.manifest.append({"event": "created", "key": key, "prompt": payload["prompt"], "task_id": task_id,
                                  "duration": payload.get("duration"), "audio_type": payload["audio_type"],
                                  "time": time.time()})
        except OSError as exc:
            note = "task %s was created but could not be recorded in %s (%s): keep this ID" % (
                task_id, self.manifest.path, _os_error_text(exc))
            self.client._log.error("%s (prompt: %s)", note, _short_repr(payload["prompt"]))
            return task_id, note, None
        return task_id, None, None

    def _submission_failed(self, key: "str", exc: "Union[APIError, TransportError]") -> None:
        # Only a 4xx answer or a failure to connect (TransportError.sent is False) proves no task was
        # made; after a 5xx (a proxy's 502 may follow a task the API did create) or a lost answer, it
        # may exist: not paid twice.  (Never judged from the error's text: a server writes that.)
        definite = (isinstance(exc, APIError) and exc.status is not None and 400 <= exc.status < 500) or (
            isinstance(exc, TransportError) and not exc.sent)
        try:
            self.manifest.append({"event": "submit_failed" if definite else "submit_unknown", "key": key,
                                  "error": str(exc)})
        except OSError:
            pass  # the line before says "submitting": a rerun will not resubmit it, the safe side
        if isinstance(exc, AuthenticationError):
            raise exc

    def _poll(self, i: "int") -> "Task":
        task_id = self.outcomes[i].task_id
        assert task_id is not None  # only a prompt with a task is polled
        return self.client._get_task(task_id, self.halted)

    def _resolve(self, chunk: "List[int]") -> "Dict[int, RunResult]":
        if self.cancel.is_set():
            return {rid: RunResult(rid, MISSING, error="interrupted") for rid in chunk}
        return self.client._resolve_chunk(chunk, self.halted)

    def _download(self, result: "RunResult") -> "FetchOutcome":
        """One run from URL to durable file, as an outcome, in one thread; a failure ends as in fetch
        (``_download_failure``: one rule for how a download ends)."""
        rid = result.run_id
        assert result.url is not None  # a ready run has its URL
        try:
            path, size = _Download(self.client, rid, self.out_dir, result.url, None, self.cancel, self.halted).run()
            return FetchOutcome(rid, "saved", path, size)
        except AuthenticationError:
            raise
        except (SoundBulkError, OSError) as exc:
            return _download_failure(self.out_dir, rid, exc)

    # -- Ctrl-C and errors ------------------------------------------------------------

    def _stop(self) -> None:
        """Cancel what has not started; let submissions under way finish (they may be paying, and
        each records its task itself) unless Ctrl-C comes again; cut polls and downloads short.  No
        call is tried again, and none waits for that (``Client._halt``)."""
        self.cancel.set()
        self.client._halt(self.halted)
        for future in list(self.inflight):
            future.cancel()
        self.interrupt.raised = False
        from concurrent.futures import wait as wait_for
        pending = [f for f in self.inflight if not f.done()]
        while pending:
            if self.interrupt.raised:
                self.client._halt(self.halted, cut=True)  # a second Ctrl-C: stop waiting for answers
            pending = list(wait_for(pending, timeout=_FLAG_SLICE)[1])
        self.api.shutdown(wait=True)
        self.downloads.shutdown(wait=True)
        for future, (kind, arg) in list(self.inflight.items()):
            if kind == "submit" and not future.cancelled() and future.exception() is None:
                task_id, error, _exc = future.result()
                self.outcomes[arg].task_id = task_id
                if error and not task_id:  # e.g. cut short by a second Ctrl-C: say so, not "interrupted"
                    self._settle(arg, "error", error=error)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: True in the process ``console_main`` runs: once a command's work is done, it only prints and exits.
_CLI_PROCESS = [False]


_DESCRIPTION = """\
Turn the run IDs of finished text-to-sound tasks into verified audio files. The API key comes \
from $CAMB_API_KEY; nothing is ever sent over plain http except to loopback. The common options \
may come before or after the command.

Exit status: 0 every run saved or skipped (or, for urls, ready); 1 some were not; 2 bad usage or \
input, nothing sent; 3 the API rejected the key; 130 interrupted."""


_FETCH_EPILOG = """\
examples:
  {prog} fetch 101 102 103 -o sounds
  echo "101,102 103" | {prog} fetch - --json
  {prog} fetch 101 --wait 120

Each run is saved as DIR/<run_id>.wav (or .flac, .mp3, .ogg when the bytes are that format); a run \
already saved there is skipped without any request. --wait keeps asking for runs that are not \
ready yet."""


def _terminal_columns() -> int:
    """The width shutil.get_terminal_size() gives ($COLUMNS, else standard output's terminal, else 80)
    without importing shutil, which brings bz2, lzma and fnmatch: every command builds its parser."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    stdout = sys.__stdout__  # None under pythonw; its fileno() raises when it is not a real file
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            pass  # not a terminal: 80
    return columns if columns > 0 else 80


def _help_formatter(columns: "int") -> "Type[argparse.HelpFormatter]":
    """argparse's formatter, but prose is wrapped to ``columns`` and indented lines (examples) kept."""
    import argparse
    import textwrap

    class HelpFormatter(argparse.HelpFormatter):
        def __init__(self, prog: "str", indent_increment: "int" = 2, max_help_position: "int" = 24,
                     width: "Optional[int]" = None) -> None:
            if width is None:  # argparse asks the terminal itself only from 3.8 on ($COLUMNS before)
                width = columns - 2
            super().__init__(prog, indent_increment, max_help_position, width)

        def _fill_text(self, text: "str", width: "int", indent: "str") -> str:
            out: "List[str]" = []
            prose: "List[str]" = []
            for line in text.splitlines() + [""]:
                if line and not line[0].isspace():
                    prose.append(line)
                    continue
                if prose:
                    out.extend(textwrap.wrap(" ".join(prose), width, initial_indent=indent,
                                             subsequent_indent=indent))
                    prose = []
                out.append(indent + line if line else "")
            return "\n".join(out).rstrip("\n")

    return HelpFormatter


def _add_common_options(parser: "argparse.ArgumentParser", before_command: "bool") -> None:
    """The options every command takes; before the command they set defaults, after it they override."""
    import argparse
    default = (lambda value: value) if before_command else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options (before or after the command)")
    group.add_argument("--base-url", metavar="URL", default=default(None),
                       help="API base URL (default: $%s or %s)" % (BASE_URL_ENV, DEFAULT_BASE_URL))
    group.add_argument("--timeout", metavar="SECONDS", type=_positive_float, default=default(DEFAULT_TIMEOUT),
                       help="seconds allowed for each network operation (default: %g)" % DEFAULT_TIMEOUT)
    group.add_argument("--json", action="store_true", default=default(False),
                       help="one JSON object per run on standard output; messages go to standard error")
    group.add_argument("-q", "--quiet", action="store_true", default=default(False), help="print only problems")
    group.add_argument("-v", "--verbose", action="store_true", default=default(False),
                       help="log every request (key and URL signatures redacted) to standard error")


def _parser(prog: "str") -> "argparse.ArgumentParser":
    """The command line's parser, built again only when ``prog`` or the terminal's width has changed
    since the last call: a caller that runs main() again and again (a notebook, the tests) saves the
    ~2-3 ms that argparse takes to build it.  Parsing does not change a parser.  The help's texts are
    those of the first build (a test that changes DEFAULT_WORKERS, say, empties _LAST_PARSER); the
    commands are named, and looked up when they run."""
    key = (prog, _terminal_columns())
    last = _LAST_PARSER[0] if _LAST_PARSER else None  # one read: another thread may replace it
    if last is not None and last[0] == key:
        return last[1]
    parser = _build_parser(*key)
    _LAST_PARSER[:] = [(key, parser)]
    return parser


_LAST_PARSER: "List[Tuple[Tuple[str, int], argparse.ArgumentParser]]" = []


def _build_parser(prog: "str", columns: "int") -> "argparse.ArgumentParser":
    import argparse
    formatter = _help_formatter(columns)
    parser = argparse.ArgumentParser(prog=prog, description=_DESCRIPTION, formatter_class=formatter)
    parser.add_argument("--version", action="version", version="sound_bulk " + __version__)
    # The common options are taken before the command too (``--json fetch 101``): argparse copies
    # a subcommand's values over the main parser's, so after the command they default to nothing.
    _add_common_options(parser, before_command=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, before_command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fetch = sub.add_parser(
        "fetch", parents=[common], help="download the audio of finished runs", formatter_class=formatter,
        description="Download the audio of finished runs into a folder, verified, five IDs per request.",
        epilog=_FETCH_EPILOG.replace("{prog}", prog))
    fetch.add_argument("run_ids", nargs="*", metavar="RUN_ID",
                       help="run IDs; '-' reads whitespace- or comma-separated IDs from standard input")
    fetch.add_argument("-o", "--out", metavar="DIR", default=".", type=_out_dir,
                       help="folder for the files, created if missing (default: current folder)")
    fetch.add_argument("--workers", metavar="N", type=_worker_count, default=None,
                       help="parallel downloads, and the most bulk calls at once (default: 4 per CPU, "
                            "from 4 to %d downloads; %d bulk calls)" % (DEFAULT_WORKERS, API_CONCURRENCY))
    fetch.add_argument("--wait", metavar="SECONDS", type=_nonnegative_float, default=0.0,
                       help="keep asking for runs that are not ready for up to this long (default: 0)")
    fetch.add_argument("--manifest", metavar="PATH",
                       help="also take the run IDs recorded by 'generate': its manifest file, or the "
                            "folder that holds it")
    fetch.set_defaults(handler="_cmd_fetch")

    urls = sub.add_parser(
        "urls", parents=[common], help="resolve run IDs to download URLs without downloading",
        formatter_class=formatter,
        description="Resolve run IDs to their presigned download URLs; one JSON object per run on "
                    "standard output. Exit 0 when every run is ready, else 1.")
    urls.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                      help="run IDs; '-' reads them from standard input")
    urls.set_defaults(handler="_cmd_urls")
    _add_generate_parser(sub, common, formatter)
    return parser


def _add_generate_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
                         common: "argparse.ArgumentParser", formatter: "Type[argparse.HelpFormatter]") -> None:
    gen = sub.add_parser(
        "generate", parents=[common], help="turn prompts into audio files (creates paid tasks)",
        description="Create a text-to-sound task per prompt, wait for them, and download the results. "
                    "Every task is recorded in DIR/%s as it is created, so a rerun of the same command "
                    "resumes them instead of paying again." % MANIFEST_NAME,
        formatter_class=formatter)
    gen.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts; '-' reads one per line from standard input")
    gen.add_argument("--from-file", metavar="F", help="read prompts from F, one per line ('-' for standard input)")
    gen.add_argument("-o", "--out", metavar="DIR", default=".", type=_out_dir,
                     help="folder for the files and the manifest, created if missing (default: current folder)")
    gen.add_argument("--duration", metavar="S", type=_positive_float,
                     help="seconds of audio (the API accepts at most %g for sound)" % MAX_SOUND_DURATION)
    gen.add_argument("--type", dest="audio_type", choices=("sound", "music"), default="sound",
                     help="what to generate (default: %(default)s)")
    gen.add_argument("--workers", metavar="N", type=_worker_count, default=DEFAULT_WORKERS,
                     help="parallel submissions and downloads (default: %(default)d)")
    gen.add_argument("--wait", metavar="SECONDS", type=_nonnegative_float, default=600.0,
                     help="how long to wait for the tasks to finish (default: %(default)g)")
    gen.add_argument("--resubmit", action="store_true",
                     help="submit again a prompt whose earlier submission got no answer (may pay twice)")
    gen.set_defaults(handler="_cmd_generate")


def _seconds(text: "str", zero_ok: "bool" = False) -> float:
    """A number of seconds from the command line: more than 0 (or 0 or more), at most MAX_SECONDS."""
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%s is not a number" % ascii(text)) from None
    if value != value:
        raise argparse.ArgumentTypeError("%s is not a number" % ascii(text))
    if not (0 <= value if zero_ok else 0 < value):
        raise argparse.ArgumentTypeError("must be 0 or more" if zero_ok else "must be more than 0")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            "%s is too long: at most %d seconds (a week); larger values overflow the system's timers"
            % (ascii(text), MAX_SECONDS))
    return value


def _positive_float(text: "str") -> float:
    return _seconds(text)


def _nonnegative_float(text: "str") -> float:
    return _seconds(text, zero_ok=True)


def _worker_count(text: "str") -> int:
    import argparse
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 64")
    return int(text)


def _out_dir(text: "str") -> str:
    """An output folder: it, or the nearest part of the path that exists, must be a folder."""
    import argparse
    path = os.path.abspath(text or ".")
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        where = "" if path == os.path.abspath(text) else " (%s is a file)" % ascii(path)
        raise argparse.ArgumentTypeError("%s is not a folder%s" % (ascii(text), where))
    return text or "."


def _read_run_ids(values: "Iterable[str]", stdin: "TextIO") -> "List[int]":
    """Arguments (``-`` reads standard input) split on whitespace and commas, then validated."""
    import re
    ids: "List[str]" = []
    for value in values:
        text = stdin.read() if value == "-" else value
        ids.extend(token for token in re.split(r"[\s,]+", text) if token)
    return validate_run_ids(ids)


class _Console:
    """Where the CLI writes: results to stdout, progress and messages to stderr."""

    json: "bool"
    quiet: "bool"

    def __init__(self, args: "argparse.Namespace", stdout: "TextIO", stderr: "TextIO") -> None:
        self.json = args.json
        self.quiet = args.quiet
        self.stdout, self.stderr = stdout, stderr

    def result(self, obj: "Optional[Dict[str, Any]]", line: "str") -> None:
        if self.json:
            self.stdout.write(_json().dumps(obj) + "\n")
        elif not self.quiet and line:
            self._write(self.stdout, _terminal_safe(line) + "\n")
        self.stdout.flush()

    def say(self, text: "str") -> None:
        if not self.quiet:
            self.problem(text)

    def problem(self, text: "str") -> None:
        self._write(self.stderr, "sound_bulk: %s\n" % _terminal_safe(text))
        self.stderr.flush()

    @staticmethod
    def _write(stream: "TextIO", text: "str") -> None:
        """Write ``text`` with what the stream's encoding cannot carry as ``\\xe9``-style escapes (stdout is
        ASCII under LANG=C on 3.6, PYTHONIOENCODING=ascii, a Windows console): server text is no traceback."""
        encoding = getattr(stream, "encoding", None)
        if encoding:
            try:
                text = text.encode(encoding, "backslashreplace").decode(encoding)
            except (LookupError, UnicodeError):
                pass
        stream.write(text)


class _StatusLine:
    """The one line on a terminal that says what a command is doing or waiting for (``_Progress`` for fetch,
    generate's waits): redrawn in place, cleared (and the clearing flushed) before a result line."""

    def __init__(self, stream: "TextIO") -> None:
        self.stream, self.shown = stream, False

    def show(self, text: "str") -> None:
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


class _Progress:
    """The one status line on a terminal: files done / total, bytes, rate; or what ``--wait`` waits for.
    ``clear`` it before printing a result line; the next event draws it again."""

    status: "Optional[str]"

    def __init__(self, stream: "TextIO", total: "int") -> None:
        import threading
        self.total = total
        self.done = self.bytes = 0
        self.started = self._drawn = time.monotonic()
        self.status = None  # a waiting message, shown instead of the counts until the next run settles
        self.line = _StatusLine(stream)
        self._lock = threading.Lock()

    def add_bytes(self, n: "int") -> None:
        with self._lock:
            self.bytes += n
            now = time.monotonic()
            if now - self._drawn >= 0.1:
                self._draw(now)

    def run_done(self) -> None:
        with self._lock:
            self.done += 1
            self.status = None
            self._draw(time.monotonic())

    def waiting(self, text: "str") -> None:
        with self._lock:
            self.status = text
            self._draw(time.monotonic())

    def _draw(self, now: "float") -> None:
        self._drawn = now
        text = self.status
        if text is None:
            rate = self.bytes / max(now - self.started, 1e-6)
            text = "%d/%d files  %s  %s/s" % (self.done, self.total, _human_bytes(self.bytes), _human_bytes(rate))
        self.line.show(text)

    def clear(self) -> None:
        with self._lock:
            self.line.clear()

    finish = clear


def _waiting_text(runs: "int", next_in: "float", left: "float") -> str:
    """``waiting for 1 run, next check in 8 s, 52 s left`` (seconds rounded up)."""
    return "waiting for %d %s, next check in %d s, %d s left" % (
        runs, "run" if runs == 1 else "runs", -(-next_in // 1), -(-left // 1))


def _human_bytes(n: "float") -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0
    return "%.1f GiB" % n


def _client_from(args: "argparse.Namespace") -> "Client":
    """The command's Client; a missing key is explained for a shell, not for Python code."""
    if not (os.environ.get(API_KEY_ENV) or "").strip():
        if os.name == "nt":
            how = "set %s=... (cmd) or $env:%s = \"...\" (PowerShell)" % (API_KEY_ENV, API_KEY_ENV)
        else:
            how = "export %s=..." % API_KEY_ENV
        raise ConfigurationError("no API key: set the environment variable %s to your CAMB.AI API key, "
                                 "for example: %s (an API key is made in your CAMB.AI account)"
                                 % (API_KEY_ENV, how))
    return Client(base_url=args.base_url, timeout=args.timeout)


def _outcome_line(o: "Union[FetchOutcome, PromptOutcome]") -> str:
    detail = o.path if o.path else (o.error or "")
    if o.path and o.bytes is not None:
        detail = "%s (%s)" % (o.path, _human_bytes(o.bytes))
    return "%-12s %-8s %s" % (o.run_id if o.run_id is not None else "-", o.status, detail)


def _report_outcomes(console: "_Console", outcomes: "Sequence[FetchOutcome]", started: "float") -> int:
    return _report(console, outcomes, started, "run", _outcome_line)


def _report(console: "_Console", outcomes: "Sequence[Union[FetchOutcome, PromptOutcome]]", started: "float",
            noun: str, line: "Callable[[Any], str]") -> int:
    """The summary message of fetch and generate (and, with -q, each problem's line); the exit status."""
    summary = _count_statuses(outcomes, ("saved", "skipped", "pending", "missing", "failed", "error"))
    size = sum(o.bytes or 0 for o in outcomes if o.status == "saved")
    console.say("%s (%s, %s saved in %.1f s)" % (summary, _plural(len(outcomes), noun),
                                                 _human_bytes(size), time.monotonic() - started))
    if console.quiet and not console.json:  # with --json the problems are in the JSON lines already
        for o in outcomes:
            if not o.ok:
                console.problem(line(o))
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_INCOMPLETE


def _count_statuses(outcomes: "Sequence[Union[FetchOutcome, PromptOutcome]]", order: "Sequence[str]") -> str:
    """"3 saved, 1 failed, 2 errors": how many outcomes have each status, in ``order``, the absent left out."""
    counts: "Dict[str, int]" = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return ", ".join(_plural(counts[s], s) if s == "error" else "%d %s" % (counts[s], s) for s in order if s in counts)


def _cmd_fetch(args: "argparse.Namespace", console: "_Console", stdin: "TextIO") -> int:
    ids = list(args.run_ids)
    if args.manifest:
        ids.extend(str(rid) for rid in manifest_run_ids(args.manifest))
    if not ids:
        raise InvalidRunIdError([], "no run IDs given (pass RUN_ID..., '-' for standard input, or --manifest)")
    run_ids = _read_run_ids(ids, stdin)
    client = _client_from(args)
    started = time.monotonic()
    progress = None
    if not args.quiet and console.stderr.isatty():
        progress = _Progress(console.stderr, len(run_ids))
    printed = [0]  # --json: lines printed so far, in request order
    shown: "Set[int]" = set()  # human output: runs printed so far, as they settled
    held: "Dict[int, FetchOutcome]" = {}
    last_wait: "List[Optional[float]]" = [None]

    def emit(outcome: "FetchOutcome") -> None:
        if console.json:
            held[outcome.run_id] = outcome
            while printed[0] < len(run_ids) and run_ids[printed[0]] in held:
                o = held.pop(run_ids[printed[0]])
                console.result(o.as_dict(), _outcome_line(o))
                printed[0] += 1
        else:
            if progress is not None:
                progress.clear()
            console.result(outcome.as_dict(), _outcome_line(outcome))
            shown.add(outcome.run_id)
        if progress is not None:
            progress.run_done()

    def waiting(runs: "int", next_in: "float", left: "float") -> None:
        text = _waiting_text(runs, next_in, left)
        if progress is not None:
            progress.waiting(text)
        elif last_wait[0] is None or next_in > last_wait[0]:
            console.say(text)  # not a terminal: one line each time a wait starts
        last_wait[0] = next_in

    # Ctrl-C and SIGTERM only raise a flag from here on: one that comes once the work is done (while
    # printing, or exiting) changes nothing, and one during clean-up does not break it off.
    flag = _InterruptFlag()
    flag.ignore_after = _CLI_PROCESS[0]
    with flag:
        try:
            with client:
                outcomes = client.fetch(run_ids, args.out, workers=args.workers, wait=args.wait,
                                        progress=progress.add_bytes if progress else None, on_outcome=emit,
                                        on_wait=waiting)
        except FetchInterrupted as exc:
            if progress is not None:
                progress.finish()
            rest = exc.outcomes[printed[0]:] if console.json else [o for o in exc.outcomes if o.run_id not in shown]
            for o in rest:
                console.result(o.as_dict(), _outcome_line(o))
            saved = sum(1 for o in exc.outcomes if o.status == "saved")
            console.problem("interrupted: %d saved; run the same command again to finish the rest" % saved)
            return EXIT_INTERRUPTED
        finally:
            if progress is not None:
                progress.finish()
        _say_unreachable(console, client, outcomes)
        return _report_outcomes(console, outcomes, started)


def _say_unreachable(console: "_Console", client: "Client", outcomes: "Sequence[FetchOutcome]") -> None:
    """One message for a batch the API could not be reached for, instead of one per run."""
    error = client.unreachable
    if error is None:
        return
    count = sum(1 for o in outcomes if o.status in ("error", "missing") and o.error
                and o.error.startswith("the API cannot be reached"))
    console.problem("error: %s; %d %s not resolved (check --base-url or $%s, and the network)" % (
        error, count, "run" if count == 1 else "runs", BASE_URL_ENV))


def _cmd_urls(args: "argparse.Namespace", console: "_Console", stdin: "TextIO") -> int:
    run_ids = _read_run_ids(args.run_ids, stdin)
    started = time.monotonic()
    with _client_from(args) as client:
        results = client.get_results(run_ids)
    rows: "List[FetchOutcome]" = []
    for rid in run_ids:
        r = results[rid]
        error = r.error
        if error is None and r.status == PENDING:
            error = "not ready yet"
        elif error is None and r.status == MISSING:
            error = "the API returned no entry for it"
        rows.append(FetchOutcome(rid, r.status, error=error))
        console.stdout.write(_json().dumps({"run_id": rid, "status": r.status, "url": r.url, "error": error}) + "\n")
    console.stdout.flush()
    _say_unreachable(console, client, rows)
    summary = _count_statuses(rows, (READY, PENDING, FAILED, MISSING))
    console.say("%s (%s in %.1f s)" % (summary, _plural(len(rows), "run"), time.monotonic() - started))
    return EXIT_OK if all(results[rid].ready for rid in run_ids) else EXIT_INCOMPLETE


def _read_prompts(args: "argparse.Namespace", stdin: "TextIO") -> "List[str]":
    prompts: "List[str]" = []
    sources = list(args.prompts)
    if args.from_file:
        if args.from_file == "-":
            sources.append("-")
        else:
            try:
                with open(args.from_file, encoding="utf-8") as f:
                    prompts.extend(line.strip() for line in f if line.strip())
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError("cannot read prompts from %s: %s" % (args.from_file, exc)) from None
    for value in sources:
        if value == "-":
            prompts.extend(line.strip() for line in stdin.read().splitlines() if line.strip())
        else:
            prompts.append(value)
    if not prompts:
        raise ConfigurationError("no prompts given (pass PROMPT..., '-' or --from-file F)")
    return prompts


def _prompt_line(o: "PromptOutcome") -> str:
    """fetch's layout (run ID, status, path and size or the error), then the prompt."""
    prompt = o.prompt if len(o.prompt) <= 60 else o.prompt[:57] + "..."
    return "%s  \"%s\"" % (_outcome_line(o), prompt)


def _cmd_generate(args: "argparse.Namespace", console: "_Console", stdin: "TextIO") -> int:
    prompts = _read_prompts(args, stdin)
    started = time.monotonic()
    status = _StatusLine(console.stderr) if not args.quiet and console.stderr.isatty() else None
    shown: "Set[int]" = set()

    # human lines as each prompt settles; --json keeps prompt order, at the end
    def settled(o: "PromptOutcome") -> None:
        if status is not None:
            status.clear()
        if not console.json:
            console.result(None, _prompt_line(o))
        shown.add(id(o))

    with _client_from(args) as client:
        job = _generate_job(client, prompts, args.out, duration=args.duration, audio_type=args.audio_type,
                            resubmit=args.resubmit, workers=args.workers, wait=args.wait, on_outcome=settled,
                            project_name=None, project_description=None, folder_id=None,
                            on_status=status.show if status is not None else None)
        try:
            outcomes = job.run()
        except FetchInterrupted as exc:
            _print_prompts(console, [o for o in exc.outcomes if isinstance(o, PromptOutcome)], shown)  # all are
            console.problem("interrupted; every created task is in the manifest: run the same command again")
            return EXIT_INTERRUPTED
        finally:
            if status is not None:
                status.clear()
    _print_prompts(console, outcomes, shown)
    if job.unreachable is not None:  # one message with the cause; the prompts' lines say what it cost
        unsent = sum(1 for o in outcomes if (o.error or "").startswith("not submitted: the API"))
        unchecked = sum(1 for o in outcomes if o.error == _NOT_CHECKED)
        cost = [text % _plural(n, "prompt") for n, text in ((unsent, "%s not submitted"),
                                                           (unchecked, "%s not checked")) if n]
        console.problem("error: %s; %s (check --base-url or $%s, and the network)" % (
            job.unreachable, ", ".join(cost) or "nothing more asked", BASE_URL_ENV))
    return _report_prompts(console, outcomes, started)


def _print_prompts(console: "_Console", outcomes: "Sequence[PromptOutcome]", shown: "Set[int]") -> None:
    for o in outcomes:
        if console.json or id(o) not in shown:
            console.result(o.as_dict(), _prompt_line(o))


def _report_prompts(console: "_Console", outcomes: "Sequence[PromptOutcome]", started: "float") -> int:
    return _report(console, outcomes, started, "prompt", _prompt_line)


def main(argv: "Optional[Sequence[str]]" = None, stdin: "Optional[TextIO]" = None,
         stdout: "Optional[TextIO]" = None, stderr: "Optional[TextIO]" = None) -> int:
    """Run the command line; returns the exit status instead of exiting."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    import contextlib
    prog = _prog_name() if argv is None else "python -m sound_bulk"
    argv = sys.argv[1:] if argv is None else list(argv)
    bad = _bad_argument(argv)
    if bad:
        stderr.write("%s: error: %s\n" % (prog, bad))
        return EXIT_USAGE
    parser = _parser(prog)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)  # --help, --version and usage errors go where main was told
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "command", None):
        parser.print_help(stderr)
        return EXIT_USAGE
    console = _Console(args, stdout, stderr)
    # By name, looked up now: the parser is kept between calls, the module's functions may have been replaced.
    command: "Callable[[argparse.Namespace, _Console, TextIO], int]" = globals()[args.handler]
    handler: "Optional[logging.Handler]" = None
    if args.verbose:
        import logging
        handler = logging.StreamHandler(stderr)
        handler.setFormatter(_safe_formatter("sound_bulk: %(message)s"))
        log = logging.getLogger(__name__)
        old_level = log.level
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    try:
        return command(args, console, stdin)
    except (ConfigurationError, InvalidRunIdError) as exc:
        console.problem("error: %s" % exc)
        return EXIT_USAGE
    except AuthenticationError as exc:
        console.problem("error: %s" % exc)
        return EXIT_AUTH
    except (SoundBulkError, OSError) as exc:
        console.problem("error: %s" % exc)
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        console.problem("interrupted")
        return EXIT_INTERRUPTED
    finally:
        if handler is not None:
            log.removeHandler(handler)
            log.setLevel(old_level)


def _safe_formatter(fmt: "str") -> "logging.Formatter":
    """A logging formatter whose every line passes through ``_terminal_safe``."""
    import logging

    class SafeFormatter(logging.Formatter):
        def format(self, record: "logging.LogRecord") -> str:
            return _terminal_safe(super().format(record))

    return SafeFormatter(fmt)


def _bad_argument(argv: "Sequence[object]") -> "Optional[str]":
    """Why an argument cannot be used at all, or None.  POSIX hands Python the bytes it could not
    decode as lone surrogates, which no file name, terminal or JSON line can carry; a NUL cannot
    come from a shell, only from a caller in Python, and no system call takes it."""
    for arg in argv:
        if not isinstance(arg, str):
            return "argument %s is not text" % ascii(arg)
        if any("\udc80" <= ch <= "\udcff" for ch in arg):
            try:
                shown = ascii(os.fsencode(arg))[1:]  # the bytes as given: '\xff...'
            except UnicodeError:
                shown = ascii(arg)
            return "argument %s is not valid %s text" % (shown, sys.getfilesystemencoding())
        if "\0" in arg:
            return "argument %s contains a NUL character" % ascii(arg)
    return None


def _prog_name() -> str:
    """The command as the user typed it, for usage lines: ``sound-bulk``, ``python -m sound_bulk``
    or ``python sound_bulk.py``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if __name__ != "__main__":  # an installed script (or another program) imported this module
        name = os.path.basename(argv0)
        for suffix in ("-script.py", ".exe"):  # the forms Windows launchers take
            if name.endswith(suffix):
                name = name[:-len(suffix)]
        return name if name and name not in ("-c", "-m") else "sound-bulk"
    typed = getattr(sys, "orig_argv", None)  # 3.10+: the interpreter's own command line
    python = os.path.basename(typed[0]) if typed else "python"
    if python.endswith(".exe"):
        python = python[:-4]
    spec = globals().get("__spec__")
    if spec is not None and getattr(spec, "name", None):
        return "%s -m %s" % (python, spec.name)
    return "%s %s" % (python, argv0 or "sound_bulk.py")


def console_main() -> "NoReturn":
    """Entry point of the `sound-bulk` script and of `python -m sound_bulk`."""
    _CLI_PROCESS[0] = True
    try:
        import signal
        # SIGTERM ends a run like Ctrl-C: temp files removed, what was saved reported.
        try:
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        except (ValueError, OSError, AttributeError):
            pass
        code = main()
        sys.stdout.flush()
    except KeyboardInterrupt:
        # Ctrl-C before a command was under way (while starting up, say): no traceback, nothing to clean.
        sys.stderr.write("sound_bulk: interrupted\n")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped to a program that stopped reading (e.g. `| head`).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_INCOMPLETE
    sys.exit(code)


def _end_process(code: "Any") -> None:
    """``python -m sound_bulk`` is done: when nothing else runs in the process, leave at once.

    By then every file is closed, and fsynced before it was called saved, every thread joined; what
    is left is the interpreter's teardown (freeing every module, and OpenSSL's own clean-up), ~20 ms
    here: a tenth of a small batch's whole run.  With another thread still alive, or output that
    cannot be flushed, this returns and the normal exit does its work."""
    threading = sys.modules.get("threading")
    if not isinstance(code, int) or (threading is not None and threading.active_count() > 1):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


if __name__ == "__main__":
    # Alias so that `python -m sound_bulk` and `import sound_bulk` share one set of classes.
    sys.modules.setdefault("sound_bulk", sys.modules[__name__])
    try:
        console_main()
    except SystemExit as done:
        _end_process(done.code)
        raise
