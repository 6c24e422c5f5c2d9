"""Never pay twice, never lose art (issue 15), end to end: the built kiln against the fake
Replicate server, counting its creates, at the edges real use hits first: a poisoned or
unwritable cache, two build trees on one cache, outputs that are no image.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE and KILN_FAKE_REPLICATE set; standard library only."""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import pixels
from test_cli import KILN, by_name, image_size
from test_replicate import FLUX, TOKEN, FakeReplicate, FakeReplicateCase


def paid_manifest(server, names, extra=""):
    text = f"""[project]
output_dir = "out"
{extra}

[defaults]
backend = "replicate"
model = "{FLUX}"
retry = ["backoff", "adjust-parameters"]

[backends.replicate]
base_url = "{server.url}/v1"

[strategies.backoff]
base_delay_ms = 50

[types.icon]
width = 64
height = 64
format = "png"
validators = ["resolution", "format", "not-corrupt"]
"""
    for name in names:
        text += f'\n[[asset]]\nname = "{name}"\ntype = "icon"\nprompt = "{name}, a game icon"\n'
    return text


class MoneyAtTheEdgesTest(FakeReplicateCase):
    def write(self, text):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(text)

    def creates(self):
        return len(self.server.stats()["creates"])

    def test_an_output_that_is_no_image_is_downloaded_again_then_fails_unsupported(self):
        self.write(paid_manifest(self.server, ["icons/gif", "icons/page", "icons/fine"]))
        self.server.control(prompt_rules=[{"contains": "icons/gif", "fate": "gif", "times": 9},
                                          {"contains": "icons/page", "fate": "html", "times": 9}])
        r, report = self.build()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(self.creates(), 3)  # one each: a new prediction would not do better
        assets = by_name(report)
        self.assertEqual(assets["icons/fine"]["status"], "generated")
        for name, what in (("icons/gif", "a GIF"), ("icons/page", "an HTML page")):
            a = assets[name]
            self.assertEqual((a["status"], a["error_category"]), ("failed", "permanent"), name)
            self.assertIn("unsupported image", a["error"])
            self.assertIn(what, a["error"])
            self.assertEqual([t["strategy"] for t in a["attempts"]], ["initial", "download-again"])
            self.assertAlmostEqual(a["cost_usd"], 0.003)  # paid once, counted once

    def test_a_cache_that_cannot_be_written_keeps_the_paid_image(self):
        self.write(paid_manifest(self.server, ["icons/a", "icons/b"]))
        blocker = os.path.join(self.tmp, "not-a-folder")
        with open(blocker, "w") as f:
            f.write("a file where the cache folder should be")
        env = dict(self.env, KILN_CACHE_DIR=os.path.join(blocker, "cache"))
        r, report = self.build(env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cannot keep the image in the cache", r.stderr)
        self.assertEqual(report["summary"]["generated"], 2)
        for name in ("icons/a", "icons/b"):
            self.assertEqual(image_size(os.path.join(self.tmp, "out", name + ".png"), "png"),
                             (64, 64))
        r2 = self.kiln("build", env=env)
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(self.creates(), 2)  # the second run pays nothing

    def test_two_build_trees_on_one_cache_pay_once(self):
        names = [f"icons/i{i:02}" for i in range(12)]
        self.write(paid_manifest(self.server, names))
        self.server.control(latency_s=0.3)
        runs = []
        for tree in ("debug", "release"):
            report = os.path.join(self.tmp, tree + ".json")
            runs.append((report, subprocess.Popen(
                [KILN, "build", "--output-dir", os.path.join(self.tmp, tree), "--report", report,
                 "-j", "4"], cwd=self.tmp, env=self.env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)))
        for report, proc in runs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err)
            with open(report) as f:
                summary = json.load(f)["summary"]
            self.assertEqual(summary["generated"] + summary["cached"], 12, summary)
        self.assertEqual(self.creates(), 12)
        for tree in ("debug", "release"):
            for name in names:
                path = os.path.join(self.tmp, tree, name + ".png")
                self.assertEqual(image_size(path, "png"), (64, 64))


class PoisonedCacheTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-record-")
        self.env = {k: v for k, v in os.environ.items() if k != "KILN_PLUGIN_PATH"}
        self.env["KILN_CACHE_DIR"] = os.path.join(self.tmp, "cache")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def kiln(self, *args):
        return subprocess.run([KILN, *args], cwd=self.tmp, env=self.env, capture_output=True,
                              text=True, timeout=120)

    # Must show 4: a poisoned cache entry (a valid PNG, wrong bytes) is caught, not installed,
    # made again, and counted.
    def test_a_poisoned_cache_entry_is_caught_and_made_again(self):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write('[project]\noutput_dir = "out"\n\n[types.t]\nwidth = 32\nheight = 32\n'
                    '\n[[asset]]\nname = "gem"\ntype = "t"\nprompt = "a gem"\n')
        self.assertEqual(self.kiln("build").returncode, 0)
        output = os.path.join(self.tmp, "out", "gem.png")
        with open(output, "rb") as f:
            good = f.read()
        contents = glob.glob(os.path.join(self.tmp, "cache", "cas", "*", "*"))
        self.assertEqual(len(contents), 1)
        # Another valid PNG in its place, 999x7, as a poisoned shared cache would hold.
        subprocess.run([os.environ["KILN_TEST_IMAGE"], "png", "999", "7", "3", contents[0]],
                       check=True)
        os.remove(output)
        report = os.path.join(self.tmp, "report.json")
        r = self.kiln("build", "--report", report)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("bad cache entry", r.stdout + r.stderr)
        with open(report) as f:
            data = json.load(f)
        self.assertEqual(data["summary"]["cache_rejected"], 1)
        self.assertEqual(data["assets"][0]["status"], "generated")
        with open(output, "rb") as f:
            self.assertEqual(f.read(), good)  # the placeholder draws the same bytes again


if __name__ == "__main__":
    unittest.main()
