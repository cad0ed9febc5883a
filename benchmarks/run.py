"""Benchmark: sound_bulk against the official SDK (+ an httpx download loop) and curl --parallel.

    python benchmarks/run.py            # the full run (defaults below); prints a Markdown table
    python benchmarks/run.py --tiny     # seconds, for CI: proves the script works, asserts nothing

It sets up what it needs in benchmarks/.work/ (a CA and a server certificate made with openssl; a
throwaway venv with camb-sdk==1.6.6), starts the project's fake API (tests/fake_api.py) over TLS on
127.0.0.1 in its own process, with a delay on every new connection (a handshake round trip) and on
every request, and does the same work three ways:

  (a) python -m sound_bulk fetch ID... -o DIR     (from a venv with nothing installed, like the SDK's)
  (b) the SDK: get_text_to_sound_results in chunks of 5, then an httpx streaming GET per URL, in turn
  (c) curl --parallel over the same URLs (resolved beforehand, untimed): the floor

Each figure is the median of --repeat runs, the three ways interleaved.  Peak RSS is the child's
own high-water mark (VmHWM, sampled from /proc).  Connections are counted by the fake, per origin.
Linux only (it reads /proc).
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
WORK = os.path.join(HERE, ".work")
SDK_VERSION = "1.6.6"
MiB = 1024 * 1024

SDK_SCRIPT = r'''
import os, ssl, sys
import httpx
from camb.client import CambAI

out, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
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

    def __init__(self, ids, size, certs, connect_delay, request_delay):
        _, cert, key = certs
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "fake_api.py"), "--runs", "1-%d" % ids, "--size", str(size),
             "--cert", cert, "--key", key, "--connect-delay", str(connect_delay),
             "--request-delay", str(request_delay), "--seconds", "3600"],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.env = dict(kv.split("=", 1) for kv in line.split())
        self.admin = self.env.pop("FAKE_ADMIN_URL")

    def reset(self):
        urllib.request.urlopen(urllib.request.Request(self.admin + "/reset", data=b"", method="POST"), timeout=10).read()

    def stats(self):
        return json.loads(urllib.request.urlopen(self.admin + "/stats", timeout=10).read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def settle():
    """Every way starts from the same state: earlier files written back, the page cache emptied
    where this user may (root), a moment for the disk to finish what it was doing."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        pass
    time.sleep(0.2)


def measure(cmd, env):
    """Run cmd; (wall seconds, peak RSS in MiB) of that child alone.

    The peak is the child's own VmHWM (a high-water mark, so it only grows), read from /proc every
    2 ms until it exits.  Not ru_maxrss: Linux carries the spawning process's peak into the child's
    ru_maxrss across exec, which would credit this script's own size to every way measured.
    """
    settle()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        time.sleep(0.002)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd[:4]), err[-2000:]))
    return wall, peak_kib / 1024.0


def clean_env(fake, ca):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env.update(fake.env, SSL_CERT_FILE=ca, PYTHONPATH=ROOT)
    return env


def resolve_urls(fake, ca, ids):
    sys.path.insert(0, ROOT)
    import ssl
    import sound_bulk
    client = sound_bulk.Client(fake.env["CAMB_API_KEY"], base_url=fake.env["CAMB_API_BASE_URL"],
                               ssl_context=ssl.create_default_context(cafile=ca))
    results = client.get_results(ids)
    client.close()
    return [results[i].url for i in ids]


def three_ways(args, certs, sdk_py, our_py):
    ca = certs[0]
    ids = list(range(1, args.count + 1))
    fake = Fake(args.count, args.size, certs, args.connect_delay, args.request_delay)
    env = clean_env(fake, ca)
    urls = resolve_urls(fake, ca, ids)
    rows = {"a": [], "b": [], "c": []}
    try:
        for _ in range(args.repeat):
            for way in ("a", "b", "c"):
                out = tempfile.mkdtemp(dir=WORK)
                if way == "a":
                    cmd = [our_py, "-m", "sound_bulk", "fetch"] + [str(i) for i in ids] + [
                        "-o", out, "-q", "--workers", str(args.workers)]
                elif way == "b":
                    cmd = [sdk_py, os.path.join(WORK, "sdk_fetch.py"), out] + [str(i) for i in ids]
                else:
                    cmd = ["curl", "--parallel", "--parallel-max", str(args.curl_parallel), "-s", "--fail",
                           "--cacert", ca]
                    for i, url in zip(ids, urls):
                        cmd += ["-o", os.path.join(out, "%d.wav" % i), url]
                fake.reset()
                wall, rss = measure(cmd, env)
                st = fake.stats()
                got = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
                if got != args.count * args.size:
                    raise SystemExit("way %s saved %d bytes, expected %d" % (way, got, args.count * args.size))
                rows[way].append((wall, rss, st["connections"]["api"], st["connections"]["storage"]))
                shutil.rmtree(out)
    finally:
        fake.stop()
    return {way: tuple(statistics.median(r[k] for r in runs) for k in range(4)) for way, runs in rows.items()}


def big_file(args, certs, our_py):
    """One large file: sound_bulk against curl, throughput and peak RSS."""
    ca = certs[0]
    fake = Fake(1, args.big, certs, args.connect_delay, args.request_delay)
    env = clean_env(fake, ca)
    url = resolve_urls(fake, ca, [1])[0]
    walls = {"a": [], "c": []}
    rss = []
    try:
        for _ in range(args.repeat):
            for way in ("a", "c"):
                out = tempfile.mkdtemp(dir=WORK)
                if way == "a":
                    cmd = [our_py, "-m", "sound_bulk", "fetch", "1", "-o", out, "-q"]
                else:
                    cmd = ["curl", "-s", "--fail", "--cacert", ca, "-o", os.path.join(out, "1.wav"), url]
                wall, peak = measure(cmd, env)
                walls[way].append(wall)
                if way == "a":
                    rss.append(peak)
                shutil.rmtree(out)
    finally:
        fake.stop()
    return {w: args.big / statistics.median(v) / MiB for w, v in walls.items()}, statistics.median(rss)


def import_cost(cmd_import, cmd_bare, env, n):
    def med(cmd):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    med(cmd_import)  # warm the caches (and write the .pyc)
    return (med(cmd_import) - med(cmd_bare)) * 1000.0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=60, help="run IDs (default 60)")
    p.add_argument("--size", type=int, default=MiB, help="bytes per WAV (default 1 MiB)")
    p.add_argument("--big", type=int, default=1024 * MiB, help="bytes of the single large file (default 1 GiB)")
    p.add_argument("--workers", type=int, default=None, help="sound_bulk --workers (default: its own default)")
    p.add_argument("--curl-parallel", type=int, default=50, help="curl --parallel-max (default 50)")
    p.add_argument("--connect-delay", type=float, default=0.020, help="seconds per new connection (default 0.020)")
    p.add_argument("--request-delay", type=float, default=0.005, help="seconds per request (default 0.005)")
    p.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is shown (default 5)")
    p.add_argument("--imports", type=int, default=30, help="start-ups timed per import figure (default 30)")
    p.add_argument("--tiny", action="store_true", help="a few seconds' run for CI: 6 IDs of 64 KiB, 8 MiB big file")
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    import sound_bulk
    if args.workers is None:
        args.workers = sound_bulk.DEFAULT_WORKERS
    if args.tiny:
        args.count, args.size, args.big, args.repeat, args.imports = 6, 64 * 1024, 8 * MiB, 1, 3

    certs = make_certs()
    sdk_py = sdk_python()
    our_py = plain_python()
    subprocess.run([our_py, "-m", "py_compile", os.path.join(ROOT, "sound_bulk.py")], check=True)
    res = three_ways(args, certs, sdk_py, our_py)
    big, big_rss = big_file(args, certs, our_py)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
    env["PYTHONPATH"] = ROOT
    imp_ours = import_cost([our_py, "-S", "-c", "import sound_bulk"], [our_py, "-S", "-c", "pass"], env, args.imports)
    imp_sdk = import_cost([sdk_py, "-c", "import camb.client; camb.client.CambAI(api_key='x')"], [sdk_py, "-c", "pass"],
                          env, args.imports)

    a, b, c = res["a"], res["b"], res["c"]
    print("\n%d run IDs x %s, TLS on 127.0.0.1, +%g ms per connection, +%g ms per request; median of %d; "
          "sound_bulk --workers %d, curl --parallel-max %d; Python %s\n" % (
              args.count, human(args.size), args.connect_delay * 1000, args.request_delay * 1000, args.repeat,
              args.workers, args.curl_parallel, sys.version.split()[0]))
    print("| way | wall s | peak RSS MiB | API connections | storage connections |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in (("(a) python -m sound_bulk fetch", a), ("(b) camb-sdk %s + httpx loop" % SDK_VERSION, b),
                    ("(c) curl --parallel (URLs given)", c)):
        print("| %s | %.3f | %.1f | %d | %d |" % (name, r[0], r[1], r[2], r[3]))
    print()
    print("| figure | value | target |")
    print("| --- | ---: | --- |")
    rows = [
        ("wall a/b", "%.2f" % (a[0] / b[0]), "<= 0.33", a[0] / b[0] <= 1 / 3.0),
        ("wall a/c", "%.2f" % (a[0] / c[0]), "<= 1.5", a[0] / c[0] <= 1.5),
        ("API connections (a)", "%d" % a[2], "<= workers (%d)" % args.workers, a[2] <= args.workers),
        ("storage connections (a)", "%d" % a[3], "<= workers (%d)" % args.workers, a[3] <= args.workers),
        ("peak RSS (a), %d x %s" % (args.count, human(args.size)), "%.1f MiB" % a[1], "< 32 MiB", a[1] < 32),
        ("peak RSS (a), 1 x %s" % human(args.big), "%.1f MiB" % big_rss, "< 32 MiB, flat", big_rss < 32),
        ("import sound_bulk (python -S)", "%.1f ms" % imp_ours, "< 15 ms", imp_ours < 15),
        ("import camb + build CambAI", "%.1f ms" % imp_sdk, "(for comparison)", None),
        ("1 x %s: sound_bulk" % human(args.big), "%.0f MiB/s" % big["a"], "", None),
        ("1 x %s: curl" % human(args.big), "%.0f MiB/s" % big["c"], "", None),
        ("throughput sound_bulk/curl", "%.2f" % (big["a"] / big["c"]), ">= 0.80", big["a"] / big["c"] >= 0.8),
    ]
    for name, value, target, ok in rows:
        mark = "" if ok is None else (" ok" if ok else " MISSED")
        print("| %s | %s | %s%s |" % (name, value, target, mark))
    if args.tiny:
        print("\n(tiny run: the figures prove the script works, not the speed)")
    return 0


def human(n):
    return "%d GiB" % (n // (1024 * MiB)) if n >= 1024 * MiB and n % (1024 * MiB) == 0 else (
        "%d MiB" % (n // MiB) if n >= MiB and n % MiB == 0 else "%d KiB" % (n // 1024))


if __name__ == "__main__":
    sys.exit(main())
