#!/usr/bin/env python3
"""The cost of doing nothing: a no-op `kiln build` of N up-to-date assets beside a no-op `ninja`
on a generated build of N edges (one file copied per asset), measured in the same run on the
same disk. Kiln runs inside the game's Ninja build, so its no-op should cost at most half of
Ninja's own (the bound printed below).

    bench/noop.py --kiln build/bin/kiln [--assets 10000] [--runs 7]

Standard library only; needs ninja on PATH. Prints medians and the ratio; exits 1 when the
ratio is over the bound."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BOUND = 0.5


def median_seconds(command, cwd, env, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        r = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if r.returncode != 0:
            sys.exit(f"{' '.join(command)} failed: {r.stdout}{r.stderr}")
    return statistics.median(times), r.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiln", default="build/bin/kiln")
    parser.add_argument("--assets", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    kiln = os.path.abspath(args.kiln)
    root = tempfile.mkdtemp(prefix="kiln-bench-")
    env = dict(os.environ, KILN_CACHE_DIR=os.path.join(root, "cache"))
    env.pop("KILN_PLUGIN_PATH", None)
    try:
        # A manifest shaped like a real one: types with style, enhancer and validators.
        game = os.path.join(root, "game")
        os.makedirs(game)
        lines = ['[project]\noutput_dir = "art"\n\n[defaults]\nbackend = "placeholder"\n'
                 'model = "black-forest-labs/flux-schnell"\n\n'
                 '[types.icon]\nwidth = 16\nheight = 16\nformat = "png"\n'
                 'style = "flat vector game icon, bold outline"\nnegative = "text, watermark"\n'
                 'enhancers = ["style"]\n'
                 'validators = ["resolution", "format", "not-blank", "not-corrupt"]\n']
        for i in range(args.assets):
            lines.append(f'\n[[asset]]\nname = "icons/set{i // 100}/item{i}"\ntype = "icon"\n'
                         f'prompt = "inventory item number {i}, a magic trinket"\n')
        with open(os.path.join(game, "assets.toml"), "w") as f:
            f.write("".join(lines))
        start = time.perf_counter()
        r = subprocess.run([kiln, "build", "-q"], cwd=game, env=env, capture_output=True,
                           text=True)
        if r.returncode != 0:
            sys.exit("the first kiln build failed: " + r.stderr)
        first = time.perf_counter() - start

        # Ninja: the same number of outputs, each made from its own input by a copy.
        nin = os.path.join(root, "ninja")
        os.makedirs(os.path.join(nin, "src"))
        edges = ["rule cp\n  command = cp $in $out\n\n"]
        for i in range(args.assets):
            with open(os.path.join(nin, "src", f"{i}.png"), "w") as f:
                f.write(str(i))
            edges.append(f"build out/set{i // 100}/item{i}.png: cp src/{i}.png\n")
        with open(os.path.join(nin, "build.ninja"), "w") as f:
            f.write("".join(edges))
        subprocess.run(["ninja", "-j", "8"], cwd=nin, check=True, capture_output=True)

        kiln_s, out = median_seconds([kiln, "build"], game, env, args.runs)
        if "no work to do" not in out:
            sys.exit("kiln's second build was not a no-op: " + out)
        ninja_s, out = median_seconds(["ninja"], nin, env, args.runs)
        if "no work to do" not in out:
            sys.exit("ninja's second build was not a no-op: " + out)
        ratio = kiln_s / ninja_s
        print(f"assets:                    {args.assets}")
        print(f"first kiln build:          {first:.2f} s (placeholder, 16x16)")
        print(f"no-op kiln build (median): {kiln_s * 1000:.1f} ms")
        print(f"no-op ninja (median):      {ninja_s * 1000:.1f} ms")
        print(f"ratio kiln/ninja:          {ratio:.2f} (bound {BOUND})")
        return 0 if ratio <= BOUND else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
