"""examples/game as a game studio would use Kiln: installed to a prefix, found with
find_package(Kiln), assets baked by kiln_add_assets() inside an ordinary CMake + Ninja build with a
downstream rule per asset. Asserts that Ninja regenerates only what changed and re-runs only the
rules downstream of changed asset files.

Run by ctest with KILN_BUILD_DIR set (the build tree to install); needs cmake and ninja."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from test_install import install_kiln

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "game")
ASSETS = ["icons/sword.png", "icons/shield.png", "textures/grass.png"]


class GameExampleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-game-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        install_kiln(cls.prefix)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.src = tempfile.mkdtemp(prefix="src-", dir=self.tmp)
        shutil.copytree(EXAMPLE, self.src, dirs_exist_ok=True)
        self.build = os.path.join(self.src, "build")
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("KILN_PLUGIN_PATH", "REPLICATE_API_TOKEN")}
        self.env["KILN_CACHE_DIR"] = os.path.join(self.src, "cache")
        self.env["KILN_STATE_DIR"] = os.path.join(self.src, "state")
        r = subprocess.run(["cmake", "-S", self.src, "-B", self.build, "-G", "Ninja",
                            "-DCMAKE_PREFIX_PATH=" + self.prefix],
                           capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def ninja(self):
        r = subprocess.run(["ninja", "-C", self.build], capture_output=True, text=True,
                           env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout + r.stderr

    def report(self):
        with open(os.path.join(self.build, "kiln-report.json")) as f:
            return json.load(f)

    def packed(self):
        """Downstream steps that ran since the last call, as asset paths."""
        log = os.path.join(self.build, "packed.log")
        if not os.path.exists(log):
            return []
        with open(log) as f:
            lines = [os.path.relpath(line.strip(), os.path.join(self.build, "game_data"))
                     for line in f if line.strip()]
        os.remove(log)
        return sorted(lines)

    def mtimes(self):
        return {a: os.stat(os.path.join(self.build, "art", a)).st_mtime_ns for a in ASSETS}

    def edit_manifest(self, old, new):
        path = os.path.join(self.src, "assets.toml")
        with open(path) as f:
            text = f.read()
        self.assertIn(old, text)
        with open(path, "w") as f:
            f.write(text.replace(old, new))

    def test_builds_then_regenerates_only_what_changed(self):
        self.ninja()
        self.assertEqual(self.report()["summary"]["generated"], 3)
        self.assertEqual(self.packed(), sorted(ASSETS))
        for asset in ASSETS:
            self.assertTrue(os.path.exists(os.path.join(self.build, "game_data", asset)))

        # Edit one prompt: one generation, the other files untouched, one downstream step.
        before = self.mtimes()
        self.edit_manifest('prompt = "a steel sword"', 'prompt = "a golden sword"')
        self.ninja()
        summary = self.report()["summary"]
        self.assertEqual((summary["generated"], summary["up_to_date"]), (1, 2))
        after = self.mtimes()
        self.assertNotEqual(after["icons/sword.png"], before["icons/sword.png"])
        self.assertEqual(after["icons/shield.png"], before["icons/shield.png"])
        self.assertEqual(after["textures/grass.png"], before["textures/grass.png"])
        self.assertEqual(self.packed(), ["icons/sword.png"])
        self.assertIn("no work to do", self.ninja())

        # A comment-only edit: kiln runs (the manifest changed) but generates nothing, touches
        # no asset file, so no downstream step re-runs.
        before = self.mtimes()
        self.edit_manifest('prompt = "meadow grass"', 'prompt = "meadow grass"  # lush, please')
        self.ninja()
        self.assertEqual(self.report()["summary"]["generated"], 0)
        self.assertEqual(self.mtimes(), before)
        self.assertEqual(self.packed(), [])
        self.assertIn("no work to do", self.ninja())

    def test_adding_an_asset_reconfigures_and_builds_only_it(self):
        self.ninja()
        self.packed()
        with open(os.path.join(self.src, "assets.toml"), "a") as f:
            f.write('\n[[asset]]\nname = "icons/potion"\ntype = "icon"\nprompt = "a red potion"\n')
        out = self.ninja()
        self.assertIn("Re-running CMake", out)
        self.assertEqual(self.report()["summary"]["generated"], 1)
        self.assertEqual(self.packed(), ["icons/potion.png"])
        self.assertIn("no work to do", self.ninja())

    def test_a_failed_generation_fails_the_build_and_runs_again(self):
        strict = "\n[validators.not-blank]\nmin_stddev = 250.0\n"
        with open(os.path.join(self.src, "assets.toml"), "a") as f:
            f.write(strict)
        for _ in range(2):  # the stamp stays old, so Ninja runs kiln again
            r = subprocess.run(["ninja", "-C", self.build], capture_output=True, text=True,
                               env=self.env)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("validator 'not-blank' rejected the image", r.stdout + r.stderr)
            self.assertEqual(self.report()["summary"]["failed"], 2)
        self.edit_manifest(strict, "")
        self.ninja()
        summary = self.report()["summary"]
        self.assertEqual((summary["failed"], summary["generated"]), (0, 2))
        self.assertIn("no work to do", self.ninja())

    def install(self, name):
        prefix = os.path.join(self.src, name)
        r = subprocess.run(["cmake", "--install", self.build, "--prefix", prefix],
                           capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        art = os.path.join(prefix, "share", "kiln-example-game", "art")
        return sorted(os.path.relpath(os.path.join(d, f), art)
                      for d, _, files in os.walk(prefix) for f in files)

    # Must show 6: `cmake --install` ships only declared art; removing an asset removes its
    # output; an edited output of a removed asset is kept and named.
    def test_install_ships_only_declared_art(self):
        self.ninja()
        self.assertEqual(self.install("p1"), sorted(ASSETS))
        # Kiln's own record is in the build tree, kiln.lock beside the manifest.
        self.assertTrue(os.path.exists(os.path.join(self.build, "game_art.kiln-state",
                                                    "state.jsonl")))
        self.assertTrue(os.path.exists(os.path.join(self.src, "kiln.lock")))
        # The grass is retouched by an artist; then the shield and the grass are dropped.
        grass = os.path.join(self.build, "art", "textures", "grass.png")
        subprocess.run([os.environ["KILN_TEST_IMAGE"], "png", "128", "128", "5", grass],
                       check=True)
        with open(grass, "rb") as f:
            edit = f.read()
        self.ninja()  # Kiln does not run (nothing it depends on changed); the edit is packed
        with open(os.path.join(self.src, "assets.toml")) as f:
            text = f.read()
        text = text.split('[[asset]]\nname = "icons/shield"')[0].rstrip() + "\n"
        with open(os.path.join(self.src, "assets.toml"), "w") as f:
            f.write(text)
        out = self.ninja()
        self.assertIn("textures/grass is no longer declared, but this one was edited by hand",
                      out)
        self.assertFalse(os.path.exists(os.path.join(self.build, "art", "icons", "shield.png")))
        self.assertEqual(self.install("p2"), ["icons/sword.png", "textures/grass.png"])
        with open(grass, "rb") as f:
            self.assertEqual(f.read(), edit)
        with open(os.path.join(self.src, "kiln.lock")) as f:
            self.assertEqual(f.read().count("[assets."), 1)


if __name__ == "__main__":
    unittest.main()
