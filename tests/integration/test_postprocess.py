"""Game-ready by construction (issue 14) end to end: the built kiln against the fake Replicate
server, which paints what text-to-image models paint (opaque images; a subject on a noisy
near-white backdrop only when the prompt asks for a plain one; textures whose edges do not meet),
the README's paid path on the shipped assets.toml, retries that cannot change a verdict not
bought, postprocessor changes in the fingerprint, and plugins built against the ABI 1.0 SDK.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE, KILN_FAKE_REPLICATE, KILN_SDK_1_0_PLUGINS and
KILN_SOURCE_DIR set; standard library only."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import pixels
from test_cli import KILN, by_name
from test_replicate import FLUX, SDXL, TOKEN, FakeReplicateCase

SOURCE = os.environ.get("KILN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SDK_1_0_PLUGINS = os.environ.get("KILN_SDK_1_0_PLUGINS", "")


def shipped_manifest(server_url):
    """The example's assets.toml as shipped, pointed at the fake server (the only change)."""
    with open(os.path.join(SOURCE, "assets.toml")) as f:
        text = f.read()
    return text + f'\n[backends.replicate]\nbase_url = "{server_url}/v1"\n'


def assert_game_ready_icon(test, path):
    width, height, rows = pixels.read_png(path)
    test.assertGreaterEqual(pixels.border_clear_share(width, height, rows, max_alpha=0), 0.95,
                            "%s: the border is not transparent" % path)
    share, inside = pixels.subject_opaque_share(width, height, rows)
    test.assertGreater(inside, width * height // 50, "%s: no subject" % path)
    test.assertGreaterEqual(share, 0.99, "%s: the subject is not opaque" % path)
    test.assertLessEqual(pixels.halo(width, height, rows), 12.0, "%s: a light halo" % path)


class PaidPathTest(FakeReplicateCase):
    def write(self, text):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(text)

    # Must show 1: the README's paid path on the shipped assets.toml, against a server that
    # paints what flux paints: every asset made on its first prediction, for what was predicted.
    def test_the_readme_paid_path_makes_every_shipped_asset_game_ready_first_time(self):
        self.write(shipped_manifest(self.server.url))
        plan = self.kiln("plan", "--backend", "replicate", "--json")
        self.assertEqual(plan.returncode, 0, plan.stderr)
        planned = json.loads(plan.stdout)
        names = [a["name"] for a in planned["assets"]]
        for a in planned["assets"]:
            if a["name"].startswith("icons/"):
                self.assertIn("plain white background", a["prompt"])

        r, report = self.build("--backend", "replicate")
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), len(names), "a retry was bought")
        self.assertEqual(len(stats["create_requests"]), len(names))
        self.assertEqual(report["summary"]["generated"], len(names))
        self.assertAlmostEqual(report["summary"]["cost_usd"],
                               planned["summary"]["predicted_cost_usd"])
        self.assertAlmostEqual(report["summary"]["cost_usd"], 0.003 * len(names))
        kinds = {"icons": 0, "textures": 0, "sprites": 0}
        for a in report["assets"]:
            self.assertEqual((a["status"], len(a["attempts"])), ("generated", 1), a["name"])
            kind = a["name"].split("/")[0]
            path = a["output"]
            if kind in ("icons", "sprites"):
                assert_game_ready_icon(self, path)
            if kind == "textures":
                width, height, rows = pixels.read_png(path)
                self.assertTrue(pixels.tiles(width, height, rows), path)
            if kind == "sprites":
                width, height, rows = pixels.read_png(path)
                colours = {row[i:i + 3] for row in rows for i in range(0, len(row), 4)
                           if row[i + 3] == 255}
                self.assertLessEqual(len(colours), 16, path)
                self.assertTrue(all(a in (0, 255) for row in rows for a in row[3::4]), path)
            kinds[kind] = kinds.get(kind, 0) + 1
        self.assertEqual((kinds["icons"], kinds["textures"], kinds["sprites"]), (3, 2, 1), kinds)

        # Only the postprocessing changes (trim's margin): the model's images are in the cache,
        # so the icons and the sprite are post-processed again and nothing is paid.
        self.write(shipped_manifest(self.server.url) + "\n[postprocessors.trim]\nmargin = 20\n")
        plan = self.kiln("plan", "--backend", "replicate")
        self.assertEqual(plan.returncode, 0, plan.stderr)
        self.assertEqual(plan.stdout.count("the model's image is in the cache"), 4, plan.stdout)
        self.assertIn("predicted cost $0.00", plan.stdout)
        r, again = self.build("--backend", "replicate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["create_requests"]), len(names))
        remade = [a for a in again["assets"] if a["status"] == "generated"]
        self.assertEqual(sorted(a["name"] for a in remade),
                         ["icons/potion", "icons/shield", "icons/sword", "sprites/slime"])
        self.assertTrue(all(a["attempts"][0]["from_cache"] for a in remade))
        self.assertEqual(again["summary"]["cost_usd"], 0)
        for a in remade:
            assert_game_ready_icon(self, a["output"])
        # Back to the shipped margin: the first outputs, from the cache.
        self.write(shipped_manifest(self.server.url))
        r, back = self.build("--backend", "replicate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(back["summary"]["cached"], 4)
        self.assertEqual(len(self.server.stats()["create_requests"]), len(names))
        self.assertTrue(all(c["model"] == FLUX for c in stats["creates"]))

    # Must show 4: an alpha check that no retry can pass on flux, with nothing to make
    # transparency: one prediction per icon, then a permanent failure that says what to add.
    def test_an_alpha_check_flux_cannot_pass_fails_at_once_with_the_fix(self):
        text = shipped_manifest(self.server.url)
        text = text.replace('postprocess = ["remove-background", "trim"]\n', "")
        self.assertNotIn('postprocess = ["remove-background", "trim"]', text)
        self.write(text)
        r, report = self.build("--backend", "replicate", "--only", "icons/*")
        self.assertEqual(r.returncode, 1, r.stderr)
        stats = self.server.stats()
        icons = [a for a in report["assets"] if a["name"].startswith("icons/")]
        self.assertEqual(len(icons), 3)
        self.assertEqual(len(stats["creates"]), 3, [c["input"]["prompt"] for c in stats["creates"]])
        self.assertEqual(len(stats["create_requests"]), 3)
        hint = 'add postprocess = ["remove-background"] to [types.icon]'
        for a in icons:
            self.assertEqual(a["status"], "failed")
            self.assertEqual(a["error_category"], "permanent")
            self.assertEqual([t["strategy"] for t in a["attempts"]], ["initial"])
            self.assertEqual(a["hint"], hint)
            self.assertIn(hint, a["error"])
            self.assertIn("never paints transparency", a["error"])
            attempt = a["attempts"][0]
            self.assertEqual(attempt["source"], "alpha")
            self.assertEqual(attempt["decision"], "stop")
            # Why the retry the chain proposed (a new seed) was not bought is in the report.
            self.assertIn("not retried: no new image can pass", attempt["decision_reason"])
            self.assertIn("adjust-parameters: no use", attempt["decision_reason"])
            self.assertIn(a["name"] + ": ", r.stderr)
        self.assertIn(hint, r.stderr)
        self.assertAlmostEqual(report["summary"]["cost_usd"], 0.009)

        # Built again as it is: the same three requests are not bought again (their images are
        # in the cache); they fail the same way, for free, with the same fix.
        r, again = self.build("--backend", "replicate", "--only", "icons/*")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(self.server.stats()["create_requests"]), 3)
        self.assertEqual(again["summary"]["cost_usd"], 0)
        self.assertTrue(all(a["hint"] == hint and a["attempts"][0]["from_cache"]
                            for a in again["assets"]), again["assets"])
        # --force asks the model again.
        r, forced = self.build("--backend", "replicate", "--only", "icons/sword", "--force")
        self.assertEqual(len(self.server.stats()["create_requests"]), 4)

    def test_the_fix_names_every_missing_property_and_survives_a_fallback(self):
        text = f"""[project]
output_dir = "out"
allow_fallback = true

[defaults]
backend = "replicate"
model = "{FLUX}"

[backends.replicate]
base_url = "{self.server.url}/v1"

[types.sprite]
width = 64
height = 64
postprocess = ["trim"]
validators = ["tileable", "alpha"]
retry = ["adjust-parameters", "fallback"]

[[asset]]
name = "tiles/floor"
type = "sprite"
prompt = "stone floor tile, seamless tileable texture"
"""
        self.write(text)
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        floor = report["assets"][0]
        # A new seed is not bought; the placeholder's stand-in (free, and it paints both) is
        # taken, as the chain says, and the fix is still named: both properties, the makers
        # before trim, and where.
        self.assertEqual([t["strategy"] for t in floor["attempts"]], ["initial", "fallback"])
        self.assertEqual(len(self.server.stats()["create_requests"]), 1)
        self.assertTrue(floor["fallback"])
        self.assertEqual(floor["hint"], 'make it postprocess = ["remove-background", "make-tileable", '
                                        '"trim"] (assets.toml:15)')
        self.assertIn(floor["hint"], r.stderr)


class HostileImagesTest(unittest.TestCase):
    """A postprocessor that hands the host images it must not trust (tests/plugins/bad_image.c):
    each asset fails alone, naming the postprocessor and what was wrong; nothing crashes."""

    def test_untrustworthy_images_from_a_postprocessor_fail_their_asset_only(self):
        tmp = tempfile.mkdtemp(prefix="kiln-bad-image-")
        try:
            with open(os.path.join(tmp, "assets.toml"), "w") as f:
                f.write(f"""[project]
output_dir = "out"

[plugins]
paths = ["{os.environ["KILN_BAD_IMAGE_DIR"]}"]

[types.t]
width = 32
height = 32
postprocess = ["bad-image"]
validators = ["resolution"]
retry = []
""" + "".join(f'\n[[asset]]\nname = "{n}"\ntype = "t"\nprompt = "{n}"\n'
              for n in ("short-rows", "huge", "grown", "fine")))
            env = dict(os.environ, KILN_CACHE_DIR=os.path.join(tmp, "cache"),
                       KILN_STATE_DIR=os.path.join(tmp, "state"))
            env.pop("KILN_PLUGIN_PATH", None)
            report = os.path.join(tmp, "report.json")
            r = subprocess.run([KILN, "build", "--report", report], cwd=tmp, env=env,
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 1, r.stderr)
            with open(report) as f:
                assets = by_name(json.load(f))
            self.assertEqual(assets["fine"]["status"], "generated")
            for name, why in (("short-rows", "are shorter than its width of"),
                              ("huge", "the largest side Kiln takes is 16384"),
                              ("grown", "more than four times the larger")):
                a = assets[name]
                self.assertEqual((a["status"], a["error_category"]), ("failed", "permanent"), name)
                self.assertIn("postprocessor 'bad-image'", a["error"])
                self.assertIn(why, a["error"])
                self.assertEqual(a["attempts"][0]["source"], "bad-image")
                self.assertIn(name + ": ", r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class PostprocessCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-postprocess-")
        self.env = {k: v for k, v in os.environ.items() if k != "KILN_PLUGIN_PATH"}
        self.env["KILN_CACHE_DIR"] = os.path.join(self.tmp, "cache")
        self.env["KILN_STATE_DIR"] = os.path.join(self.tmp, "state")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, text):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(text)

    def kiln(self, *args, env=None):
        return subprocess.run([KILN, *args], cwd=self.tmp, env=env or self.env,
                              capture_output=True, text=True, timeout=600)

    def build(self, *args, env=None):
        report = os.path.join(self.tmp, "report.json")
        r = self.kiln("build", "--report", report, *args, env=env)
        with open(report) as f:
            return r, json.load(f)

    # Must show 3: the postprocessors, their order and their options are in the fingerprint;
    # going back is a cache hit.
    def test_postprocessor_options_and_order_regenerate_and_a_revert_is_cached(self):
        base = """[project]
output_dir = "out"

[types.icon]
width = 96
height = 96
postprocess = ["remove-background", "trim"]
validators = ["resolution", "alpha"]

[postprocessors.trim]
margin = 8

[[asset]]
name = "icons/gem"
type = "icon"
prompt = "a blue gem"
"""
        self.write(base)
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["assets"][0]["status"], "generated")
        first = report["assets"][0]["fingerprint"]
        with open(os.path.join(self.tmp, "out", "icons", "gem.png"), "rb") as f:
            first_bytes = f.read()

        def plan_reason():
            r = self.kiln("plan", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)["assets"][0]

        for change in (base.replace("margin = 8", "margin = 20"),
                       base.replace('["remove-background", "trim"]', '["trim", "remove-background"]'),
                       base.replace('["remove-background", "trim"]', '["remove-background"]')):
            self.write(change)
            planned = plan_reason()
            self.assertEqual(planned["action"], "generate", change)
            self.assertIn("postprocessing changed", planned["reason"])
            self.assertNotEqual(planned["fingerprint"], first)
            r, report = self.build()
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(report["assets"][0]["status"], "generated")
        # The margin changed the picture itself.
        self.write(base.replace("margin = 8", "margin = 20"))
        self.build()
        with open(os.path.join(self.tmp, "out", "icons", "gem.png"), "rb") as f:
            self.assertNotEqual(f.read(), first_bytes)

        self.write(base)
        self.assertEqual(plan_reason()["action"], "cached")
        r, report = self.build()
        self.assertEqual(report["assets"][0]["status"], "cached")
        self.assertEqual(report["assets"][0]["fingerprint"], first)
        with open(os.path.join(self.tmp, "out", "icons", "gem.png"), "rb") as f:
            self.assertEqual(f.read(), first_bytes)

    def test_a_palette_file_is_found_from_the_manifest_and_its_content_counts(self):
        os.makedirs(os.path.join(self.tmp, "art"))
        palette = os.path.join(self.tmp, "art", "palette.hex")
        with open(palette, "w") as f:
            f.write("# four colours\n#000000\n#ff0044\n#22cc88\n#ffffff\n")
        text = """[project]
output_dir = "out"

[types.sprite]
width = 32
height = 32
postprocess = ["pixelate"]

[postprocessors.pixelate]
pixel_size = 2
palette = "art/palette.hex"

[[asset]]
name = "slime"
type = "sprite"
prompt = "a slime"
"""
        self.write(text)
        elsewhere = tempfile.mkdtemp(dir=self.tmp)  # run from another folder: same file
        r = subprocess.run([KILN, "build", "-m", os.path.join(self.tmp, "assets.toml")],
                           cwd=elsewhere, env=self.env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        width, height, rows = pixels.read_png(os.path.join(self.tmp, "out", "slime.png"))
        colours = {row[i:i + 3] for row in rows for i in range(0, len(row), 4) if row[i + 3]}
        self.assertLessEqual(colours, {b"\x00\x00\x00", b"\xff\x00\x44", b"\x22\xcc\x88",
                                       b"\xff\xff\xff"})
        r = self.kiln("build")
        self.assertIn("no work to do", r.stdout)
        # Another palette under the same name: the sprite is made again, not "up to date".
        with open(palette, "w") as f:
            f.write("#101010\n#f0f0f0\n")
        r = self.kiln("build", "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("generated slime (postprocessing changed", r.stdout + r.stderr)
        width, height, rows = pixels.read_png(os.path.join(self.tmp, "out", "slime.png"))
        colours = {row[i:i + 3] for row in rows for i in range(0, len(row), 4) if row[i + 3]}
        self.assertLessEqual(colours, {b"\x10\x10\x10", b"\xf0\xf0\xf0"})
        # A palette that is not there: the manifest line, exit 2, nothing written.
        self.write(text.replace("art/palette.hex", "art/missing.gpl"))
        r = self.kiln("build")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"assets\.toml:11:11: option 'palette' of postprocessor "
                                   r"'pixelate': no file '.*art/missing\.gpl' \(paths are "
                                   r"relative to the manifest's folder\)")

    def test_an_unknown_postprocessor_or_option_is_a_manifest_error(self):
        self.write("""[types.icon]
width = 32
height = 32
postprocess = ["remove-backgrund"]

[postprocessors.trim]
marginn = 3

[[asset]]
name = "a"
type = "icon"
prompt = "x"
""")
        r = self.kiln("build")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"assets\.toml:4:\d+: .*unknown postprocessor "
                                   r"'remove-backgrund' \(did you mean 'remove-background'\?\)")
        self.assertRegex(r.stderr, r"assets\.toml:7:\d+: .*unknown option 'marginn' for "
                                   r"postprocessor 'trim' \(did you mean 'margin'\?\)")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "generated")))

    # Must show 5 (1,000 placeholder textures of the example's texture type pass `tileable` on
    # their first attempt) is tests/unit/builtin_plugins_test.cpp's
    # Placeholder.AThousandExampleTexturesPassTileableFirstTime: the same plugins, without a
    # minute of PNG encoding.

    # Must show 6: a plugin built from the SDK as it was before postprocessors (a frozen copy of
    # the ABI 1.0 headers in tests/sdk-1.0) loads and runs in this host, beside 1.1 plugins.
    def test_plugins_built_against_the_abi_1_0_sdk_load_and_run(self):
        env = dict(self.env, KILN_PLUGIN_PATH=SDK_1_0_PLUGINS)
        r = self.kiln("plugins", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        for kind, plugin_id in [("backend", "old-disc"), ("enhancer", "old-word"),
                                ("validator", "old-centre"), ("retry-strategy", "old-seed")]:
            self.assertRegex(r.stdout, r"(?m)^%s +%s +1\.0\.0 +1\.0 +/\S+\.so$" % (kind, plugin_id))
        self.assertRegex(r.stdout, r"(?m)^postprocessor +remove-background +\S+ +1\.1 ")

        self.write("""[project]
output_dir = "out"

[defaults]
backend = "old-disc"
enhancers = ["old-word"]
retry = ["old-seed"]

[types.icon]
width = 64
height = 64
postprocess = ["remove-background", "trim"]
validators = ["resolution", "old-centre", "alpha"]

[types.flat]
width = 64
height = 64
validators = ["resolution", "old-centre", "alpha"]

[[asset]]
name = "made"
type = "icon"
prompt = "a disc"

[[asset]]
name = "opaque"
type = "flat"
prompt = "a disc"
""")
        r, report = self.build(env=env)
        self.assertEqual(r.returncode, 1, r.stderr)
        made, opaque = by_name(report)["made"], by_name(report)["opaque"]
        # The old backend, enhancer and validator ran, then the 1.1 postprocessors.
        self.assertEqual(made["status"], "generated", made)
        self.assertIn("from-an-old-enhancer", made["prompt"])
        self.assertIn("isolated on a plain white background", made["prompt"])
        assert_game_ready_icon(self, made["output"])
        # An ABI 1.0 backend does not say what it paints: the host does not guess, and the old
        # strategy's retry is bought (and fails the same way).
        self.assertEqual(opaque["status"], "failed")
        self.assertEqual([t["strategy"] for t in opaque["attempts"]], ["initial", "old-seed"])
        self.assertEqual(opaque["attempts"][1]["seed"], 99)
        self.assertEqual(opaque["attempts"][0]["decision"], "retry")


if __name__ == "__main__":
    unittest.main()
