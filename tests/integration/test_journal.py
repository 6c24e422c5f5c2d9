"""Never pay twice, never lose a paid image: the built kiln killed with SIGKILL at random moments,
held to a budget, and run twice at once on one output folder, against
tests/servers/fake_replicate.py, whose own counts say how many predictions were created.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE and KILN_FAKE_REPLICATE set; standard library only."""

import json
import os
import random
import signal
import struct
import subprocess
import time
import unittest
import zlib

from test_cli import KILN
from test_replicate import FakeReplicateCase, manifest

SUBJECTS = ["sword", "shield", "potion", "helmet", "bow", "arrow", "ring", "amulet", "scroll",
            "lantern", "axe", "hammer", "staff", "wand", "boots", "gloves", "cloak", "key",
            "chest", "map"]


def assets(n, size=96):
    return [(f"icons/{SUBJECTS[i % 20]}{i // 20}", size, size, "png") for i in range(n)]


def decode_png(path):
    """Decodes a PNG's pixel data in full (chunk CRCs, zlib stream, row count and length):
    (width, height). Raises on any damage."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, color = header[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    if len(raw) != height * (1 + width * channels * depth // 8):
        raise ValueError("pixel data of the wrong length")
    return width, height


class JournalCase(FakeReplicateCase):
    def write(self, items, project=""):
        text = manifest(self.server, items)
        text = text.replace('output_dir = "out"', 'output_dir = "out"\n' + project)
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(text)

    def start(self, *args):
        return subprocess.Popen([KILN, "build", *args], cwd=self.tmp, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_until(self, condition, timeout_s=20):
        """Polls the server's stats until `condition(stats)` holds; fails the test if it never
        does."""
        deadline = time.time() + timeout_s
        while not condition(self.server.stats()):
            if time.time() > deadline:
                self.fail("the server never reached the expected state")
            time.sleep(0.02)

    def wait_for_journal(self, condition, timeout_s=20):
        """Polls the journal until `condition(events)` holds for its complete lines (what a
        kill at that moment leaves); fails the test if it never does."""
        deadline = time.time() + timeout_s
        while True:
            try:
                with open(self.state_file("journal.jsonl")) as f:
                    events = [json.loads(line) for line in f if line.endswith("\n")]
            except (AssertionError, FileNotFoundError, ValueError):  # not made yet
                events = []
            if condition(events):
                return events
            if time.time() > deadline:
                self.fail("the journal never reached the expected state")
            time.sleep(0.02)

    def assert_no_temp_files(self):
        out = os.path.join(self.tmp, "out")
        left = [os.path.join(d, f) for d, _, files in os.walk(out) for f in files
                if ".kiln-tmp" in f]
        self.assertEqual(left, [])
        self.assertFalse(os.path.exists(os.path.join(out, ".kiln")))
        work = self.state_file("work")
        self.assertEqual([f for _, _, files in os.walk(work) for f in files], [])

    def assert_all_valid(self, items):
        for name, width, height, _ in items:
            self.assertEqual(decode_png(os.path.join(self.tmp, "out", name + ".png")),
                             (width, height), name)

    def creates_by_input(self):
        seen = {}
        for c in self.server.stats()["creates"]:
            key = json.dumps(c["input"], sort_keys=True)
            seen[key] = seen.get(key, 0) + 1
        return seen


class KillTest(JournalCase):
    # Must show 1: 20 kill -9 at random moments of a 40-asset run, then a final run: all 40
    # valid, and the server created exactly 40 predictions.
    def test_twenty_kills_then_a_final_run_create_each_prediction_once(self):
        items = assets(40)
        self.write(items)
        # Long enough that kills land in every stage: before a create is sent, while the
        # create waits for its (synchronous) answer, while downloading, while writing.
        self.server.control(latency_s=0.6)
        rng = random.Random(int(os.environ.get("KILN_KILL_SEED", "7")))
        moments = []
        for _ in range(20):
            proc = self.start("-j", "8", "-q")
            moment = rng.uniform(0.05, 1.6)
            time.sleep(moment)
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            moments.append(round(moment, 2))
        r = self.kiln("build", "-j", "8")
        self.assertEqual(r.returncode, 0, f"kills at {moments} s\n{r.stderr}")
        self.assert_all_valid(items)
        creates = self.creates_by_input()
        twice = {k: n for k, n in creates.items() if n > 1}
        self.assertEqual(twice, {}, f"created more than once (kills at {moments} s)")
        self.assertEqual(len(self.server.stats()["creates"]), 40, f"kills at {moments} s")
        self.assert_no_temp_files()
        # And a run after that pays for nothing.
        r = self.kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 40)

    def test_a_run_killed_while_creating_re_attaches_to_its_predictions(self):
        items = assets(6)
        self.write(items)
        # Long enough that the kill lands before any answer, even on a loaded machine under
        # the sanitizers (at 1.5 s, a slow poll once let answers and downloads through).
        self.server.control(latency_s=4.0)
        proc = self.start("-j", "6")
        self.wait_until(lambda stats: len(stats["creates"]) >= 6)
        proc.send_signal(signal.SIGKILL)  # every create sent, no answer received yet
        proc.communicate()
        self.assertEqual(len(self.server.stats()["creates"]), 6)
        journal = self.state_file("journal.jsonl")
        with open(journal, "rb") as f:
            before = f.read()
        plan = self.kiln("plan")
        self.assertEqual(plan.stdout.count("a killed run may have created its job"), 6,
                         plan.stdout)
        with open(journal, "rb") as f:
            self.assertEqual(f.read(), before)  # plan reads; only a build repairs
        r = self.kiln("build", "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 6, r.stderr)
        self.assertIn("a killed run left", r.stderr)
        self.assert_all_valid(items)
        self.assert_no_temp_files()

    def test_leftovers_of_a_crash_are_removed(self):
        items = assets(2)
        self.write(items)
        out = os.path.join(self.tmp, "out")
        os.makedirs(os.path.join(out, "icons"))
        os.makedirs(os.path.join(out, ".kiln", "work", "0123abcd"))
        for leftover in ("icons/sword0.png.kiln-tmp.00c0ffee00c0ffee",
                         ".kiln/state.jsonl.kiln-tmp.00c0ffee00c0ffef",
                         ".kiln/work/0123abcd/image.png"):
            with open(os.path.join(out, leftover), "wb") as f:
                f.write(b"half")
        # Files that only look like Kiln's temp files are someone else's (issue 16).
        theirs = ["docs/notes.kiln-tmp.backup", "src/main.kiln-tmp.c",
                  "icons/sword0.png.kiln-tmp.not-hex-digits!"]
        for name in theirs:
            os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
            with open(os.path.join(out, name), "w") as f:
                f.write("mine")
        r = self.kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in theirs:
            self.assertTrue(os.path.exists(os.path.join(out, name)), name)
            os.remove(os.path.join(out, name))
        self.assert_no_temp_files()
        self.assert_all_valid(items)


class BudgetTest(JournalCase):
    # Must show 2: a budget that fits 10 of 20 assets: exactly 10 made, exit 3 with the amount
    # needed; raise it and rerun: the other 10 only.
    def test_a_budget_for_ten_of_twenty_makes_ten_then_the_other_ten(self):
        items = assets(20)
        self.write(items, "budget_usd = 0.03")  # flux-schnell: $0.003 an image
        plan = json.loads(self.kiln("plan", "--json").stdout)
        self.assertAlmostEqual(plan["summary"]["predicted_cost_usd"], 0.06)
        self.server.control(latency_s=0.2)
        r = self.kiln("build", "-j", "8")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 10)
        self.assertIn("10 assets not made: the budget of $0.0300 is reached ($0.0300 spent); "
                      "the rest needs $0.0300 more", r.stderr)
        made = [n for n, *_ in items if os.path.exists(os.path.join(self.tmp, "out", n + ".png"))]
        self.assertEqual(len(made), 10)
        self.assert_no_temp_files()

        plan = json.loads(self.kiln("plan", "--json").stdout)
        self.assertAlmostEqual(plan["summary"]["predicted_cost_usd"], 0.03)
        self.assertEqual(plan["summary"]["generate"], 10)
        r = self.kiln("build", "-j", "8", "--budget", "0.03")  # the flag overrides budget_usd
        self.assertEqual(r.returncode, 0, r.stderr)
        creates = self.creates_by_input()
        self.assertEqual(len(self.server.stats()["creates"]), 20)
        self.assertEqual(set(creates.values()), {1})
        self.assert_all_valid(items)
        self.assertIn("spent $0.0300 (predicted $0.0300)", r.stdout)

    def test_a_killed_runs_spend_counts_against_the_next_runs_budget(self):
        items = assets(8)
        self.write(items)
        self.server.control(latency_s=1.0)
        proc = self.start("-j", "4")
        # Killed once the first four are collected and written (each journaled, fdatasync'd,
        # before the call returns); the next four are a second (the latency) from collection.
        self.wait_for_journal(lambda events: sum(e["t"] == "written" for e in events) >= 4)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        with open(self.state_file("journal.jsonl")) as f:
            events = [json.loads(line) for line in f]
        spent = sum(e["usd"] for e in events if e["t"] in ("downloaded", "spent"))
        written = len({e["name"] for e in events if e["t"] == "written"})
        self.assertGreater(spent, 0)
        self.assertLess(written, 8)
        # The rest needs $0.003 an asset on top of what the killed run spent: a cent's
        # hundredth less is refused, which it would not be if that spend were forgotten.
        needed = spent + 0.003 * (8 - written)
        r = self.kiln("build", "--budget", f"{needed - 0.0001:.6f}")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("the rest needs", r.stderr)
        self.assertIn(f"$0.{round(spent * 10000):04d} by the killed runs before it", r.stdout)
        # That run ended: the next one has its own budget, and makes the one asset left.
        r = self.kiln("build", "--budget", "0.003")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 8)
        self.assert_all_valid(items)


    def test_an_interrupted_runs_spend_counts_too(self):
        items = assets(16)  # some not started when Ctrl-C comes
        self.write(items)
        self.server.control(latency_s=1.0)
        proc = self.start("-j", "4")
        self.wait_for_journal(lambda events: any(e["t"] == "downloaded" for e in events))
        proc.send_signal(signal.SIGINT)  # Ctrl-C: nothing new starts
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 130, err)
        with open(self.state_file("journal.jsonl")) as f:
            events = [json.loads(line) for line in f]
        spent = sum(e["usd"] for e in events if e["t"] in ("downloaded", "spent"))
        self.assertGreater(spent, 0)
        r = self.kiln("build", "--budget", f"{spent:.6f}")  # nothing left for the rest
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(f"$0.{round(spent * 10000):04d} by the killed runs before it", r.stdout)


class EditedTest(JournalCase):
    def test_a_prompt_edited_during_the_run_fails_that_asset_only_and_loses_nothing(self):
        items = assets(6)
        self.write(items)
        self.server.control(latency_s=0.5)
        proc = self.start("-j", "1")
        self.wait_until(lambda stats: stats["downloads"] >= 1)
        # The last asset's prompt changes (not started with -j 1), and a comment is added.
        path = os.path.join(self.tmp, "assets.toml")
        with open(path) as f:
            text = f.read()
        last = items[-1][0]
        self.assertEqual(text.count(f'name = "{last}"'), 1)
        head, tail = text.split(f'name = "{last}"')
        tail = tail.replace('prompt = "', 'prompt = "a different ', 1)
        with open(path, "w") as f:
            f.write(head + f'name = "{last}"' + tail + "# edited while kiln runs\n")
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn(f"{last}: assets.toml changed during the run, and this asset with it: "
                      "run kiln again", out + err)
        self.assertEqual(len(self.server.stats()["creates"]), 5, err)  # the others were made
        r = self.kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 6)  # the first ones not again
        self.assert_all_valid(items)
        self.assert_no_temp_files()


class ConcurrentTest(JournalCase):
    # Must show 3: two `kiln build` at once on one output folder: nothing created twice,
    # nothing corrupted.
    def test_two_builds_at_once_wait_for_each_other(self):
        items = assets(12)
        self.write(items)
        self.server.control(latency_s=0.5)
        first = self.start("-j", "4")
        self.wait_until(lambda stats: stats["creates"])
        second = self.start("-j", "4")
        out1, err1 = first.communicate(timeout=120)
        out2, err2 = second.communicate(timeout=120)
        self.assertEqual(first.returncode, 0, err1)
        self.assertEqual(second.returncode, 0, err2)
        self.assertIn("is writing", err2)
        self.assertIn("waiting for it to finish", err2)
        self.assertIn("no work to do", out2)
        self.assertEqual(len(self.server.stats()["creates"]), 12)
        self.assert_all_valid(items)
        self.assert_no_temp_files()
        state = self.state_file("state.jsonl")
        with open(state) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 13)  # the header and one record per asset
        for line in lines:
            json.loads(line)

    def test_no_wait_refuses_with_exit_5(self):
        items = assets(4)
        self.write(items)
        self.server.control(latency_s=1.0)
        first = self.start()
        self.wait_until(lambda stats: stats["creates"])
        r = self.kiln("build", "--no-wait")
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn("another kiln build (pid ", r.stderr)
        self.assertIn("not waiting (--no-wait)", r.stderr)
        _, err = first.communicate(timeout=120)
        self.assertEqual(first.returncode, 0, err)
        self.assertEqual(len(self.server.stats()["creates"]), 4)


if __name__ == "__main__":
    unittest.main()
