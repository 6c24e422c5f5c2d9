"""examples/custom-validator as a studio would write its own check: built against an installed
Kiln with find_package(Kiln) + kiln_add_plugin(), loaded by the installed kiln through
KILN_PLUGIN_PATH or [plugins] paths, listed by `kiln plugins`, and rejecting what it should.

Run by ctest with KILN_BUILD_DIR set (the build tree to install); needs cmake, ninja and g++."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from test_install import install_kiln



class CustomValidatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-validator-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        install_kiln(cls.prefix)
        cls.kiln_exe = os.path.join(cls.prefix, "bin", "kiln")
        # Only the installed package: a copy of the example it ships (share/kiln/examples, as
        # the README's walkthrough copies it), built in its own tree.
        cls.src = os.path.join(cls.tmp, "max-colours")
        shutil.copytree(os.path.join(cls.prefix, "share", "kiln", "examples", "custom-validator"),
                        cls.src)
        cls.build = os.path.join(cls.src, "build")
        for cmd in (["cmake", "-S", cls.src, "-B", cls.build, "-G", "Ninja",
                     "-DCMAKE_PREFIX_PATH=" + cls.prefix],
                    ["cmake", "--build", cls.build]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        cls.plugins = os.path.join(cls.build, "plugins")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.project = tempfile.mkdtemp(prefix="game-", dir=self.tmp)
        shutil.copy(os.path.join(self.src, "assets.toml"), self.project)
        self.env = {k: v for k, v in os.environ.items() if k != "REPLICATE_API_TOKEN"}
        self.env["KILN_PLUGIN_PATH"] = self.plugins
        self.env["KILN_CACHE_DIR"] = os.path.join(self.project, "cache")
        self.env["KILN_STATE_DIR"] = os.path.join(self.project, "state")

    def kiln(self, *args, env=None):
        return subprocess.run([self.kiln_exe, *args], cwd=self.project, env=env or self.env,
                              capture_output=True, text=True, timeout=120)

    def set_max(self, text):
        path = os.path.join(self.project, "assets.toml")
        with open(path) as f:
            manifest = f.read()
        with open(path, "w") as f:
            f.write(re.sub(r"max_colours = \d+", text, manifest))

    def report(self):
        with open(os.path.join(self.project, "report.json")) as f:
            return json.load(f)

    def test_the_plugin_is_built_and_listed(self):
        self.assertTrue(os.path.isfile(os.path.join(self.plugins, "kiln-max-colours.so")))
        r = self.kiln("plugins")
        self.assertEqual(r.returncode, 0, r.stderr)
        line = [l for l in r.stdout.splitlines() if "max-colours" in l]
        self.assertEqual(len(line), 1, r.stdout)
        self.assertRegex(line[0], r"^validator\s+max-colours\s+1\.0\.0\s+1\.1\s+.*kiln-max-colours\.so$")
        verbose = self.kiln("plugins", "-v").stdout
        self.assertIn("most distinct colours an image may use", verbose)

    def test_it_accepts_and_rejects_what_it_should(self):
        r = self.kiln("build", "--report", "report.json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.report()["summary"]["generated"], 2)
        coin = os.path.join(self.project, "generated", "icons", "coin.png")
        made = os.stat(coin).st_mtime_ns

        # A changed validator checks the outputs again, for free: they still pass, nothing is
        # made again.
        self.set_max("max_colours = 5000")
        r = self.kiln("build", "--report", "report.json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.report()["summary"]["up_to_date"], 2)
        self.assertEqual({a["reason"] for a in self.report()["assets"]},
                         {"up to date; passes the changed validators"})
        self.assertEqual(os.stat(coin).st_mtime_ns, made)

        # The placeholder's icons use hundreds of colours: 16 is too few.
        self.set_max("max_colours = 16")
        r = self.kiln("build", "--report", "report.json")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("validator 'max-colours' rejected the image: icons/coin uses more than 16 "
                      "colours", r.stderr)
        for asset in self.report()["assets"]:
            self.assertEqual((asset["status"], asset["error_category"]), ("failed", "validation"))
            self.assertEqual({t["source"] for t in asset["attempts"]}, {"max-colours"})
        self.assertIn("the output no longer passes", r.stderr)
        # What the earlier run made is still there, untouched.
        self.assertEqual(os.stat(coin).st_mtime_ns, made)

    def test_found_through_plugins_paths_too(self):
        env = dict(self.env)
        del env["KILN_PLUGIN_PATH"]
        with open(os.path.join(self.project, "assets.toml")) as f:
            manifest = f.read()
        with open(os.path.join(self.project, "assets.toml"), "w") as f:
            f.write(manifest.replace("[project]", f'[plugins]\npaths = ["{self.plugins}"]\n\n'
                                                  "[project]", 1))
        r = self.kiln("build", env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # Without the path, the manifest names an unknown validator: exit 2, at its line.
        with open(os.path.join(self.project, "assets.toml"), "w") as f:
            f.write(manifest)
        r = self.kiln("build", env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown validator 'max-colours'", r.stderr)

    def test_a_bad_option_is_refused_at_its_line(self):
        self.set_max("max_colours = 0")
        r = self.kiln("build")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"assets\.toml:\d+:\d+: .*validator 'max-colours' could not "
                                   r"start: max_colours must be at least 1")


if __name__ == "__main__":
    unittest.main()
