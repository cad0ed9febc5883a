"""Benchmark: sound_bulk against the official SDK (+ an httpx download loop) and curl.

    python benchmarks/run.py                    # every table below except "workers"; Markdown on stdout
    python benchmarks/run.py --tables scaling   # one table (comma-separated list: see --tables)
    python benchmarks/run.py --tiny             # seconds, for CI: proves the script works, judges nothing

It sets up what it needs in benchmarks/.work/ (a CA and a server certificate made with openssl; a
throwaway venv with camb-sdk==1.6.6), starts the project's fake API (tests/fake_api.py) over TLS on
127.0.0.1 in its own process, with a delay on every new connection (a handshake round trip) and on
every request, and does the same work in up to four ways:

  (a) python -m sound_bulk fetch - -o DIR      (IDs on stdin; from a venv with nothing installed)
  (b) the SDK: get_text_to_sound_results in chunks of 5, then an httpx streaming GET per URL, in turn
  (c) curl --parallel over the same URLs (resolved beforehand, untimed): the floor for downloading
  (d) curl that resolves too: one bulk call per 5 IDs (curl --parallel, --curl-api-parallel at a
      time), the answers read, then curl --parallel over the URLs; all of it timed

Tables (--tables):
  compare   60 x 1 MiB, ways a b c d, with the issue's targets
  big       1 x 1 GiB, sound_bulk against curl: throughput and peak RSS
  import    time of `import sound_bulk` (python -S) measured inside a fresh interpreter
  scaling   N = 5, 60, 1,000, 10,000 runs of 4 KiB: ms per run and peak RSS, ways a c d
  latency   1,000 x 64 KiB with +100 ms on every API request (storage stays near): ways a c d
  workers   sound_bulk alone at --workers 2/4/8/16, for 60 x 1 MiB, 1,000 x 4 KiB and the latency case

Every figure is the median of several runs; within a repeat the ways (or worker counts) are
interleaved, and the order rotates from one repeat to the next.  Before every measured run the
disk is synced; before the large file's runs (every run with --cold) the page cache is emptied too
(as root), so that no way inherits another's cached pages.  Peak RSS is the child's own high-water mark
(VmHWM, sampled from /proc).  Connections are counted by the fake, per origin.  Each table prints
the machine's load average before and after it: the machine may be shared.  Linux only (/proc).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODULE_DIR = ROOT  # the folder whose sound_bulk.py is measured (--module)
WORK = os.path.join(HERE, ".work")
SDK_VERSION = "1.6.6"
KiB = 1024
MiB = 1024 * 1024
RUN_TIMEOUT = 900.0  # seconds one measured command may take before the benchmark gives up
TABLES = ("compare", "big", "import", "scaling", "latency", "workers")
DEFAULT_TABLES = "compare,big,import,scaling,latency"

SDK_SCRIPT = r'''
import os, ssl, sys
import httpx
from camb.client import CambAI

out, ids = sys.argv[1], [int(x) for x in sys.stdin.read().split()]
http = httpx.Client(verify=ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"]), timeout=60)
client = CambAI(api_key=os.environ["CAMB_API_KEY"], base_url=os.environ["CAMB_API_BASE_URL"], httpx_client=http)
urls = {}
for i in range(0, len(ids), 5):
    for run_id, result in client.text_to_audio.get_text_to_sound_results(run_ids=ids[i:i + 5]).items():
        urls[run_id] = result.output_url
for run_id, url in urls.items():
    with http.stream("GET", url) as response:
        response.raise_for_status()
        with open(os.path.join(out, "%s.wav" % run_id), "wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
'''

WAY_NAMES = {
    "a": "(a) python -m sound_bulk fetch",
    "b": "(b) camb-sdk %s + httpx loop" % SDK_VERSION,
    "c": "(c) curl --parallel (URLs given)",
    "d": "(d) curl: bulk calls, then --parallel",
}


# -- set-up ---------------------------------------------------------------------------------------

def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def make_certs():
    """A CA and a 127.0.0.1 certificate it signed (kept between runs)."""
    ca, cert, key = (os.path.join(WORK, n) for n in ("ca.pem", "server.pem", "server.key"))
    if all(os.path.exists(p) for p in (ca, cert, key)):
        return ca, cert, key
    os.makedirs(WORK, exist_ok=True)
    ca_key = os.path.join(WORK, "ca.key")
    # Extensions a strict verifier wants (Python 3.13's default context sets VERIFY_X509_STRICT).
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "365",
        "-subj", "/CN=sound_bulk benchmark CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash"])
    csr = os.path.join(WORK, "server.csr")
    sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    ext = os.path.join(WORK, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                "authorityKeyIdentifier=keyid\n")
    sh(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "365", "-extfile", ext])
    return ca, cert, key


def plain_python():
    """A venv with nothing installed: sound_bulk runs as it would on a locked-down host."""
    venv = os.path.join(WORK, "plain-venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        sh([sys.executable, "-m", "venv", "--without-pip", venv])
    return py


def sdk_python():
    """A venv with camb-sdk, made once; returns its python."""
    venv = os.path.join(WORK, "sdk-venv")
    py = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".camb-sdk-" + SDK_VERSION)
    if not os.path.exists(marker):
        shutil.rmtree(venv, ignore_errors=True)
        sh([sys.executable, "-m", "venv", venv])
        sh([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "camb-sdk==" + SDK_VERSION])
        open(marker, "w").close()
    with open(os.path.join(WORK, "sdk_fetch.py"), "w") as f:
        f.write(SDK_SCRIPT)
    return py


class Fake:
    """tests/fake_api.py in its own process, over TLS."""

    def __init__(self, ids, size, certs, connect_delay, request_delay, api_delay=0.0):
        _, cert, key = certs
        self.log = open(os.path.join(WORK, "fake.log"), "a")  # its own messages, kept out of the tables
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "fake_api.py"), "--runs", "1-%d" % ids, "--size", str(size),
             "--cert", cert, "--key", key, "--connect-delay", str(connect_delay),
             "--request-delay", str(request_delay), "--api-delay", str(api_delay), "--seconds", "7200"],
            stdout=subprocess.PIPE, stderr=self.log, universal_newlines=True)
        line = self.proc.stdout.readline()
        self.env = dict(kv.split("=", 1) for kv in line.split())
        self.admin = self.env.pop("FAKE_ADMIN_URL")

    def reset(self):
        request = urllib.request.Request(self.admin + "/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def stats(self):
        return json.loads(urllib.request.urlopen(self.admin + "/stats", timeout=10).read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def resolve_urls(fake, ca, ids):
    """The presigned URLs of ids, asked for here (untimed, five at a time), independent of the module measured."""
    import ssl
    context = ssl.create_default_context(cafile=ca)
    endpoint = fake.env["CAMB_API_BASE_URL"].rstrip("/") + "/text-to-sound-results"
    urls = {}
    for i in range(0, len(ids), 5):
        request = urllib.request.Request(endpoint, data=json.dumps({"run_ids": ids[i:i + 5]}).encode(), headers={
            "x-api-key": fake.env["CAMB_API_KEY"], "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            for key, entry in json.loads(response.read().decode()).items():
                urls[int(key)] = entry["output_url"]
    return [urls[i] for i in ids]


# -- measuring ------------------------------------------------------------------------------------

def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def settle(drop):
    """Every way starts from the same state: earlier files written back, a moment for the disk to
    finish what it was doing, and with `drop` the page cache emptied where this user may (root)."""
    os.sync()
    if drop:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
        except OSError:
            pass
    time.sleep(0.2)


def run_child(cmd, env, stdin_path=None):
    """Run cmd; (wall seconds, peak RSS in MiB) of that child alone.

    The peak is the child's own VmHWM (a high-water mark, so it only grows), read from /proc every
    2 ms until it exits.  Not ru_maxrss: Linux carries the spawning process's peak into the child's
    ru_maxrss across exec, which would credit this script's own size to every way measured.
    """
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=WORK)
    finally:
        if stdin_path:
            stdin.close()
    status_file = "/proc/%d/status" % proc.pid
    peak_kib = 0
    while proc.poll() is None:
        try:
            with open(status_file) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        if time.perf_counter() - started > RUN_TIMEOUT:
            proc.kill()
            proc.wait()
            raise SystemExit("gave up after %d s: %s" % (RUN_TIMEOUT, " ".join(cmd[:4])))
        time.sleep(0.002)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd[:4]), err[-2000:]))
    return wall, peak_kib / 1024.0


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def curl_download_config(path, ids, urls, out):
    """A curl config file: one url/output pair per run (10,000 URLs do not fit on a command line)."""
    lines = []
    for run_id, url in zip(ids, urls):
        lines += ['url = "%s"' % url, 'output = "%s"' % os.path.join(out, "%d.wav" % run_id)]
    return write_lines(path, lines)


class Job:
    """What the ways share for one data set: the fake, its URLs, the interpreters, the options."""

    def __init__(self, args, fake, ids, size, ca, our_py, sdk_py=None, drop=None):
        self.args, self.fake, self.ids, self.size, self.ca = args, fake, ids, size, ca
        self.drop = args.cold if drop is None else drop
        self.our_py, self.sdk_py = our_py, sdk_py
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        self.env.update(fake.env, SSL_CERT_FILE=ca, PYTHONPATH=MODULE_DIR)
        self.ids_file = write_lines(os.path.join(WORK, "ids.txt"), [str(i) for i in ids])
        self.urls = resolve_urls(fake, ca, ids)

    def run(self, way, out, workers=None):
        """One measured run of `way` into out: (wall s, peak RSS MiB)."""
        if way == "a":
            cmd = [self.our_py, "-m", "sound_bulk", "fetch", "-", "-o", out, "-q"]
            if workers is not None:
                cmd += ["--workers", str(workers)]
            settle(self.drop)
            return run_child(cmd, self.env, self.ids_file)
        if way == "b":
            settle(self.drop)
            return run_child([self.sdk_py, os.path.join(WORK, "sdk_fetch.py"), out], self.env, self.ids_file)
        if way == "c":
            cfg = curl_download_config(out + ".curl", self.ids, self.urls, out)
            settle(self.drop)
            return run_child(self.curl(self.args.curl_parallel) + ["-K", cfg], self.env)
        if way == "d":
            return self.curl_resolving(out)
        raise ValueError(way)

    def curl(self, parallel):
        return ["curl", "--parallel", "--parallel-max", str(parallel), "-s", "--fail", "--cacert", self.ca]

    def curl_resolving(self, out):
        """Way (d): the IDs are given as they are to (a); resolving them is part of the time."""
        answers = out + ".api"
        os.mkdir(answers)
        endpoint = self.fake.env["CAMB_API_BASE_URL"].rstrip("/") + "/text-to-sound-results"
        lines = []
        for n, i in enumerate(range(0, len(self.ids), 5)):
            body = json.dumps({"run_ids": self.ids[i:i + 5]}, separators=(",", ":")).replace('"', '\\"')
            lines += ['url = "%s"' % endpoint, 'cacert = "%s"' % self.ca, "fail",
                      'header = "x-api-key: %s"' % self.fake.env["CAMB_API_KEY"],
                      'header = "Content-Type: application/json"', 'data = "%s"' % body,
                      'output = "%s"' % os.path.join(answers, "%d.json" % n), "next"]
        api_cfg = write_lines(out + ".api.curl", lines[:-1])
        settle(self.drop)
        wall1, rss1 = run_child(self.curl(self.args.curl_api_parallel) + ["-K", api_cfg], self.env)
        started = time.perf_counter()
        urls = {}
        for name in os.listdir(answers):
            with open(os.path.join(answers, name)) as f:
                for key, entry in json.load(f).items():
                    urls[int(key)] = entry["output_url"]
        ids = sorted(urls)
        cfg = curl_download_config(out + ".curl", ids, [urls[i] for i in ids], out)
        between = time.perf_counter() - started
        wall2, rss2 = run_child(self.curl(self.args.curl_parallel) + ["-K", cfg], self.env)
        return wall1 + between + wall2, max(rss1, rss2)


def matrix(job, variants, repeat):
    """Run every (label, way, workers) variant `repeat` times, interleaved, the order rotating.

    Returns {label: (wall s, peak RSS MiB, API connections, storage connections)}, medians."""
    rows = {label: [] for label, _, _ in variants}
    for r in range(repeat):
        turn = variants[r % len(variants):] + variants[:r % len(variants)]
        for label, way, workers in turn:
            out = tempfile.mkdtemp(dir=WORK)
            try:
                job.fake.reset()
                wall, rss = job.run(way, out, workers)
                st = job.fake.stats()
                got = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
                if got != len(job.ids) * job.size:
                    raise SystemExit("%s saved %d bytes, expected %d" % (label, got, len(job.ids) * job.size))
                rows[label].append((wall, rss, st["connections"]["api"], st["connections"]["storage"]))
            finally:
                for leftover in (out, out + ".api"):
                    shutil.rmtree(leftover, ignore_errors=True)
                for leftover in (out + ".curl", out + ".api.curl"):
                    if os.path.exists(leftover):
                        os.remove(leftover)
    return {label: tuple(statistics.median(x[k] for x in runs) for k in range(4)) for label, runs in rows.items()}


def with_fake(args, certs, count, size, api_delay, fn):
    fake = Fake(count, size, certs, args.connect_delay, args.request_delay, api_delay)
    try:
        return fn(fake)
    finally:
        fake.stop()


# -- the tables -----------------------------------------------------------------------------------

class Report:
    """Prints tables; in a tiny run, prints no verdicts (its figures cannot show anything)."""

    def __init__(self, tiny):
        self.tiny = tiny

    def heading(self, title, setting, load_before, load_after):
        print("\n### %s\n" % title)
        print(setting + "\n")
        print("Load average (1, 5, 15 min) before: %s; after: %s\n" % (load_before, load_after))

    def table(self, header, rows):
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()

    def targets(self, rows):
        """rows: (figure, value, target, ok or None)."""
        out = []
        for name, value, target, ok in rows:
            if self.tiny or ok is None:
                out.append((name, value, target))
            else:
                out.append((name, value, target + (" ok" if ok else " MISSED")))
        self.table(("figure", "value", "target"), out)


def setting_line(args, count, size, repeat, api_delay=0.0, workers="default"):
    """The conditions of a table, in one line.  count/size/repeat may be text ("N", "the repeats shown")."""
    count = "{:,}".format(count) if isinstance(count, int) else count
    size = human(size) if isinstance(size, int) else size
    repeat = "%d" % repeat if isinstance(repeat, int) else repeat
    api = " (+%g ms more per API request)" % (api_delay * 1000) if api_delay else ""
    return ("%s run IDs x %s, TLS on 127.0.0.1, +%g ms per connection, +%g ms per request%s; median of %s; "
            "sound_bulk --workers %s, curl --parallel-max %d (bulk calls: %d at a time); Python %s" % (
                count, size, args.connect_delay * 1000, args.request_delay * 1000, api,
                repeat, workers, args.curl_parallel, args.curl_api_parallel, sys.version.split()[0]))


def table_compare(args, ctx, report):
    before = load_average()
    ids = list(range(1, args.count + 1))

    def go(fake):
        job = Job(args, fake, ids, args.size, ctx["ca"], ctx["our_py"], ctx["sdk_py"])
        return matrix(job, [(w, w, args.workers) for w in "abcd"], args.repeat)

    res = with_fake(args, ctx["certs"], args.count, args.size, 0.0, go)
    report.heading("Against the SDK and curl", setting_line(args, args.count, args.size, args.repeat,
                                                            workers=ctx["workers_label"]), before, load_average())
    report.table(("way", "wall s", "peak RSS MiB", "API connections", "storage connections"),
                 [(WAY_NAMES[w], "%.3f" % r[0], "%.1f" % r[1], "%d" % r[2], "%d" % r[3])
                  for w, r in sorted(res.items())])
    a, b, c, d = (res[w] for w in "abcd")
    workers = ctx["workers"]
    report.targets([
        ("wall a/b", "%.2f" % (a[0] / b[0]), "<= 0.33", a[0] / b[0] <= 1 / 3.0),
        ("wall a/c", "%.2f" % (a[0] / c[0]), "<= 1.5 (aim 1.3)", a[0] / c[0] <= 1.5),
        ("wall a/d", "%.2f" % (a[0] / d[0]), "(for comparison)", None),
        ("API connections (a)", "%d" % a[2], "<= workers (%s)" % workers, workers is None or a[2] <= workers),
        ("storage connections (a)", "%d" % a[3], "<= workers (%s)" % workers, workers is None or a[3] <= workers),
        ("peak RSS (a), %d x %s" % (args.count, human(args.size)), "%.1f MiB" % a[1], "< 32 MiB", a[1] < 32),
    ])


def table_big(args, ctx, report):
    before = load_average()

    def go(fake):
        job = Job(args, fake, [1], args.big, ctx["ca"], ctx["our_py"], drop=True)
        return matrix(job, [("a", "a", None), ("c", "c", None)], args.repeat)

    res = with_fake(args, ctx["certs"], 1, args.big, 0.0, go)
    speed = {w: args.big / r[0] / MiB for w, r in res.items()}
    report.heading("One large file", setting_line(args, 1, args.big, args.repeat), before, load_average())
    report.targets([
        ("peak RSS (a), 1 x %s" % human(args.big), "%.1f MiB" % res["a"][1], "< 32 MiB, flat", res["a"][1] < 32),
        ("1 x %s: sound_bulk" % human(args.big), "%.0f MiB/s" % speed["a"], "", None),
        ("1 x %s: curl" % human(args.big), "%.0f MiB/s" % speed["c"], "", None),
        ("throughput sound_bulk/curl", "%.2f" % (speed["a"] / speed["c"]), ">= 0.80", speed["a"] / speed["c"] >= 0.8),
    ])


def import_ms(py, flags, statement, env, n):
    """Median (wall ms, CPU ms) of `statement`, timed inside a fresh interpreter each time (never negative).

    CPU time is what the module itself costs; wall time also holds whatever else the machine was doing."""
    code = ("import time\nt, c = time.perf_counter(), time.process_time()\n%s\n"
            "print(time.perf_counter() - t, time.process_time() - c)" % statement)
    walls, cpus = [], []
    for _ in range(n + 1):  # the first one warms the caches (and writes the .pyc)
        out = subprocess.check_output([py] + flags + ["-c", code], env=env, cwd=WORK, timeout=60)
        wall, cpu = out.decode().split()[-2:]
        walls.append(float(wall) * 1000.0)
        cpus.append(float(cpu) * 1000.0)
    return statistics.median(walls[1:]), statistics.median(cpus[1:])


def table_import(args, ctx, report):
    before = load_average()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["PYTHONPATH"] = MODULE_DIR
    ours = import_ms(ctx["our_py"], ["-S"], "import sound_bulk", env, args.imports)
    sdk = import_ms(ctx["sdk_py"], [], "import camb.client; camb.client.CambAI(api_key='x')", env, args.imports)
    report.heading("Start-up", "Median of %d fresh interpreters each, time measured inside the interpreter; Python %s"
                   % (args.imports, sys.version.split()[0]), before, load_average())
    report.targets([
        ("import sound_bulk (python -S), wall", "%.1f ms" % ours[0], "< 15 ms", ours[0] < 15),
        ("import sound_bulk (python -S), CPU", "%.1f ms" % ours[1], "< 15 ms", ours[1] < 15),
        ("import camb + build CambAI, wall", "%.1f ms" % sdk[0], "(for comparison)", None),
        ("import camb + build CambAI, CPU", "%.1f ms" % sdk[1], "(for comparison)", None),
    ])


def table_scaling(args, ctx, report):
    before = load_average()
    rows, res_by_n = [], {}
    for n in args.scale:
        repeat = args.repeat_large if n >= 10000 else args.repeat

        def go(fake, n=n, repeat=repeat):
            job = Job(args, fake, list(range(1, n + 1)), args.scale_size, ctx["ca"], ctx["our_py"])
            return matrix(job, [(w, w, args.workers) for w in "acd"], repeat)

        res = with_fake(args, ctx["certs"], n, args.scale_size, 0.0, go)
        res_by_n[n] = res
        row = ["{:,}".format(n), "%d" % repeat]
        for w in "acd":
            row += ["%.2f" % (res[w][0] * 1000.0 / n), "%.1f" % res[w][1]]
        rows.append(row)
    report.heading("Scaling with the number of runs", setting_line(
        args, "N", args.scale_size, "the repeats shown", workers=ctx["workers_label"]), before, load_average())
    report.table(("N", "repeats", "(a) sound_bulk ms/run", "(a) peak RSS MiB", "(c) curl, URLs given ms/run",
                  "(c) peak RSS MiB", "(d) curl, resolving ms/run", "(d) peak RSS MiB"), rows)
    figures = []
    small = [n for n in args.scale if n >= 1000]
    if len(small) >= 2:
        lo, hi = small[0], small[-1]
        per = {n: res_by_n[n]["a"][0] / n for n in (lo, hi)}
        figures.append(("(a) ms per run at %s / at %s" % ("{:,}".format(hi), "{:,}".format(lo)),
                        "%.2f" % (per[hi] / per[lo]), "<= 1.25", per[hi] / per[lo] <= 1.25))
    top = max(args.scale)
    figures.append(("(a) peak RSS at %s runs" % "{:,}".format(top), "%.1f MiB" % res_by_n[top]["a"][1], "< 32 MiB",
                    res_by_n[top]["a"][1] < 32))
    report.targets(figures)


def table_latency(args, ctx, report):
    before = load_average()
    ids = list(range(1, args.latency_count + 1))

    def go(fake):
        job = Job(args, fake, ids, args.latency_size, ctx["ca"], ctx["our_py"])
        return matrix(job, [(w, w, args.workers) for w in "acd"], args.repeat)

    res = with_fake(args, ctx["certs"], args.latency_count, args.latency_size, args.api_delay, go)
    report.heading("A far-away API", setting_line(args, args.latency_count, args.latency_size, args.repeat,
                                                  args.api_delay, ctx["workers_label"]), before, load_average())
    report.table(("way", "wall s", "peak RSS MiB", "API connections", "storage connections"),
                 [(WAY_NAMES[w], "%.3f" % r[0], "%.1f" % r[1], "%d" % r[2], "%d" % r[3])
                  for w, r in sorted(res.items())])
    a = res["a"]
    target = 4.0 * args.latency_count / 1000.0
    report.targets([("wall (a), %s x %s at +%g ms per API request" % (
        "{:,}".format(args.latency_count), human(args.latency_size), args.api_delay * 1000), "%.2f s" % a[0],
        "< %g s (4 s per 1,000 runs)" % target, a[0] < target)])


def table_workers(args, ctx, report):
    """sound_bulk alone at several worker counts, for the cases that decide the default."""
    cases = [(args.count, args.size, 0.0, args.repeat), (args.latency_count, args.scale_size, 0.0, args.repeat),
             (args.latency_count, args.latency_size, args.api_delay, args.repeat_latency)]
    before = load_average()
    rows = []
    for count, size, api_delay, repeat in cases:
        def go(fake, count=count, size=size, repeat=repeat):
            job = Job(args, fake, list(range(1, count + 1)), size, ctx["ca"], ctx["our_py"])
            return matrix(job, [("%d" % w, "a", w) for w in args.worker_counts], repeat)

        res = with_fake(args, ctx["certs"], count, size, api_delay, go)
        case = "%s x %s%s" % ("{:,}".format(count), human(size),
                              ", API +%g ms" % (api_delay * 1000) if api_delay else "")
        for w in args.worker_counts:
            r = res["%d" % w]
            rows.append((case, "%d" % w, "%d" % repeat, "%.3f" % r[0], "%.2f" % (r[0] * 1000.0 / count),
                         "%.1f" % r[1], "%d" % r[2], "%d" % r[3]))
    report.heading("sound_bulk at several worker counts", setting_line(
        args, "the case's", "its size", "the repeats shown", workers="as shown"), before, load_average())
    report.table(("case", "--workers", "repeats", "wall s", "ms/run", "peak RSS MiB", "API connections",
                  "storage connections"), rows)


def human(n):
    return "%d GiB" % (n // (1024 * MiB)) if n >= 1024 * MiB and n % (1024 * MiB) == 0 else (
        "%d MiB" % (n // MiB) if n >= MiB and n % MiB == 0 else "%d KiB" % (n // KiB))


def int_list(text):
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def table_list(text):
    names = [x for x in text.split(",") if x]
    unknown = [x for x in names if x not in TABLES]
    if unknown:
        raise argparse.ArgumentTypeError("unknown table %s (choose from %s)" % (", ".join(unknown), ", ".join(TABLES)))
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tables", type=table_list, default=DEFAULT_TABLES,
                   help="tables to print, in order (%s)" % ", ".join(TABLES))
    p.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is shown")
    p.add_argument("--repeat-large", type=int, default=3,
                   help="runs per figure for scaling rows of 10,000 runs or more")
    p.add_argument("--repeat-latency", type=int, default=3,
                   help="runs per figure for the latency case of the workers table")
    p.add_argument("--count", type=int, default=60, help="run IDs in the compare table")
    p.add_argument("--size", type=int, default=MiB, help="bytes per WAV in the compare table")
    p.add_argument("--big", type=int, default=1024 * MiB, help="bytes of the single large file")
    p.add_argument("--scale", type=int_list, default="5,60,1000,10000", help="run counts of the scaling table")
    p.add_argument("--scale-size", type=int, default=4 * KiB, help="bytes per WAV in the scaling table")
    p.add_argument("--latency-count", type=int, default=1000, help="run IDs in the latency table")
    p.add_argument("--latency-size", type=int, default=64 * KiB, help="bytes per WAV in the latency table")
    p.add_argument("--api-delay", type=float, default=0.100, help="seconds added to every API request (latency table)")
    p.add_argument("--workers", type=int, default=None, help="sound_bulk --workers (default: its own default)")
    p.add_argument("--worker-counts", type=int_list, default="2,4,8,16", help="--workers values of the workers table")
    p.add_argument("--curl-parallel", type=int, default=50, help="curl --parallel-max for downloads")
    p.add_argument("--curl-api-parallel", type=int, default=8, help="curl --parallel-max for bulk calls in way (d)")
    p.add_argument("--connect-delay", type=float, default=0.020, help="seconds per new connection")
    p.add_argument("--request-delay", type=float, default=0.005, help="seconds per request (API and storage)")
    p.add_argument("--module", metavar="PATH", help="the sound_bulk.py to measure (default: this checkout's), "
                   "e.g. another branch's: git show engine:sound_bulk.py > /tmp/engine/sound_bulk.py")
    p.add_argument("--cold", action="store_true",
                   help="empty the page cache before every run, not only before the large file's (root only)")
    p.add_argument("--imports", type=int, default=30, help="start-ups timed per import figure")
    p.add_argument("--tiny", action="store_true",
                   help="a few seconds' run for CI: every chosen table at toy sizes; prints no verdicts")
    args = p.parse_args(argv)
    if args.tiny:
        args.count, args.size, args.big, args.repeat, args.imports = 6, 64 * KiB, 8 * MiB, 1, 3
        args.repeat_large = args.repeat_latency = 1
        args.scale, args.latency_count, args.latency_size, args.api_delay = [5, 20], 10, 16 * KiB, 0.02
        args.worker_counts = [2, 4]
    return args


def main(argv=None):
    global MODULE_DIR
    args = parse_args(argv)
    if args.module:
        MODULE_DIR = os.path.dirname(os.path.abspath(args.module))
        if os.path.basename(args.module) != "sound_bulk.py" or not os.path.isfile(args.module):
            raise SystemExit("--module: expected a path to a file named sound_bulk.py, got %r" % args.module)
    sys.path.insert(0, MODULE_DIR)
    import sound_bulk
    default_workers = getattr(sound_bulk, "DEFAULT_WORKERS", None)
    if hasattr(sound_bulk, "_transfer_threads"):  # the default that depends on the CPU count
        default_workers = sound_bulk._transfer_threads(None)
    workers = args.workers if args.workers is not None else default_workers
    workers_label = "%s" % args.workers if args.workers is not None else "default (%s)" % (
        default_workers if isinstance(default_workers, int) else "machine-dependent")
    certs = make_certs()
    ctx = {"certs": certs, "ca": certs[0], "our_py": plain_python(),
           "sdk_py": sdk_python() if "compare" in args.tables or "import" in args.tables else None,
           "workers": workers if isinstance(workers, int) else None, "workers_label": workers_label}
    subprocess.check_call([ctx["our_py"], "-m", "py_compile", os.path.join(MODULE_DIR, "sound_bulk.py")])
    report = Report(args.tiny)
    if args.tiny:
        print("tiny run: figures not meaningful (toy sizes, one repeat; this only proves the script works)")
    print("\n`python benchmarks/run.py %s` on %d CPUs; load average at the start: %s" % (
        " ".join(sys.argv[1:] if argv is None else argv), os.cpu_count() or 0, load_average()))
    if args.module:
        print("Measuring %s (not this checkout's sound_bulk.py)" % os.path.abspath(args.module))
    for name in args.tables:
        globals()["table_" + name](args, ctx, report)
    if args.tiny:
        print("tiny run: figures not meaningful")
    return 0


if __name__ == "__main__":
    sys.exit(main())
