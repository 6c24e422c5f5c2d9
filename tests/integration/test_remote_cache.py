"""A team never pays twice (issue 19), end to end: two "machines" (two clones of a project, each
with its own cache and state) and a shared remote cache on real servers started by each test on
127.0.0.1: nginx with its WebDAV module (Debian's nginx-light; the configuration is written
here), and an S3-compatible store (s3rver from npm, behind tests/servers/sigv4_gate.py, which
checks every request's AWS Signature Version 4). The paid images come from the fake Replicate
server, which counts its creates.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE, KILN_FAKE_REPLICATE and KILN_S3RVER set; standard
library only. Without nginx (or s3rver) on the machine the tests that need it fail, saying so:
tools/install-deps installs both."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from test_cli import KILN
from test_replicate import FLUX, TOKEN, FakeReplicate

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
S3RVER = os.environ.get("KILN_S3RVER", "")
GATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "servers", "sigv4_gate.py")
NAMES = [f"icons/item{i:02d}" for i in range(12)]
S3_KEY, S3_SECRET = "S3RVER", "S3RVER"  # s3rver's built-in account


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on {port}")


class Nginx:
    """nginx serving a WebDAV folder at /kiln/ (PUT, and GET/HEAD of what was put)."""

    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "data")
        os.makedirs(os.path.join(self.data, "kiln"), exist_ok=True)
        self.port = free_port()
        self.access_log = os.path.join(root, "access.log")
        self.conf = os.path.join(root, "nginx.conf")
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(self.conf, "w") as f:
            f.write(f"""{user}worker_processes 1;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log {self.access_log};
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  client_max_body_size 64m;
  server {{
    listen 127.0.0.1:{self.port};
    location /kiln/ {{
      root {self.data};
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw;
    }}
  }}
}}
""")
        self.proc = None
        self.start()
        self.url = f"http://127.0.0.1:{self.port}/kiln"

    def start(self):
        if not os.path.exists(NGINX):
            raise RuntimeError("nginx is not installed (tools/install-deps installs nginx-light)")
        self.proc = subprocess.Popen([NGINX, "-c", self.conf, "-p", self.root, "-g", "daemon off;"],
                                     stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self.proc, "nginx")
        except Exception:
            self.proc.kill()
            raise

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def requests(self):
        """(method, path, status) of every request so far, from the access log."""
        if not os.path.exists(self.access_log):
            return []
        out = []
        with open(self.access_log) as f:
            for line in f:
                request = line.split('"')[1].split()
                status = int(line.split('"')[2].split()[0])
                out.append((request[0], request[1], status))
        return out

    def file(self, path):
        return os.path.join(self.data, "kiln", path)


class S3:
    """s3rver (npm) on one port, the SigV4 gate in front of it on another: kiln talks to the
    gate, which refuses any request whose signature does not verify."""

    def __init__(self, root):
        if not S3RVER or not os.path.exists(S3RVER):
            raise RuntimeError("s3rver is not installed (tools/install-deps installs it with npm)")
        self.store = os.path.join(root, "s3")
        os.makedirs(os.path.join(self.store, "team-art"), exist_ok=True)  # the bucket
        self.s3_port = free_port()
        self.proc = subprocess.Popen(
            ["node", S3RVER, "--address", "127.0.0.1", "--port", str(self.s3_port),
             "--directory", self.store, "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.s3_port, self.proc, "s3rver")
        except Exception:
            self.proc.kill()
            raise
        self.log = os.path.join(root, "gate.log")
        self.gate = subprocess.Popen(
            [sys.executable, GATE, "--upstream", f"http://127.0.0.1:{self.s3_port}",
             "--key", S3_KEY, "--secret", S3_SECRET, "--region", "eu-west-1", "--log", self.log],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.gate.stdout.readline())
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self):
        for p in (self.gate, self.proc):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
        self.gate.stdout.close()

    def requests(self):
        """(method, path, verdict) of every request the gate saw."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [tuple(line.split()) for line in f if line.strip()]


def manifest(server, names, extra=""):
    text = f"""[project]
output_dir = "out"

{extra}

[defaults]
backend = "replicate"
model = "{FLUX}"

[backends.replicate]
base_url = "{server.url}/v1"

[types.icon]
width = 64
height = 64
format = "png"
validators = ["resolution", "format", "not-corrupt"]
"""
    for name in names:
        text += f'\n[[asset]]\nname = "{name}"\ntype = "icon"\nprompt = "{name}, a game icon"\n'
    return text


class Machine:
    """One clone of the project: its own folder, cache and state."""

    def __init__(self, root, name, env):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.env = dict(env)
        self.env["KILN_CACHE_DIR"] = os.path.join(self.dir, ".cache")
        self.env["KILN_STATE_DIR"] = os.path.join(self.dir, ".state")

    def write(self, text):
        with open(os.path.join(self.dir, "assets.toml"), "w") as f:
            f.write(text)

    def kiln(self, *args, env=None):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run([KILN, *args], cwd=self.dir, env=e, capture_output=True, text=True,
                              timeout=300)

    def build(self, *args, env=None):
        report = os.path.join(self.dir, "report.json")
        if os.path.exists(report):
            os.remove(report)
        r = self.kiln("build", "--report", report, *args, env=env)
        data = None
        if os.path.exists(report):
            with open(report) as f:
                data = json.load(f)
        return r, data

    def output(self, name):
        with open(os.path.join(self.dir, "out", name + ".png"), "rb") as f:
            return f.read()

    def stats(self):
        r = self.kiln("cache", "stats", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


class RemoteCase(unittest.TestCase):
    def setUp(self):
        # Cleanups, not tearDown: they run even when a subclass's setUp fails after this one
        # started its servers, so nothing is left running.
        self.tmp = tempfile.mkdtemp(prefix="kiln-remote-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.server = FakeReplicate()
        self.addCleanup(self.server.stop)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KILN_REMOTE", "AWS_")) and k != "KILN_PLUGIN_PATH"}
        env["REPLICATE_API_TOKEN"] = TOKEN
        self.env = env
        self.a = Machine(self.tmp, "a", env)
        self.b = Machine(self.tmp, "b", env)

    def creates(self):
        return len(self.server.stats()["creates"])

    def assert_same_outputs(self, names=NAMES):
        for name in names:
            self.assertEqual(self.a.output(name), self.b.output(name), name)


class NginxRemoteTest(RemoteCase):
    def setUp(self):
        super().setUp()
        self.nginx = Nginx(os.path.join(self.tmp, "nginx"))
        self.addCleanup(self.nginx.stop)
        self.text = manifest(self.server, NAMES, f'[cache]\nremote = "{self.nginx.url}"\n')
        self.a.write(self.text)
        self.b.write(self.text)

    def puts(self):
        return [r for r in self.nginx.requests() if r[0] == "PUT"]

    # Must show 1 (and 7): A pays for 12; B, a second clone with an empty cache, pays nothing.
    def test_a_second_machine_gets_every_image_from_the_remote(self):
        r, report = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), 12)
        self.assertEqual(report["summary"]["remote_uploads"], 12)
        # Each image: a HEAD, a PUT of the CAS entry, then the AC record.
        log = self.nginx.requests()
        for name in NAMES[:1]:
            fp = [x for x in report["assets"] if x["name"] == name][0]["fingerprint"]
            cas = [i for i, x in enumerate(log) if x[0] == "PUT" and x[1].startswith("/kiln/cas/")]
            ac = [i for i, x in enumerate(log) if x[0] == "PUT" and x[1] == f"/kiln/ac/{fp}"]
            self.assertTrue(ac and cas and min(cas) < ac[0])
        self.assertTrue(any(x[0] == "HEAD" and x[2] == 404 for x in log))

        r = self.b.kiln("plan")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("12 in the remote cache", r.stdout)
        self.assertIn("predicted cost $0", r.stdout)
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), 12)  # none by B
        self.assertIn("12 from the remote cache", r.stdout)
        self.assertEqual(report["summary"]["remote"], 12)
        self.assertTrue(all(x["origin"] == "remote" for x in report["assets"]))
        self.assert_same_outputs()
        # kiln.lock of B names the same bytes as A's.
        with open(os.path.join(self.a.dir, "kiln.lock")) as fa, \
                open(os.path.join(self.b.dir, "kiln.lock")) as fb:
            self.assertEqual(fa.read(), fb.read())
        stats = self.b.stats()
        self.assertEqual(stats["remote_hits"], 12)
        self.assertEqual(stats["remote_errors"], 0)
        self.assertGreater(stats["saved_usd"], 0)
        self.assertEqual(self.a.stats()["remote_uploads"], 12)
        # A second build on B: nothing to do, nothing asked of the remote.
        before = len(self.nginx.requests())
        r, _ = self.b.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.nginx.requests()), before)

    # Must show 2: a read-only B makes a changed asset itself, and PUTs nothing.
    def test_a_read_only_machine_uploads_nothing(self):
        r, _ = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        puts = len(self.puts())
        self.b.write(self.text.replace('remote = "', 'remote_read_only = true\nremote = "')
                     .replace("icons/item03, a game icon", "icons/item03, a golden icon"))
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), 13)
        self.assertEqual(report["summary"]["remote"], 11)
        self.assertEqual(len(self.puts()), puts)
        # The environment says so too, for a manifest that does not.
        self.b.write(self.text.replace("icons/item04, a game icon", "icons/item04, a silver icon"))
        r, _ = self.b.build(env={"KILN_REMOTE_CACHE_READ_ONLY": "1"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.puts()), puts)

    # Must show 3: the remote stops in the middle of A's run; the build completes locally,
    # counts the errors, and the next build (remote back) uploads what is missing.
    def test_a_remote_that_dies_mid_run_costs_only_the_sharing(self):
        self.server.control(latency_s=0.6)
        proc = subprocess.Popen([KILN, "build", "-j", "2", "--report", "report.json"],
                                cwd=self.a.dir, env=self.a.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while len(self.puts()) < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        self.nginx.stop()
        out, err = proc.communicate(timeout=300)
        self.assertEqual(proc.returncode, 0, err)
        with open(os.path.join(self.a.dir, "report.json")) as f:
            summary = json.load(f)["summary"]
        self.assertEqual(summary["generated"], 12)
        self.assertGreater(summary["remote_errors"], 0)
        self.assertLess(summary["remote_uploads"], 12)
        self.assertIn("remote cache:", out)
        uploaded = summary["remote_uploads"]

        self.nginx.start()
        self.server.control(latency_s=0.05)
        r, report = self.a.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote_uploads"], 12 - uploaded)
        self.assertEqual(report["summary"]["generated"], 0)
        # B now finds all twelve there.
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote"], 12)
        self.assertEqual(self.creates(), 12)
        stats = self.a.stats()
        self.assertEqual(stats["remote_uploads"], 12)
        self.assertEqual(stats["remote_errors"], summary["remote_errors"])

    # Must show 4: a CAS entry corrupted on the server is caught, counted, not installed; the
    # asset is made again (one create).
    def test_a_corrupt_entry_on_the_server_is_never_installed(self):
        r, report = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        victim = [x for x in report["assets"] if x["name"] == "icons/item05"][0]
        with open(self.nginx.file("ac/" + victim["fingerprint"])) as f:
            sha = json.load(f)["sha256"]
        path = self.nginx.file("cas/" + sha)
        with open(path, "r+b") as f:
            f.seek(200)
            f.write(b"\x00" * 16)
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote"], 11)
        self.assertEqual(report["summary"]["remote_corrupt"], 1)
        self.assertEqual(self.creates(), 13)
        item = [x for x in report["assets"] if x["name"] == "icons/item05"][0]
        self.assertEqual(item["origin"], "generated")
        self.assertEqual(self.b.stats()["remote_corrupt"], 1)

    # A later upload for the same request (a --force, a race) does not take the team's image
    # from the clones whose kiln.lock names it: the bytes kiln.lock names are fetched by their
    # digest, and a record pointing at an image the remote holds is not replaced.
    def test_the_image_kiln_lock_names_wins_over_a_later_record(self):
        r, report = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        by_name = {x["name"]: x for x in report["assets"]}
        ac = self.nginx.file("ac/" + by_name["icons/item05"]["fingerprint"])
        with open(self.nginx.file("ac/" + by_name["icons/item06"]["fingerprint"])) as f:
            other = f.read()
        with open(ac, "w") as f:  # the record now points at another 64x64 png the remote holds
            f.write(other)
        shutil.copy(os.path.join(self.a.dir, "kiln.lock"), os.path.join(self.b.dir, "kiln.lock"))
        r, report = self.b.build("--locked", "-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote"], 12)
        self.assert_same_outputs()
        # A machine that makes an asset again (--force, a new image) does not replace its record.
        ac06 = self.nginx.file("ac/" + by_name["icons/item06"]["fingerprint"])
        creates = self.creates()
        r, _ = self.b.build("--force", "--only", "icons/item06")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), creates + 1)
        self.assertNotEqual(self.b.output("icons/item06"), self.a.output("icons/item06"))
        with open(ac06) as f:
            self.assertEqual(f.read(), other)

    # A corrupt entry whose image comes out the same again (a seeded, deterministic request) is
    # uploaded again, whatever a HEAD says: the next machine pays nothing.
    def test_a_corrupt_entry_is_repaired_by_the_machine_that_made_it_again(self):
        text = self.text.replace('prompt = "icons/item00, a game icon"',
                                 'prompt = "icons/item00, a game icon"\nseed = 7')
        self.a.write(text)
        self.b.write(text)
        r, report = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        fp = [x for x in report["assets"] if x["name"] == "icons/item00"][0]["fingerprint"]
        with open(self.nginx.file("ac/" + fp)) as f:
            sha = json.load(f)["sha256"]
        with open(self.nginx.file("cas/" + sha), "r+b") as f:
            f.seek(200)
            f.write(b"\x00" * 16)
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), 13)
        self.assertEqual(self.b.output("icons/item00"), self.a.output("icons/item00"))
        self.assertIn(("PUT", f"/kiln/cas/{sha}", 204), self.nginx.requests())
        c = Machine(self.tmp, "c", self.env)
        c.write(text)
        r, report = c.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote"], 12)
        self.assertEqual(self.creates(), 13)

    # A password in the address is a secret: in no message, no file, even when every request
    # fails and is reported.
    def test_a_password_in_the_address_is_never_shown(self):
        self.nginx.stop()
        secret = "s3cret-PW-9f2c"
        address = self.nginx.url.replace("http://", f"http://alice:{secret}@")
        r, report = self.a.build("-v", env={"KILN_REMOTE_CACHE": address})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(report["summary"]["remote_errors"], 0)
        self.assertIn("remote cache http://127.0.0.1", r.stderr)
        self.assertNotIn(secret, r.stdout + r.stderr)
        for folder, _, files in os.walk(self.a.dir):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    self.assertNotIn(secret.encode(), f.read(), os.path.join(folder, name))

    # Must show 6: --locked on a fresh clone with the remote warm pays nothing; an edited,
    # unlocked prompt is exit 6, named with its predicted cost, and still nothing is created.
    def test_locked_builds_never_pay(self):
        r, _ = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        shutil.copy(os.path.join(self.a.dir, "kiln.lock"), os.path.join(self.b.dir, "kiln.lock"))
        r, report = self.b.build("--locked", "-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), 12)
        self.assertEqual(report["summary"]["remote"], 12)

        c = Machine(self.tmp, "c", self.env)
        c.write(self.text.replace("icons/item07, a game icon", "icons/item07, a ruby icon"))
        shutil.copy(os.path.join(self.a.dir, "kiln.lock"), os.path.join(c.dir, "kiln.lock"))
        r, _ = c.build("--locked")
        self.assertEqual(r.returncode, 6, r.stderr)
        self.assertIn("icons/item07 ($0.003", r.stderr)
        self.assertIn("would need generating", r.stderr)
        self.assertEqual(self.creates(), 12)
        self.assertFalse(os.path.exists(os.path.join(c.dir, "out", "icons", "item00.png")))

        # The remote's image turns out bad during the run: under --locked the asset fails
        # (exit 6), it is not bought.
        d = Machine(self.tmp, "d", self.env)
        d.write(self.text)
        shutil.copy(os.path.join(self.a.dir, "kiln.lock"), os.path.join(d.dir, "kiln.lock"))
        fp = [x for x in report["assets"] if x["name"] == "icons/item02"][0]["fingerprint"]
        with open(self.nginx.file("ac/" + fp)) as f:
            sha = json.load(f)["sha256"]
        with open(self.nginx.file("cas/" + sha), "r+b") as f:
            f.seek(200)
            f.write(b"\x00" * 16)
        r, report = d.build("--locked")
        self.assertEqual(r.returncode, 6, r.stderr)
        self.assertIn("icons/item02", r.stderr)
        self.assertEqual(report["summary"]["remote"], 11)
        self.assertEqual(self.creates(), 12)

    # Must show 7: gc keeps what kiln.lock names; --include-locked may take it too.
    def test_gc_keeps_the_locked_art(self):
        r, _ = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        size = self.a.stats()["bytes"]
        # A model image of each asset is in the cache too (for postprocessing changes): gc may
        # take those, never the outputs kiln.lock names.
        r = self.a.kiln("cache", "gc", "--max-size", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("12 kept: kiln.lock names them", r.stdout)
        after = self.a.stats()
        self.assertEqual(after["entries"], 12)
        self.assertLess(after["bytes"], size)
        shutil.rmtree(os.path.join(self.a.dir, "out"))
        r, report = self.a.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["cached"], 12)
        self.assertEqual(self.creates(), 12)
        # A size too large for 64 bits is no limit, not zero.
        r = self.a.kiln("cache", "gc", "--max-size", "1e30")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.a.stats()["entries"], 12)
        # Without a kiln.lock to keep, gc refuses rather than take a project's art.
        elsewhere = Machine(self.tmp, "elsewhere", self.a.env)
        r = elsewhere.kiln("cache", "gc", "--max-size", "1")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("no kiln.lock at", r.stderr)
        self.assertEqual(self.a.stats()["entries"], 12)
        r = self.a.kiln("cache", "gc", "--max-size", "1", "--include-locked")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.a.stats()["entries"], 0)


class S3RemoteTest(RemoteCase):
    def setUp(self):
        super().setUp()
        self.s3 = S3(os.path.join(self.tmp, "s3root"))
        self.addCleanup(self.s3.stop)
        self.text = manifest(self.server, NAMES, '[cache]\nremote = "s3://team-art/kiln"\n')
        self.a.write(self.text)
        self.b.write(self.text)
        aws = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": self.s3.endpoint}
        self.a.env.update(aws)
        self.b.env.update(aws)

    # Must show 5 (as 1): every request signed and verified; B pays nothing.
    def test_a_second_machine_gets_every_image_from_s3(self):
        r, report = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote_uploads"], 12)
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.creates(), 12)
        self.assertEqual(report["summary"]["remote"], 12)
        self.assert_same_outputs()
        seen = self.s3.requests()
        self.assertTrue(seen)
        self.assertTrue(all(v == "verified" for _, _, v in seen), seen)
        self.assertTrue(any(m == "PUT" and p.startswith("/team-art/kiln/cas/") for m, p, _ in seen))

    # A bucket that does not exist: S3 answers the PUTs 404 (NoSuchBucket): errors, said and
    # counted, not uploads; and no no-op shortcut past them.
    def test_a_missing_bucket_is_an_error_not_a_silent_miss(self):
        text = self.text.replace("s3://team-art/kiln", "s3://no-such-bucket/kiln")
        self.a.write(text)
        r, report = self.a.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote_uploads"], 0)
        self.assertGreater(report["summary"]["remote_errors"], 0)
        self.assertIn("remote cache:", r.stdout)
        r, _ = self.a.build()  # the uploads are tried again: no shortcut past them
        self.assertIn("remote cache:", r.stdout)

    # A wrong secret: the gate refuses every request; the build still completes locally.
    def test_a_wrong_signature_is_refused_and_the_build_goes_on(self):
        r, report = self.a.build(env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["generated"], 12)
        self.assertGreater(report["summary"]["remote_errors"], 0)
        self.assertTrue(all(v == "refused" for _, _, v in self.s3.requests()))
        self.assertNotIn("not-the-secret", r.stdout + r.stderr)

    # Must show 5 (as 4): a corrupted object is caught and the asset made again.
    def test_a_corrupt_object_is_never_installed(self):
        r, report = self.a.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        corrupted = 0
        for folder, _, files in os.walk(os.path.join(self.s3.store, "team-art")):
            for name in files:
                path = os.path.join(folder, name)
                if "/cas/" in path and not name.startswith(".") and corrupted == 0 \
                        and os.path.getsize(path) > 300 and "metadata" not in name:
                    with open(path, "r+b") as f:
                        f.seek(200)
                        f.write(b"\x00" * 16)
                    corrupted += 1
        self.assertEqual(corrupted, 1)
        r, report = self.b.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["remote_corrupt"], 1)
        self.assertEqual(report["summary"]["remote"], 11)
        self.assertEqual(self.creates(), 13)


if __name__ == "__main__":
    unittest.main()
