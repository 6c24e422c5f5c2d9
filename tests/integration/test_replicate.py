"""The Replicate backend end to end: the built kiln against tests/servers/fake_replicate.py, a
server speaking Replicate's HTTP protocol on 127.0.0.1, started and stopped by each test.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE and KILN_FAKE_REPLICATE set; standard library only."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from test_cli import KILN, by_name, image_size, state_folder

FAKE = os.environ.get("KILN_FAKE_REPLICATE", "../servers/fake_replicate.py")
TEST_IMAGE = os.environ.get("KILN_TEST_IMAGE", "kiln-test-image")
# Plainly not a real token; distinctive enough to search every file and output for.
TOKEN = "kiln-test-token-NOT-REAL-5c1e0d"
FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"

# 8 flux-schnell assets in every declared format and several shapes.
EIGHT = [
    ("icons/sword", 256, 256, "png"), ("icons/shield", 128, 128, "png"),
    ("icons/potion", 64, 64, "webp"), ("textures/grass", 512, 512, "png"),
    ("textures/stone", 300, 300, "jpg"), ("covers/title", 1280, 720, "jpg"),
    ("banners/wide", 800, 200, "webp"), ("portraits/hero", 400, 600, "png"),
]


class FakeReplicate:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, FAKE, "--token", TOKEN, "--image-tool", TEST_IMAGE],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, **settings):
        req = urllib.request.Request(self.url + "/_control", json.dumps(settings).encode(),
                                     {"Content-Type": "application/json"})
        urllib.request.urlopen(req).read()

    def stats(self):
        return json.load(urllib.request.urlopen(self.url + "/_stats"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.proc.stdout.close()


def manifest(server, assets, backend_options="", jobs_note=""):
    text = f"""[project]
output_dir = "out"

[defaults]
backend = "replicate"
model = "{FLUX}"

[backends.replicate]
base_url = "{server.url}/v1"
{backend_options}

[types.art]
validators = ["resolution", "format", "not-blank", "not-corrupt"]
"""
    for asset in assets:
        name, width, height, fmt = asset[:4]
        extra = asset[4] if len(asset) > 4 else ""
        text += f"""
[[asset]]
name = "{name}"
type = "art"
prompt = "{name.split('/')[-1]} for a fantasy game"
width = {width}
height = {height}
format = "{fmt}"
{extra}
"""
    return text


class FakeReplicateCase(unittest.TestCase):
    """A temporary project and its own fake server per test; kiln with a test token."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-replicate-")
        self.server = FakeReplicate()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("REPLICATE_API_TOKEN", "KILN_PLUGIN_PATH")}
        self.env["KILN_CACHE_DIR"] = os.path.join(self.tmp, "cache")
        self.env["KILN_STATE_DIR"] = os.path.join(self.tmp, "state")
        self.env["REPLICATE_API_TOKEN"] = TOKEN

    def tearDown(self):
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def state_file(self, name=""):
        """A file of the state folder Kiln keeps for out/ (under KILN_STATE_DIR)."""
        return os.path.join(state_folder(self.tmp), name)

    def kiln(self, *args, env=None):
        return subprocess.run([KILN, *args], cwd=self.tmp, env=env or self.env,
                              capture_output=True, text=True, timeout=240)

    def build(self, *args, env=None):
        report = os.path.join(self.tmp, "report.json")
        if os.path.exists(report):
            os.remove(report)
        r = self.kiln("build", "--report", report, *args, env=env)
        with open(report) as f:
            return r, json.load(f)


class ReplicateTest(FakeReplicateCase):
    def write(self, assets, backend_options=""):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(manifest(self.server, assets, backend_options))

    def creates_for(self, stats, name):
        prompt = name.split("/")[-1] + " for a fantasy game"
        return [c for c in stats["create_requests"] if c["prompt"].startswith(prompt)]

    def assert_output(self, name, width, height, fmt):
        path = os.path.join(self.tmp, "out", name + "." + fmt)
        self.assertEqual(image_size(path, fmt), (width, height), name)

    def assert_token_nowhere(self, *outputs):
        for text in outputs:
            self.assertNotIn(TOKEN, text)
        for folder, _, files in os.walk(self.tmp):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    self.assertNotIn(TOKEN.encode(), f.read(), os.path.join(folder, name))

    # Must show 1: 8 assets, 8 predictions, exact outputs, 8 x $0.003, a rerun creates none.
    def test_eight_flux_assets_are_eight_predictions_then_none(self):
        self.write(EIGHT)
        r, report = self.build("-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), 8)
        self.assertEqual(len(stats["create_requests"]), 8)
        self.assertEqual(stats["account_checks"], 1)
        self.assertEqual(stats["auth_on_delivery"], 0, "the token went to the file host")
        for name, width, height, fmt in EIGHT:
            self.assert_output(name, width, height, fmt)
        costs = [a["cost_usd"] for a in report["assets"]]
        self.assertEqual(len(costs), 8)
        for cost in costs:
            self.assertAlmostEqual(cost, 0.003)
        self.assertAlmostEqual(report["summary"]["cost_usd"], 8 * 0.003)
        self.assertAlmostEqual(report["summary"]["predicted_cost_usd"], 8 * 0.003)
        for a in report["assets"]:
            self.assertEqual(len(a["remote_id"]), 26)
        # Inputs as the model expects: nearest aspect ratio, the declared format when it exists.
        inputs = {c["input"]["prompt"].split(" for")[0]: c["input"] for c in stats["creates"]}
        self.assertEqual(inputs["title"]["aspect_ratio"], "16:9")
        self.assertEqual(inputs["title"]["megapixels"], "1")
        self.assertEqual(inputs["shield"]["megapixels"], "0.25")
        self.assertEqual(inputs["hero"]["aspect_ratio"], "2:3")
        self.assertEqual(inputs["wide"]["aspect_ratio"], "21:9")
        self.assertEqual(inputs["stone"]["output_format"], "jpg")
        # Sync answers ("processing" with the output complete) need no polling.
        self.assertEqual(stats["gets"], 0)

        r2, report2 = self.build()
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertIn("no work to do", r2.stdout)
        self.assertEqual(len(self.server.stats()["create_requests"]), 8)
        self.assertEqual(report2["summary"]["cost_usd"], 0)
        self.assert_token_nowhere(r.stdout, r.stderr, r2.stdout, r2.stderr)

    def test_plan_predicts_from_the_price_table_without_a_token(self):
        self.write(EIGHT[:3] + [("sdxl/one", 256, 256, "png", f'model = "{SDXL}"')])
        env = dict(self.env)
        del env["REPLICATE_API_TOKEN"]
        r = self.kiln("plan", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count("$0.0030"), 3)
        self.assertIn("$0.0080", r.stdout)  # SDXL: 11 s typical x $0.000725
        self.assertIn("predicted cost $0.0170", r.stdout)
        self.assertEqual(self.server.stats()["create_requests"], [])

    # Must show 2: a wrong token.
    def test_wrong_token_fails_once_naming_the_variable_and_leaks_nothing(self):
        self.write(EIGHT)
        wrong = "kiln-test-wrong-token-NOT-REAL-77a2"
        env = dict(self.env, REPLICATE_API_TOKEN=wrong)
        r, report = self.build("-j", "4", env=env)
        self.assertEqual(r.returncode, 1, r.stderr)  # every asset failed, each for this reason
        self.assertIn("REPLICATE_API_TOKEN", r.stderr)
        self.assertIn("You did not pass a valid authentication token", r.stderr)
        stats = self.server.stats()
        self.assertEqual(stats["account_checks"], 1)
        self.assertEqual(stats["create_requests"], [], "no prediction with a rejected token")
        for a in report["assets"]:
            self.assertEqual(a["status"], "failed")
            self.assertEqual(len(a["attempts"]), 1)
            self.assertEqual(a["error_category"], "permanent")
        self.assertNotIn(wrong, r.stdout + r.stderr)
        for folder, _, files in os.walk(self.tmp):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    self.assertNotIn(wrong.encode(), f.read())

    def test_missing_token_names_the_variable_before_any_call(self):
        self.write(EIGHT[:2], 'token_env = "MY_GAME_REPLICATE_TOKEN"')
        r, report = self.build()
        self.assertEqual(r.returncode, 4, r.stderr)  # a person must act
        self.assertIn("MY_GAME_REPLICATE_TOKEN is not set", r.stderr)
        stats = self.server.stats()
        self.assertEqual(stats["account_checks"] + len(stats["create_requests"]), 0)
        statuses = sorted(a["status"] for a in report["assets"])
        self.assertIn("failed", statuses)

    # Must show 3: a rejected input fails its asset only, with the server's detail, once.
    def test_rejected_input_fails_that_asset_only_and_is_not_resent(self):
        bad = ("icons/bad", 128, 128, "png", "params = { num_inference_steps = 8 }")
        self.write(EIGHT[:3] + [bad])
        r, report = self.build()
        self.assertEqual(r.returncode, 1, r.stderr)
        assets = by_name(report)
        self.assertEqual(assets["icons/bad"]["status"], "failed")
        self.assertEqual(assets["icons/bad"]["error_category"], "permanent")
        self.assertIn("input.num_inference_steps: Must be less than or equal to 4",
                      assets["icons/bad"]["error"])
        self.assertIn("number_lte", assets["icons/bad"]["error"])
        self.assertIn("icons/bad", r.stderr)
        self.assertEqual(len(self.creates_for(self.server.stats(), "icons/bad")), 1)
        for name, width, height, fmt in EIGHT[:3]:
            self.assertEqual(assets[name]["status"], "generated")
            self.assert_output(name, width, height, fmt)

    def test_unknown_model_is_permanent(self):
        self.write([("icons/x", 64, 64, "png", 'model = "nobody/no-such-model"')])
        r, report = self.build()
        self.assertEqual(r.returncode, 1)
        a = report["assets"][0]
        self.assertEqual(a["error_category"], "permanent")
        self.assertIn("HTTP 404", a["error"])
        self.assertEqual(len(a["attempts"]), 1)

    # Must show 4: throttling and server errors; waits honour the hint.
    def test_throttling_and_server_errors_are_retried_honouring_retry_after(self):
        self.write(EIGHT[:4])
        # Six faults over four assets: with full jitter one asset may meet four in a row,
        # which the default backoff (4 attempts of a request) would rightly give up on.
        with open(os.path.join(self.tmp, "assets.toml"), "a") as f:
            f.write("\n[strategies.backoff]\nmax_attempts = 7\n")
        self.server.control(faults={"create": [
            {"status": 429, "retry_after": 1}, {"status": 500}, {"status": 429, "retry_after": 2},
            {"status": 502}, {"drop": True}, {"status": 503}]})
        r, report = self.build("-j", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        for name, width, height, fmt in EIGHT[:4]:
            self.assert_output(name, width, height, fmt)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), 4, "one prediction per asset")
        self.assertEqual(len(stats["create_requests"]), 10)
        throttled = 0
        for name, *_ in EIGHT[:4]:
            requests = self.creates_for(stats, name)
            for earlier, later in zip(requests, requests[1:]):
                if earlier["status"] == 429:
                    throttled += 1
                    self.assertGreaterEqual(later["time"] - earlier["time"],
                                            earlier["retry_after"],
                                            f"{name} retried before retry_after")
            self.assertEqual(requests[-1]["status"], 201)
        self.assertEqual(throttled, 2)
        self.assertGreaterEqual(sum(len(a["attempts"]) for a in report["assets"]), 10)
        self.assertAlmostEqual(report["summary"]["cost_usd"], 4 * 0.003)

    def test_a_long_retry_after_is_waited_in_full(self):
        self.write(EIGHT[:1])
        self.server.control(faults={"create": [{"status": 429, "retry_after": 3}]})
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        first, second = self.server.stats()["create_requests"]
        self.assertGreaterEqual(second["time"] - first["time"], 3.0)
        self.assertIn("retrying in 3.", r.stderr)

    # A 429 slows the whole backend, not only the asset that got it: no create of any asset
    # reaches the server before the hint has passed (issue 18: with the rate limiter unhooked
    # from 429s every test still passed, the throttled asset's own backoff hiding it).
    def test_a_429_pauses_every_create_of_the_backend(self):
        self.write(EIGHT[:4])
        self.server.control(latency_s=1.0,
                            faults={"create": [{"status": 429, "retry_after": 3}]})
        r, _ = self.build("-j", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        requests = self.server.stats()["create_requests"]
        throttled = [c for c in requests if c["status"] == 429]
        self.assertEqual(len(throttled), 1, requests)
        # A create already on its way when the 429 was answered arrives within moments of it
        # (0.5 s of slack for a loaded machine); every one sent after Kiln read the 429 must
        # wait out the hint (3 s), where the other slot, unpaused, would send its next create
        # a second later (the fake's latency).
        t0 = throttled[0]["time"]
        later = [c["time"] - t0 for c in requests if c["time"] > t0 + 0.5]
        self.assertTrue(later, requests)
        self.assertGreaterEqual(min(later), 2.9, requests)

    def test_a_create_whose_answer_was_lost_is_found_not_paid_again(self):
        self.write(EIGHT[:2], "sync_wait_s = 0")
        self.server.control(faults={"create": [{"lose_answer": True}, {"drop": True}]})
        r, report = self.build("-j", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), 2, "one prediction per asset")
        # One look finds the first; the dropped create (nothing created) gets two, the second
        # after the grace period, before its retry creates.
        self.assertEqual(stats["lists"], 3)
        self.assertIn("found its prediction " + stats["creates"][0]["id"], r.stderr)
        for asset in EIGHT[:2]:
            self.assert_output(*asset)

    def test_poll_failures_keep_polling_the_same_prediction(self):
        self.write(EIGHT[:2], "sync_wait_s = 0")
        self.server.control(latency_s=1.5, faults={"get": [
            {"status": 500}, {"status": 429, "retry_after": 1}, {"drop": True}, {"status": 502}]})
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["create_requests"]), 2)
        self.assertGreater(stats["gets"], 4)

    def test_truncated_download_is_fetched_again_from_the_same_prediction(self):
        self.write(EIGHT[:1])
        self.server.control(faults={"download": [{"truncate": True}, {"status": 500}]})
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["create_requests"]), 1)
        self.assertEqual(stats["downloads"], 3)
        self.assert_output(*EIGHT[0])

    def test_outputs_removed_before_download_are_generated_again(self):
        self.write(EIGHT[:1])
        self.server.control(prompt_rules=[{"contains": "sword", "fate": "expire", "times": 1}])
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 2)
        self.assertIn("data_removed", r.stderr)
        self.assert_output(*EIGHT[0])

    def test_data_uri_outputs(self):
        self.write(EIGHT[:2])
        self.server.control(output_mode="data")
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.server.stats()["downloads"], 0)
        for asset in EIGHT[:2]:
            self.assert_output(*asset)

    def test_honest_sync_answers_and_polling_only(self):
        for mode, wait in (("honest", ""), ("processing_with_output", "sync_wait_s = 0")):
            with self.subTest(mode=mode):
                shutil.rmtree(os.path.join(self.tmp, "out"), ignore_errors=True)
                shutil.rmtree(os.path.join(self.tmp, "cache"), ignore_errors=True)
                self.write(EIGHT[:1], wait)
                self.server.control(sync_mode=mode)
                r, report = self.build()
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assert_output(*EIGHT[0])

    # Must show 5: WebP outputs become the declared PNG/JPEG at the declared size.
    def test_webp_outputs_become_the_declared_png_and_jpeg(self):
        webp = 'params = { output_format = "webp" }'
        assets = [("a/png", 200, 120, "png", webp), ("a/jpg", 333, 250, "jpg", webp),
                  ("a/tall", 90, 160, "png", webp)]
        self.write(assets)
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual({c["input"]["output_format"] for c in stats["creates"]}, {"webp"})
        for asset in assets:
            self.assert_output(*asset[:4])

    def test_insufficient_credit_stops_new_work_and_exits_4(self):
        self.write(EIGHT[:5])
        self.server.control(faults={"create": [{"ok": True}, {"status": 402}]})
        r, report = self.build("-j", "1")
        self.assertEqual(r.returncode, 4, r.stderr)
        statuses = [a["status"] for a in report["assets"]]
        self.assertEqual(statuses, ["generated", "failed", "skipped", "skipped", "skipped"])
        self.assertEqual(report["assets"][1]["error_category"], "needs_a_person")
        self.assertIn("insufficient credit", report["assets"][1]["error"])
        self.assertEqual(len(self.server.stats()["create_requests"]), 2)
        self.assert_output(*EIGHT[0])
        # The paid image survives: the next run (credit bought) only makes the rest.
        r2, report2 = self.build("-j", "1")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(report2["summary"]["generated"], 4)
        self.assertEqual(report2["summary"]["up_to_date"], 1)

    def test_nsfw_refusal_is_retried_with_new_seeds_then_given_up(self):
        # The default chain (backoff, adjust-parameters) never changes the prompt: a refusal
        # gets two more seeds, then the asset fails as content_policy.
        self.write(EIGHT[:2])
        self.server.control(prompt_rules=[{"contains": "sword", "fate": "nsfw", "times": 5}])
        r, report = self.build()
        self.assertEqual(r.returncode, 1)
        a = by_name(report)["icons/sword"]
        self.assertEqual(a["error_category"], "content_policy")
        self.assertIn("NSFW", a["error"])
        self.assertEqual([t["strategy"] for t in a["attempts"]],
                         ["initial", "adjust-parameters", "adjust-parameters"])
        self.assertEqual([t["error_category"] for t in a["attempts"]], ["content_policy"] * 3)
        creates = self.creates_for(self.server.stats(), "icons/sword")
        self.assertEqual(len(creates), 3)
        seeds = [c["input"].get("seed") for c in creates]
        self.assertEqual(len(set(seeds)), 3, seeds)
        self.assertEqual(by_name(report)["icons/shield"]["status"], "generated")

    def test_model_failure_is_retried_once_then_permanent(self):
        self.write(EIGHT[:2])
        self.server.control(prompt_rules=[
            {"contains": "sword", "fate": "fail", "times": 5, "error": "CUDA out of memory"},
            {"contains": "shield", "fate": "fail", "times": 1, "error": "CUDA out of memory"}])
        r, report = self.build()
        self.assertEqual(r.returncode, 1)
        stats = self.server.stats()
        sword = by_name(report)["icons/sword"]
        self.assertEqual(sword["error_category"], "permanent")
        self.assertIn("CUDA out of memory", sword["error"])
        self.assertEqual(len(self.creates_for(stats, "icons/sword")), 2)
        self.assertEqual(by_name(report)["icons/shield"]["status"], "generated")
        self.assertEqual(len(self.creates_for(stats, "icons/shield")), 2)

    # Every create carries Cancel-After, so a prediction a killed run leaves behind stops (and
    # stops billing) by itself (issue 18: removing the header passed every test).
    def test_every_create_carries_cancel_after(self):
        self.write(EIGHT[:2])
        r, _ = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        creates = self.server.stats()["creates"]
        self.assertEqual(len(creates), 2)
        for c in creates:
            self.assertIsNotNone(c["cancel_after_s"], c)
            self.assertGreater(c["cancel_after_s"], 0)

    # A server that echoes the token in its error text: redacted in stderr, the report, the
    # state and the journal (issue 18: with redaction off, the other token tests still passed,
    # as the token never reached a message there).
    def test_a_token_echoed_by_the_server_is_redacted_everywhere(self):
        self.write(EIGHT[:1])
        self.server.control(prompt_rules=[
            {"contains": "sword", "fate": "fail", "times": 5,
             "error": "invalid input for token " + TOKEN + " (check it)"}])
        r, report = self.build()
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid input for token [REDACTED]", r.stderr)
        self.assertIn("[REDACTED]", by_name(report)["icons/sword"]["error"])
        self.assert_token_nowhere(r.stdout, r.stderr)

    # A hostile server's text reaches the terminal escaped (issue 16): no clear-screen, no
    # window title, no carriage return faking a line.
    def test_escape_sequences_from_the_server_never_reach_the_terminal(self):
        self.write(EIGHT[:1])
        evil = ("\x1b[2J\x1b]0;pwned\x07\rkiln: 8 assets: 8 generated\x1b[8m\x9b31m"
                "\nkiln: a forged line")
        self.server.control(prompt_rules=[
            {"contains": "sword", "fate": "fail", "times": 5, "error": evil}])
        r, report = self.build("-v")
        self.assertEqual(r.returncode, 1)
        for stream in (r.stdout, r.stderr):
            self.assertNotIn("\x1b", stream)
            self.assertNotIn("\r", stream)
            self.assertNotIn("\x07", stream)
            self.assertNotIn("\x9b", stream)
            self.assertNotRegex(stream, "(?m)^kiln: a forged line")
        self.assertIn("\\x1b[2J\\x1b]0;pwned\\x07\\rkiln: 8 assets", r.stderr)
        # The report keeps the text (JSON escapes its own), on one line as every message.
        self.assertIn(evil.replace("\r", "\\r").replace("\n", "\\n"),
                      by_name(report)["icons/sword"]["error"])

    # A 429 asking for an hour fails that asset, not the backend's others (issue 16).
    def test_a_wait_hint_over_the_cap_fails_that_asset_only(self):
        self.write(EIGHT[:3])
        self.server.control(faults={"create": [{"status": 429, "retry_after": 3600}]})
        start = time.time()
        r, report = self.build("-j", "1")
        self.assertLess(time.time() - start, 30)
        self.assertEqual(r.returncode, 1, r.stderr)
        statuses = sorted(a["status"] for a in report["assets"])
        self.assertEqual(statuses, ["failed", "generated", "generated"])
        failed = [a for a in report["assets"] if a["status"] == "failed"][0]
        self.assertIn("asks to wait 3600 s, more than its max_retry_after_s (300)",
                      failed["error"])

    def test_timeout_cancels_the_prediction_then_tries_again(self):
        self.write(EIGHT[:1], "timeout_s = 5\nsync_wait_s = 1")
        self.server.control(prompt_rules=[{"contains": "sword", "fate": "slow", "times": 1}])
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["cancels"]), 1)
        self.assertEqual(stats["cancels"][0], stats["creates"][0]["id"])
        self.assertEqual(len(stats["creates"]), 2)
        self.assertIn("did not finish within 5 s", r.stderr)

    def test_ctrl_c_cancels_the_prediction_in_flight(self):
        self.write(EIGHT[:3], "sync_wait_s = 1")
        self.server.control(prompt_rules=[{"contains": "", "fate": "slow", "times": 9}])
        report = os.path.join(self.tmp, "report.json")
        proc = subprocess.Popen([KILN, "build", "-j", "1", "--report", report], cwd=self.tmp,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        # Interrupted once Kiln has recorded its prediction (the journal's "submitted" line,
        # written the moment the create's answer names it): then it must cancel it.
        deadline = time.time() + 20
        while True:
            try:
                with open(self.state_file("journal.jsonl")) as f:
                    submitted = any('"t":"submitted"' in line for line in f)
            except (AssertionError, FileNotFoundError):  # the state folder is not made yet
                submitted = False
            if submitted:
                break
            if time.time() > deadline:
                proc.kill()
                proc.communicate()
                self.fail("kiln never recorded a prediction")
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 130, err)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), 1, "nothing new starts after Ctrl-C")
        self.assertEqual(stats["cancels"], [stats["creates"][0]["id"]])
        with open(report) as f:
            statuses = [a["status"] for a in json.load(f)["assets"]]
        self.assertEqual(statuses, ["failed", "skipped", "skipped"])

    def test_sdxl_by_version_is_billed_per_second(self):
        assets = [("sdxl/castle", 640, 360, "png", f'model = "{SDXL}"\nnegative = "blurry"'),
                  ("sdxl/odd", 100, 75, "jpg", f'model = "{SDXL}"')]
        self.write(assets)
        self.server.control(predict_time_s=10.0)
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        for c in stats["creates"]:
            self.assertEqual(c["input"]["width"] % 8, 0)
            self.assertEqual(c["input"]["height"] % 8, 0)
        castle = [c for c in stats["creates"] if "castle" in c["input"]["prompt"]][0]
        self.assertEqual(castle["input"]["negative_prompt"], "blurry")
        for a in report["assets"]:
            self.assertAlmostEqual(a["cost_usd"], 10.0 * 0.000725)
        for asset in assets:
            self.assert_output(*asset[:4])

    def test_price_table_is_overridable(self):
        self.write(EIGHT[:2], 'prices = ["black-forest-labs/flux-schnell: 0.01 per image"]')
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertAlmostEqual(report["summary"]["cost_usd"], 0.02)
        self.write(EIGHT[:2], 'prices = ["black-forest-labs/flux-schnell: cheap"]')
        r = self.kiln("plan")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no price in dollars", r.stderr)

    # Replicate has no idempotency key: a create answered by anything but a prediction or a
    # definite refusal may have created one, billed. It is found and re-attached to, never paid
    # for twice; a definite refusal is not looked for.
    def assert_one_prediction_delivered(self, r, report, creates=1):
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), 1, "one prediction paid for")
        self.assertEqual(len(stats["create_requests"]), creates)
        asset = report["assets"][0]
        self.assertEqual(asset["status"], "generated")
        self.assertEqual(asset["remote_id"], stats["creates"][0]["id"])
        self.assertAlmostEqual(asset["cost_usd"], 0.003)
        self.assertAlmostEqual(report["summary"]["cost_usd"], 0.003)
        self.assert_output(*EIGHT[0])
        return stats

    def test_a_504_after_the_create_is_found_not_paid_again(self):
        self.write(EIGHT[:1])
        self.server.control(faults={"create": [{"status": 504, "after_create": True}]})
        r, report = self.build()
        stats = self.assert_one_prediction_delivered(r, report)
        self.assertEqual(stats["create_requests"][0]["status"], 504)
        self.assertEqual(stats["lists"], 1)
        self.assertIn("found its prediction " + stats["creates"][0]["id"], r.stderr)

    def test_a_502_and_a_500_after_the_create_are_found_not_paid_again(self):
        for status in (502, 500):
            with self.subTest(status=status):
                shutil.rmtree(os.path.join(self.tmp, "out"), ignore_errors=True)
                shutil.rmtree(os.path.join(self.tmp, "cache"), ignore_errors=True)
                self.server.stop()
                self.server = FakeReplicate()
                self.write(EIGHT[:1])
                self.server.control(faults={"create": [{"status": status, "after_create": True}]})
                r, report = self.build()
                self.assert_one_prediction_delivered(r, report)

    def test_a_2xx_answer_that_is_not_a_prediction_is_found_not_paid_again(self):
        self.write(EIGHT[:1])
        self.server.control(faults={"create": [{"garbage_after_create": True}]})
        r, report = self.build()
        stats = self.assert_one_prediction_delivered(r, report)
        self.assertEqual(stats["create_requests"][0]["status"], 201)
        self.assertEqual(stats["lists"], 1)

    def test_a_prediction_listed_late_is_found_by_the_second_look(self):
        self.write(EIGHT[:1])
        self.server.control(list_delay_s=1.0,
                            faults={"create": [{"status": 504, "after_create": True}]})
        r, report = self.build()
        stats = self.assert_one_prediction_delivered(r, report)
        self.assertEqual(stats["lists"], 2, "the first look misses, the second finds it")

    def test_a_500_before_creating_is_looked_for_twice_then_created_again(self):
        self.write(EIGHT[:1])
        self.server.control(faults={"create": [{"status": 500}]})
        r, report = self.build()
        stats = self.assert_one_prediction_delivered(r, report, creates=2)
        self.assertEqual(stats["lists"], 2)
        self.assertEqual([c["status"] for c in stats["create_requests"]], [500, 201])
        self.assertIn("not created", report["assets"][0]["attempts"][0]["error"])

    def test_a_throttled_create_created_nothing_and_is_not_looked_for(self):
        self.write(EIGHT[:1])
        self.server.control(faults={"create": [{"status": 429, "retry_after": 1}]})
        r, report = self.build()
        stats = self.assert_one_prediction_delivered(r, report, creates=2)
        self.assertEqual(stats["lists"], 0)

    def test_an_older_identical_prediction_is_not_taken_for_a_lost_create(self):
        # --force asks for a new image of an unchanged request: the previous run's prediction
        # (same model and input, outputs still there) must not be delivered again.
        self.write(EIGHT[:1])
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        # The search allows ~2 s for the Date header's whole seconds and clock differences.
        time.sleep(2.5)
        self.server.control(faults={"create": [{"status": 504}]})
        r, report = self.build("--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = self.server.stats()
        self.assertEqual(len(stats["creates"]), 2)
        first, second = stats["creates"]
        self.assertEqual(first["input"], second["input"])
        self.assertEqual(stats["lists"], 2)
        self.assertEqual(report["assets"][0]["remote_id"], second["id"])
        self.assertNotIn("found its prediction", r.stderr)


if __name__ == "__main__":
    unittest.main()
