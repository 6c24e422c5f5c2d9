#!/usr/bin/env python3
"""Does Kiln's memory grow with the number of assets? Builds N = 100 and N = 10,000 fresh
assets with the offline placeholder backend (same types, sizes, validators and -j for both) and
prints each run's peak RSS (getrusage of the child) and their ratio against the 1.2 bound. With
--replicate, also N = 100 against tests/servers/fake_replicate.py, for comparison.

    bench/memory.py --kiln build/bin/kiln [--size 256] [--jobs 8] [--large 10000]
                    [--replicate --image-tool build/bin/kiln-test-image]

Standard library only. Not a test: it prints figures to compare, it asserts nothing."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "..", "tests", "servers", "fake_replicate.py")
TOKEN = "kiln-bench-token-NOT-REAL"


def manifest(n, size, backend_table=""):
    text = f"""[defaults]
backend = "placeholder"
width = {size}
height = {size}
{backend_table}
[types.icon]
format = "png"
style = "flat vector game icon"
enhancers = ["style"]
validators = ["resolution", "format", "not-blank", "not-corrupt"]
"""
    parts = [text]
    for i in range(n):
        parts.append(f'[[asset]]\nname = "icons/icon{i:05d}"\ntype = "icon"\n'
                     f'prompt = "a small game icon number {i}, a red gem on a gold ring"\n')
    return "".join(parts)


def peak_rss_kib(cmd, cwd, env):
    """Runs cmd; returns (exit code, wall s, peak RSS KiB of that child alone)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            os.execve(cmd[0], cmd, env)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss


def run(kiln, n, args, backend_table="", extra_env=None):
    tmp = tempfile.mkdtemp(prefix="kiln-bench-memory-")
    try:
        with open(os.path.join(tmp, "assets.toml"), "w") as f:
            f.write(manifest(n, args.size, backend_table))
        env = dict(os.environ, KILN_CACHE_DIR=os.path.join(tmp, "cache"), **(extra_env or {}))
        cmd = [kiln, "build", "-q", "-j", str(args.jobs)]
        if extra_env:
            cmd += ["--backend", "replicate"]
        return peak_rss_kib(cmd, tmp, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiln", default="build/bin/kiln")
    parser.add_argument("--size", type=int, default=256, help="asset width and height")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--replicate", action="store_true")
    parser.add_argument("--image-tool", default="build/bin/kiln-test-image")
    args = parser.parse_args()
    kiln = os.path.abspath(args.kiln)
    print(f"placeholder, {args.size}x{args.size} png, -j {args.jobs}")
    results = {}
    for n in (args.small, args.large):
        rc, wall, rss = run(kiln, n, args)
        results[n] = rss
        print(f"  N={n:>6}: peak RSS {rss / 1024:7.1f} MiB, {wall:6.1f} s, exit {rc}")
    ratio = results[args.large] / results[args.small]
    print(f"  ratio {ratio:.2f} (bound 1.20): {'within' if ratio <= 1.2 else 'OVER'}")
    if args.replicate:
        server = subprocess.Popen([sys.executable, FAKE, "--token", TOKEN, "--image-tool",
                                   os.path.abspath(args.image_tool)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            url = f"http://127.0.0.1:{int(server.stdout.readline())}"
            table = f'[backends.replicate]\nbase_url = "{url}/v1"\n'
            rc, wall, rss = run(kiln, args.small, args, table,
                                {"REPLICATE_API_TOKEN": TOKEN})
            print(f"  fake Replicate N={args.small}: peak RSS {rss / 1024:.1f} MiB, "
                  f"{wall:.1f} s, exit {rc}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
