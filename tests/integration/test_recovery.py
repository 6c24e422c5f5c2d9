"""The strategy chain end to end: the built kiln against tests/servers/fake_replicate.py, which
returns blank and broken images, refuses prompts, runs out of credit and fails, as image APIs
do. Each test starts and stops its own server.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE and KILN_FAKE_REPLICATE set; standard library only."""

import json
import os
import unittest

from test_cli import by_name, image_size
from test_replicate import FLUX, SDXL, FakeReplicateCase

# The chain of the issue, every built-in strategy in order.
FULL_CHAIN = '["backoff", "simplify-prompt", "alternate-model", "adjust-parameters", "fallback"]'

SUBJECTS = ["sword", "shield", "potion", "helmet", "bow", "arrow", "ring", "amulet", "scroll",
            "lantern", "axe", "hammer", "staff", "wand", "boots", "gloves", "cloak", "key",
            "chest", "map"]
FORMATS = ["png", "webp", "jpg"]


def manifest(server, assets, extra=""):
    """assets: (name, prompt, format, more TOML lines)."""
    text = f"""[project]
output_dir = "out"
{extra}

[defaults]
backend = "replicate"
model = "{FLUX}"
fallback_models = ["{SDXL}"]
retry = {FULL_CHAIN}

[backends.replicate]
base_url = "{server.url}/v1"

[strategies.backoff]
base_delay_ms = 100

[types.icon]
width = 128
height = 128
style = "flat game icon"
modifiers = ["bold outline"]
enhancers = ["style", "quality", "negative"]
negative = "text, watermark"
validators = ["resolution", "format", "not-blank", "not-corrupt"]
"""
    for name, prompt, fmt, more in assets:
        text += f"""
[[asset]]
name = "{name}"
type = "icon"
prompt = "{prompt}"
format = "{fmt}"
{more}
"""
    return text


class RecoveryTest(FakeReplicateCase):
    def write(self, assets, extra=""):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(manifest(self.server, assets, extra))

    def output(self, name, fmt):
        return os.path.join(self.tmp, "out", name + "." + fmt)

    def test_blank_and_broken_images_are_made_again_until_valid(self):
        # Must show 1: 30 % blank images, 10 % files cut in half.
        assets = [(f"icons/{s}", f"a {s}, fantasy item", FORMATS[i % 3], "")
                  for i, s in enumerate(SUBJECTS)]
        self.write(assets)
        self.server.control(latency_s=0.05,
                            image_faults={"blank_rate": 0.3, "truncate_rate": 0.1, "seed": 5})
        r, report = self.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        faults = [c["image_fault"] for c in stats["creates"]]
        self.assertGreaterEqual(faults.count("blank"), 4, faults)
        self.assertGreaterEqual(faults.count("truncate"), 1, faults)

        rejected = []
        for name, _, fmt, _ in assets:
            a = by_name(report)[name]
            self.assertEqual((a["status"], a["fallback"]), ("generated", False), name)
            self.assertIsNone(a["attempts"][-1]["error"])
            rejected += [t for t in a["attempts"] if t["error"]]
            self.assertEqual(image_size(self.output(name, fmt), fmt), (128, 128))
        # Every bad image the server sent is a rejected attempt in the report, with its reason.
        # A broken file is downloaded once more first (free: the same prediction); the server
        # keeps serving it broken, so that is a second rejected attempt, then a new prediction.
        self.assertEqual(len(rejected), faults.count("blank") + 2 * faults.count("truncate"))
        blank = [t for t in rejected if t["source"] == "not-blank"]
        broken = [t for t in rejected if t["source"] == "kiln"]
        self.assertEqual(len(blank), faults.count("blank"))
        self.assertEqual(len(broken), 2 * faults.count("truncate"))
        again = [t for a in report["assets"] for t in a["attempts"]
                 if t["strategy"] == "download-again"]
        self.assertEqual(len(again), faults.count("truncate"))
        self.assertTrue(all(t["cost_usd"] == 0 for t in again), again)
        self.assertTrue(all(t["error_category"] == "validation" and "image is blank" in t["error"]
                            for t in blank), blank)
        self.assertTrue(all(t["error_category"] == "retryable" and "corrupt" in t["error"]
                            for t in broken), broken)
        # A blank image gets a new seed; a broken file, once downloaded again, the same request
        # as a new prediction.
        strategies = {t["strategy"] for a in report["assets"] for t in a["attempts"][1:]}
        self.assertLessEqual({"adjust-parameters", "backoff", "download-again"}, strategies)
        self.assertNotIn("fallback", strategies)
        self.assertEqual(len(stats["creates"]),
                         sum(len(a["attempts"]) for a in report["assets"]) - len(again))

        # Every output decodes fully and is not blank: the validators agree on a second look.
        r2 = self.kiln("build")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertIn("no work to do", r2.stdout)

    def test_a_refused_prompt_walks_the_whole_chain_to_a_flagged_fallback(self):
        # Must show 2: refused as NSFW by every model, with every seed.
        self.write([("icons/axe", "a bloody axe, dripping, gore", "png", ""),
                    ("icons/shield", "a round shield", "png", "")])
        self.server.control(prompt_rules=[{"contains": "bloody", "fate": "nsfw", "times": 99}])
        r, report = self.build("-j", "1")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("fallback stand-in", r.stderr)
        self.assertIn("allow_fallback", r.stderr)
        axe = by_name(report)["icons/axe"]
        steps = [(t["strategy"], t["backend"], t["model"], t["error_category"])
                 for t in axe["attempts"]]
        self.assertEqual(steps, [
            ("initial", "replicate", FLUX, "content_policy"),
            ("simplify-prompt", "replicate", FLUX, "content_policy"),
            ("alternate-model", "replicate", SDXL, "content_policy"),
            ("adjust-parameters", "replicate", SDXL, "content_policy"),
            ("adjust-parameters", "replicate", SDXL, "content_policy"),
            ("fallback", "placeholder", SDXL, None)])
        prompts = [t["prompt"] for t in axe["attempts"]]
        self.assertEqual(prompts[0], "a bloody axe, dripping, gore, flat game icon, bold outline, "
                                     "highly detailed, sharp focus")
        self.assertEqual(prompts[1], "a bloody axe")  # the subject: first clause, no boosters
        self.assertEqual(len({t["seed"] for t in axe["attempts"][2:5]}), 3)
        self.assertTrue(all("NSFW" in t["error"] for t in axe["attempts"][:5]))
        self.assertEqual((axe["status"], axe["fallback"]), ("generated", True))
        self.assertEqual(report["summary"]["fallback"], 1)
        self.assertEqual(image_size(self.output("icons/axe", "png"), "png"), (128, 128))
        shield = by_name(report)["icons/shield"]
        self.assertEqual((shield["status"], shield["fallback"]), ("generated", False))
        creates = self.server.stats()["creates"]
        self.assertEqual([c["model"] for c in creates if "axe" in c["input"]["prompt"]],
                         [FLUX, FLUX, SDXL.split(":")[0], SDXL.split(":")[0], SDXL.split(":")[0]])
        # SDXL gets a negative prompt, flux none (the negative enhancer).
        axe_inputs = [c["input"] for c in creates if "axe" in c["input"]["prompt"]]
        self.assertNotIn("negative_prompt", axe_inputs[0])
        self.assertIn("watermark", axe_inputs[2]["negative_prompt"])

        # kiln plan flags the stand-in, and the next build tries the asset again.
        plan = json.loads(self.kiln("plan", "--json").stdout)
        flagged = {a["name"]: (a["fallback"], a["action"]) for a in plan["assets"]}
        self.assertEqual(flagged["icons/axe"], (True, "generate"))
        self.assertEqual(flagged["icons/shield"], (False, "up_to_date"))
        table = self.kiln("plan").stdout
        self.assertIn("fallback stand-in", table)

        # Allowed, a stand-in does not fail the run (and is still flagged).
        self.write([("icons/axe", "a bloody axe, dripping, gore", "png", ""),
                    ("icons/shield", "a round shield", "png", "")], "allow_fallback = true")
        r, report = self.build("-j", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(by_name(report)["icons/axe"]["fallback"])
        self.assertEqual(by_name(report)["icons/shield"]["status"], "up_to_date")
        # No shortcut past a stand-in: a plain rebuild tries the real image again.
        before = len(self.server.stats()["creates"])
        r = self.kiln("build", "-j", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("no work to do", r.stdout)
        self.assertEqual(len(self.server.stats()["creates"]), before + 5)

    def test_no_credit_stops_creating_at_once_and_keeps_what_was_paid(self):
        # Must show 3: 402 after three images; the chain does not fall back around a person.
        assets = [(f"icons/{s}", f"a {s}", "png", "") for s in SUBJECTS[:8]]
        self.write(assets)
        self.server.control(latency_s=0.3,
                            faults={"create": [{"ok": True}] * 3 + [{"status": 402}]})
        r, report = self.build("-j", "2")
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("insufficient credit", r.stderr)
        self.assertIn("stopped creating on replicate", r.stderr)
        self.assertIn("not started; the", r.stderr)
        statuses = [a["status"] for a in report["assets"]]
        made = [a["name"] for a in report["assets"] if a["status"] == "generated"]
        self.assertEqual(statuses.count("failed"), 1, statuses)
        # Three paid before the 402, and at most the one in flight beside it.
        self.assertIn(len(made), (3, 4))
        self.assertEqual(statuses.count("skipped"), 8 - 1 - len(made))
        self.assertLessEqual(len(self.server.stats()["create_requests"]), 5)
        self.assertFalse(any(a["fallback"] for a in report["assets"]))
        for name in made:
            self.assertEqual(image_size(self.output(name, "png"), "png"), (128, 128))

        # Credit bought: the next run makes only the rest, the paid ones are up to date.
        r2, report2 = self.build("-j", "2")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(report2["summary"]["up_to_date"], len(made))
        self.assertEqual(report2["summary"]["generated"], 8 - len(made))

    def test_a_failing_model_cools_down_and_its_assets_move_on(self):
        assets = [(f"icons/{s}", f"a {s}", "png", "") for s in SUBJECTS[:3]]
        self.write(assets, "\n[retry_policy]\nbreaker_failures = 3\nbreaker_cooldown_s = 600")
        self.server.control(faults={"create": [{"status": 500}] * 3})
        r, report = self.build("-j", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cooling it down", r.stderr)
        # -j 1 is one remote job at a time: while one asset waits to retry, the next one uses
        # the slot, so the three failures may fall on any assets. After the third, flux is
        # cooling: no asset sends it anything more, every one moves on to SDXL.
        attempts = [t for a in report["assets"] for t in a["attempts"]]
        sent_to_flux = [t for t in attempts if t["model"] == FLUX and t["source"] == "replicate"]
        self.assertEqual(len(sent_to_flux), 3)
        cooling = [t for t in attempts if t["model"] == FLUX and t["source"] == "kiln"]
        # Whoever failed third, the other assets still had flux work (a first attempt or a
        # retry already proposed): at least one met the cooling model.
        self.assertTrue(cooling, attempts)
        for t in cooling:
            self.assertIn("cooling down", t["error"])
        for a in report["assets"]:
            self.assertEqual((a["attempts"][-1]["strategy"], a["attempts"][-1]["model"]),
                             ("alternate-model", SDXL))
            self.assertEqual(a["model"], SDXL)
        models = [c["model"] for c in self.server.stats()["creates"]]
        self.assertEqual(models, [SDXL.split(":")[0]] * 3)
        self.assertEqual(len(self.server.stats()["create_requests"]), 6)

    def test_the_retry_budget_caps_a_failing_providers_traffic(self):
        assets = [(f"icons/{s}", f"a {s}", "png", 'retry = ["backoff"]') for s in SUBJECTS[:4]]
        self.write(assets, "\n[retry_policy]\nbudget_min = 2\nbudget_ratio = 0.0")
        self.server.control(faults={"create": [{"status": 503}] * 50})
        r, report = self.build("-j", "1")
        self.assertEqual(r.returncode, 1)
        # 4 first attempts and 2 retries in all, whatever each asset's backoff allows.
        self.assertEqual(len(self.server.stats()["create_requests"]), 6)
        self.assertIn("retry budget is spent", r.stderr)
        self.assertEqual(sum(len(a["attempts"]) for a in report["assets"]), 6)


if __name__ == "__main__":
    unittest.main()
