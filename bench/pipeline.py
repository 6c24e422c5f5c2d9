#!/usr/bin/env python3
"""How close a Replicate run comes to the provider's bound: N flux assets against
tests/servers/fake_replicate.py with a set latency and create limit, once with the rate
configured in the manifest and once with none (Kiln learns it from 429s). Prints each wall
time beside the bound max((N - burst) / rate + latency, ceil(N / jobs) x latency), their
ratio, the creates and the 429s.

    bench/pipeline.py --kiln build/bin/kiln --image-tool build/bin/kiln-test-image
                      [--assets 60] [--latency 1] [--rate 8] [--burst 4] [--jobs 16]

Standard library only. Not a test: it prints figures to compare, it asserts nothing."""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "..", "tests", "servers", "fake_replicate.py")
TOKEN = "kiln-bench-token-NOT-REAL"


def call(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def run(args, configured):
    server = subprocess.Popen([sys.executable, FAKE, "--token", TOKEN, "--image-tool",
                               os.path.abspath(args.image_tool)], stdout=subprocess.PIPE, text=True)
    tmp = tempfile.mkdtemp(prefix="kiln-bench-pipeline-")
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        call(url + "/_control", {"latency_s": args.latency,
                                 "create_limit": {"rate": args.rate, "burst": args.burst}})
        pacing = (f"requests_per_second = {args.rate}\nburst = {args.burst}\n"
                  if configured else "")
        text = f"""[defaults]
backend = "replicate"
model = "black-forest-labs/flux-schnell"
width = 64
height = 64
[backends.replicate]
base_url = "{url}/v1"
{pacing}
[types.icon]
"""
        for i in range(args.assets):
            text += f'[[asset]]\nname = "icons/{i}"\ntype = "icon"\nprompt = "icon {i}"\n'
        with open(os.path.join(tmp, "assets.toml"), "w") as f:
            f.write(text)
        env = dict(os.environ, REPLICATE_API_TOKEN=TOKEN,
                   KILN_CACHE_DIR=os.path.join(tmp, "cache"))
        start = time.perf_counter()
        r = subprocess.run([os.path.abspath(args.kiln), "build", "-j", str(args.jobs), "-q"], cwd=tmp, env=env,
                           capture_output=True, text=True)
        wall = time.perf_counter() - start
        stats = call(url + "/_stats")
        requests = stats["create_requests"]
        refused = [c["time"] for c in requests if c["status"] == 429]
        # Adapted: from one second after the first refusal (the first burst is how the rate is
        # learned when none is configured).
        settled = [c for c in requests if refused and c["time"] > refused[0] + 1.0]
        late = sum(c["status"] == 429 for c in settled)
        return (wall, r.returncode, len(stats["creates"]), len(requests), len(refused),
                late, len(settled), r.stderr)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiln", default="build/bin/kiln")
    parser.add_argument("--image-tool", default="build/bin/kiln-test-image")
    parser.add_argument("--assets", type=int, default=60)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--burst", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=16)
    args = parser.parse_args()
    n = args.assets
    bound = max((n - args.burst) / args.rate + args.latency, math.ceil(n / args.jobs) * args.latency)
    print(f"N={n} latency={args.latency}s limit={args.rate}/s burst={args.burst} -j {args.jobs}: "
          f"bound {bound:.2f} s")
    for configured in (True, False):
        wall, rc, creates, requests, refused, late, settled, stderr = run(args, configured)
        label = "rate configured" if configured else "rate learned  "
        print(f"  {label}: {wall:6.2f} s, ratio {wall / bound:.2f}; exit {rc}; "
              f"{creates} predictions for {n} assets; {refused} of {requests} create requests "
              f"got 429 ({late} of {settled} once adapted)")
        if rc != 0:
            print(stderr[-2000:])


if __name__ == "__main__":
    main()
