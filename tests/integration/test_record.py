"""Never pay twice, never lose art (issue 15), end to end: the built kiln against the fake
Replicate server, counting its creates, at the edges real use hits first: a poisoned or
unwritable cache, two build trees on one cache, outputs that are no image, a fresh clone with
kiln.lock, an artist's edit, a backend option changed and reverted.

Run by ctest with KILN_EXE, KILN_TEST_IMAGE and KILN_FAKE_REPLICATE set; standard library only."""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import pixels
from test_cli import KILN, MANIFEST, by_name, image_size, state_folder
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


class RecordCase(FakeReplicateCase):
    def write(self, text):
        with open(os.path.join(self.tmp, "assets.toml"), "w") as f:
            f.write(text)

    def creates(self):
        return len(self.server.stats()["creates"])


class MoneyAtTheEdgesTest(RecordCase):

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

    # A decompression bomb (issue 16): refused from its header, never decoded, no new
    # prediction bought for it, and Kiln's memory stays small.
    def test_a_decompression_bomb_is_refused_without_decoding(self):
        import resource
        self.write(paid_manifest(self.server, ["icons/bomb", "icons/fine"]))
        self.server.control(prompt_rules=[{"contains": "icons/bomb", "fate": "bomb", "times": 9}])
        r, report = self.build()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertLessEqual(self.creates(), 2)  # one each
        bomb = by_name(report)["icons/bomb"]
        self.assertEqual((bomb["status"], bomb["error_category"]), ("failed", "permanent"))
        self.assertIn("23000x23000 pixels: larger than Kiln decodes", bomb["error"])
        self.assertEqual(by_name(report)["icons/fine"]["status"], "generated")
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        self.assertLess(peak_mib, 300)

    # Bombs just inside the pixel limit (8000x8000, a few hundred KB each) decode, but one at a
    # time: four at -j 4 cost about one image's memory, not four (issue 16). With a lower
    # [project] max_image_megapixels they are refused from their headers.
    def test_large_images_decode_one_at_a_time_and_the_limit_is_the_manifests(self):
        import resource
        names = ["icons/a", "icons/b", "icons/c", "icons/d"]
        self.write(paid_manifest(self.server, names))
        self.server.control(bomb_side=8000,
                            prompt_rules=[{"contains": "icons/", "fate": "bomb", "times": 4}])
        r, report = self.build("-j", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["generated"], 4)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        # One 8000x8000 decode holds two 244 MiB buffers (the decoder's and Kiln's), and a
        # decoded image lives on until it is fitted: measured 1.08 GiB; four decodes at once
        # (no gate) took 1.74 GiB.
        self.assertLess(peak_mib, 1400)
        with open(os.path.join(self.tmp, "assets.toml")) as f:
            text = f.read()
        self.write(text.replace("[project]\n", "[project]\nmax_image_megapixels = 16\n") +
                   '\n[[asset]]\nname = "icons/e"\ntype = "icon"\nprompt = "icons/e"\n')
        self.server.control(prompt_rules=[{"contains": "icons/e", "fate": "bomb", "times": 9}])
        r, report = self.build()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("8000x8000 pixels: larger than Kiln decodes (16384 a side, 16 megapixels",
                      by_name(report)["icons/e"]["error"])

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
        self.env["KILN_STATE_DIR"] = os.path.join(self.tmp, "state")

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


def read(path):
    with open(path, "rb") as f:
        return f.read()


def lock_entries(path):
    """kiln.lock as {name: text of its entry}."""
    entries, name = {}, None
    with open(path) as f:
        for line in f:
            if line.startswith("[assets."):
                name = json.loads(line.strip()[len("[assets."):-1])
                entries[name] = ""
            elif name is not None:
                entries[name] += line
    return entries


def tree_stamps(root):
    """{relative path: (mtime_ns, bytes)} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = (os.stat(p).st_mtime_ns, read(p))
    return out


class CloneTest(FakeReplicateCase):
    """Must show 1: a clone of a project with assets.toml, kiln.lock and the art committed
    builds nothing, pays nothing and rewrites no file, with an empty cache and no state."""

    def git(self, *args, cwd):
        r = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_clone_with_the_art_and_kiln_lock_pays_nothing(self):
        origin = os.path.join(self.tmp, "origin")
        os.makedirs(origin)
        names = ["icons/sword", "icons/shield", "icons/potion", "icons/helmet", "icons/bow",
                 "icons/ring"]
        with open(os.path.join(origin, "assets.toml"), "w") as f:
            f.write(paid_manifest(self.server, names))
        r = subprocess.run([KILN, "build"], cwd=origin, env=self.env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 6)
        entries = lock_entries(os.path.join(origin, "kiln.lock"))
        self.assertEqual(sorted(entries), sorted(names))
        for name in names:
            self.assertIn('backend = "replicate@', entries[name])
            self.assertIn("cost_usd = 0.003\npaid = true\n", entries[name])
        self.git("init", "-q", cwd=origin)
        self.git("add", "assets.toml", "kiln.lock", "out", cwd=origin)
        self.git("commit", "-q", "-m", "art", cwd=origin)
        clone = os.path.join(self.tmp, "clone")
        self.git("clone", "-q", origin, clone, cwd=self.tmp)
        time.sleep(0.01)
        env = dict(self.env, KILN_CACHE_DIR=os.path.join(self.tmp, "empty-cache"),
                   KILN_STATE_DIR=os.path.join(self.tmp, "other-state"))
        before = tree_stamps(clone)

        def kiln(*args):
            return subprocess.run([KILN, *args], cwd=clone, env=env, capture_output=True,
                                  text=True, timeout=120)
        plan = kiln("plan")
        self.assertEqual(plan.returncode, 0, plan.stderr)
        self.assertIn("0 to generate, 0 cached, 6 up to date", plan.stdout)
        self.assertEqual(plan.stdout.count("up to date by content"), 6, plan.stdout)
        r = kiln("build", "--report", "report.json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 6)  # none more
        with open(os.path.join(clone, "report.json")) as f:
            summary = json.load(f)["summary"]
        self.assertEqual((summary["up_to_date"], summary["generated"], summary["cached"]),
                         (6, 0, 0))
        os.remove(os.path.join(clone, "report.json"))
        self.assertEqual(tree_stamps(clone), before)  # no file rewritten, not even kiln.lock
        self.assertIn("no work to do (6 assets up to date)", kiln("build").stdout)
        self.assertIn("0 to generate, 0 cached, 6 up to date", kiln("plan").stdout)

        # `ninja clean` (art in the source tree is a byproduct) deletes the committed files: the
        # clone's first build kept their bytes in its cache, so they come back for free
        # (issue 17).
        os.remove(os.path.join(clone, "out", "icons", "ring.png"))
        r = kiln("build", "--report", "report.json")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(clone, "report.json")) as f:
            summary = json.load(f)["summary"]
        os.remove(os.path.join(clone, "report.json"))
        self.assertEqual((summary["cached"], summary["generated"]), (1, 0))
        self.assertEqual(len(self.server.stats()["creates"]), 6)
        self.assertEqual(read(os.path.join(clone, "out", "icons", "ring.png")),
                         before["out/icons/ring.png"][1])

        # CI's offline run replaces the art with placeholders, but the paid images are kept in
        # the cache first and kiln.lock still records them: going back costs nothing.
        r = kiln("build", "--backend", "placeholder")
        self.assertEqual(r.returncode, 0, r.stderr)
        sword = os.path.join(clone, "out", "icons", "sword.png")
        self.assertNotEqual(read(sword), before["out/icons/sword.png"][1])
        self.assertEqual(read(os.path.join(clone, "kiln.lock")), before["kiln.lock"][1])
        r = kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 6)
        self.assertEqual(read(sword), before["out/icons/sword.png"][1])


class LockTest(RecordCase):
    def lock(self):
        return os.path.join(self.tmp, "kiln.lock")

    # Must show 8, on the example game's manifest: a second build leaves kiln.lock
    # byte-identical; one changed prompt changes exactly one entry.
    def test_the_example_lock_is_stable_and_one_prompt_is_one_entry(self):
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "assets.toml")) as f:
            text = f.read()
        self.write(text.replace('output_dir = "generated"', 'output_dir = "out"'))
        self.assertEqual(self.kiln("build").returncode, 0)
        first = read(self.lock())
        stamp = os.stat(self.lock()).st_mtime_ns
        r = self.kiln("build")
        self.assertIn("no work to do", r.stdout)
        self.assertEqual(read(self.lock()), first)
        self.assertEqual(os.stat(self.lock()).st_mtime_ns, stamp)
        os.remove(os.path.join(self.tmp, "out", "icons", "sword.png"))
        self.assertEqual(self.kiln("build").returncode, 0)  # restored from the cache
        self.assertEqual(read(self.lock()), first)
        before = lock_entries(self.lock())
        self.assertEqual(len(before), 7)
        prompt = text.split('name = "icons/shield"')[1].split("prompt = ")[1].split("\n")[0]
        self.write(self.read_manifest().replace(prompt, prompt[:-1] + ', studded"'))
        self.assertEqual(self.kiln("build").returncode, 0)
        after = lock_entries(self.lock())
        self.assertEqual(sorted(after), sorted(before))
        self.assertEqual([n for n in after if after[n] != before[n]], ["icons/shield"])

    def read_manifest(self):
        with open(os.path.join(self.tmp, "assets.toml")) as f:
            return f.read()

    # A placeholder run (CI's --backend) and an --only run leave the paid entries as they are.
    def test_a_placeholder_or_only_run_does_not_rewrite_paid_entries(self):
        self.write(paid_manifest(self.server, ["icons/a", "icons/b"]))
        self.assertEqual(self.kiln("build").returncode, 0)
        paid = read(self.lock())
        r = self.kiln("build", "--backend", "placeholder")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(self.lock()), paid)
        self.write(paid_manifest(self.server, ["icons/a", "icons/b"]).replace(
            '"icons/a, a game icon"', '"icons/a, a golden game icon"'))
        r = self.kiln("build", "--only", "icons/a")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = lock_entries(self.lock())
        self.assertEqual(after["icons/b"], lock_entries_of(paid)["icons/b"])
        self.assertNotEqual(after["icons/a"], lock_entries_of(paid)["icons/a"])
        self.assertEqual(self.creates(), 3)

    # Must show 5: a hand-edited output survives three builds byte for byte; `kiln adopt`
    # makes the next build up to date with it; --force saves the edit and says where.
    def test_an_artists_edit_is_kept_adopted_and_saved_before_force(self):
        self.write(paid_manifest(self.server, ["icons/sword", "icons/shield"]))
        self.assertEqual(self.kiln("build").returncode, 0)
        sword = os.path.join(self.tmp, "out", "icons", "sword.png")
        subprocess.run([os.environ["KILN_TEST_IMAGE"], "png", "64", "64", "77", sword],
                       check=True)  # the artist's retouched icon: a valid 64x64 PNG
        edit = read(sword)
        for _ in range(3):
            r, report = self.build()
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(by_name(report)["icons/sword"]["status"], "kept")
            self.assertIn("icons/sword: edited by hand: kept", r.stderr)
            self.assertEqual(read(sword), edit)
        plan = self.kiln("plan")
        self.assertRegex(plan.stdout, r"kept +icons/sword +edited by hand")
        self.assertEqual(self.creates(), 2)

        r = self.kiln("adopt", "icons/sword")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("adopted icons/sword", r.stdout)
        self.assertIn("adopted = true", lock_entries(self.lock())["icons/sword"])
        r = self.kiln("build")
        self.assertIn("no work to do", r.stdout)
        # A fresh clone (no state, no cache) with the adopted file and the lock: up to date.
        env = dict(self.env, KILN_CACHE_DIR=os.path.join(self.tmp, "c2"),
                   KILN_STATE_DIR=os.path.join(self.tmp, "s2"))
        self.assertIn("2 up to date", self.kiln("plan", env=env).stdout)
        self.assertEqual(read(sword), edit)

        # Edited again, then replaced on purpose: the edit is saved first, and where is said.
        subprocess.run([os.environ["KILN_TEST_IMAGE"], "png", "64", "64", "78", sword],
                       check=True)
        second_edit = read(sword)
        r = self.kiln("build", "--force", "--only", "icons/sword")
        self.assertEqual(r.returncode, 0, r.stderr)
        saved = [line for line in r.stderr.splitlines() if "your edit of" in line]
        self.assertEqual(len(saved), 1, r.stderr)
        path = saved[0].split(" is saved as ")[1].split(" before")[0]
        self.assertEqual(read(path), second_edit)
        self.assertNotEqual(read(sword), second_edit)
        self.assertEqual(self.creates(), 3)  # --force asks the model again
        self.assertNotIn("adopted", lock_entries(self.lock())["icons/sword"])

        # An adopted file is an edit too: --force saves it before replacing it.
        subprocess.run([os.environ["KILN_TEST_IMAGE"], "png", "64", "64", "79", sword],
                       check=True)
        adopted = read(sword)
        self.assertEqual(self.kiln("adopt", "icons/sword").returncode, 0)
        r = self.kiln("build", "--force", "--only", "icons/sword")
        self.assertEqual(r.returncode, 0, r.stderr)
        path = r.stderr.split(" is saved as ")[1].split(" before")[0]
        self.assertEqual(read(path), adopted)
        forced = read(sword)
        self.assertNotIn("adopted", lock_entries(self.lock())["icons/sword"])  # replaced
        os.remove(sword)
        self.assertEqual(self.kiln("build").returncode, 0)
        self.assertEqual(read(sword), forced)  # the forced image, not the adopted one

    # An output that is no readable image of its size (cut short, emptied, a Git LFS pointer
    # of a clone without git-lfs) is nobody's art: restored from the cache, exit 0.
    def test_a_broken_output_is_restored_not_kept_as_an_edit(self):
        self.write(paid_manifest(self.server, ["icons/a", "icons/b", "icons/c"]))
        self.assertEqual(self.kiln("build").returncode, 0)
        out = os.path.join(self.tmp, "out", "icons")
        good = {n: read(os.path.join(out, n + ".png")) for n in "abc"}
        with open(os.path.join(out, "a.png"), "wb") as f:
            f.write(good["a"][:1000])
        open(os.path.join(out, "b.png"), "wb").close()
        with open(os.path.join(out, "c.png"), "w") as f:
            f.write("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 4242\n"
                    % ("0" * 64))
        plan = self.kiln("plan").stdout
        self.assertEqual(plan.count("output is not a readable 64x64 png image"), 3, plan)
        r, report = self.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["cached"], 3)
        self.assertEqual(report["summary"]["kept"], 0)
        for n in "abc":
            self.assertEqual(read(os.path.join(out, n + ".png")), good[n])
        self.assertEqual(self.creates(), 3)

    # A cache entry pointing at other bytes than the ones kiln.lock records for the same
    # request (another image of the cache, say) does not replace the recorded art.
    def test_the_bytes_kiln_lock_records_win_over_a_cache_entry_pointing_elsewhere(self):
        self.write(paid_manifest(self.server, ["icons/sword", "icons/shield"]))
        self.assertEqual(self.kiln("build").returncode, 0)
        out = os.path.join(self.tmp, "out", "icons")
        sword, shield = read(os.path.join(out, "sword.png")), read(os.path.join(out, "shield.png"))
        entries = lock_entries(self.lock())
        fp = entries["icons/sword"].split('fingerprint = "')[1].split('"')[0]
        shield_sha = entries["icons/shield"].split('sha256 = "')[1].split('"')[0]
        (entry,) = glob.glob(os.path.join(self.tmp, "cache", "ac", "*", fp + ".png"))
        with open(entry) as f:
            fields = f.read().split(" ", 1)
        with open(entry, "w") as f:
            f.write(shield_sha + " " + fields[1].replace(str(len(sword)), str(len(shield))))
        os.remove(os.path.join(out, "sword.png"))
        r = self.kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(os.path.join(out, "sword.png")), sword)
        self.assertEqual(lock_entries(self.lock()), entries)
        self.assertEqual(self.creates(), 2)

    # A changed prompt replaces an edited output, saving the edit first.
    def test_a_changed_fingerprint_saves_the_edit_before_replacing_it(self):
        self.write(paid_manifest(self.server, ["icons/sword"]))
        self.assertEqual(self.kiln("build").returncode, 0)
        sword = os.path.join(self.tmp, "out", "icons", "sword.png")
        subprocess.run([os.environ["KILN_TEST_IMAGE"], "png", "64", "64", "77", sword],
                       check=True)
        edit = read(sword)
        self.write(self.read_manifest().replace("a game icon", "a shiny game icon"))
        r = self.kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        path = r.stderr.split(" is saved as ")[1].split(" before")[0]
        self.assertEqual(read(path), edit)
        self.assertNotEqual(read(sword), edit)


def lock_entries_of(data):
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return lock_entries(f.name)


class CaptionTest(unittest.TestCase):
    """Must show 3: a placeholder option that shapes the image is in the fingerprint: changed,
    the asset is made again; reverted, it comes from the cache; --force then revert never
    installs the wrong image."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-caption-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def project(self, name):
        root = os.path.join(self.tmp, name)
        os.makedirs(root)
        env = {k: v for k, v in os.environ.items() if k != "KILN_PLUGIN_PATH"}
        env["KILN_CACHE_DIR"] = os.path.join(root, "cache")
        env["KILN_STATE_DIR"] = os.path.join(root, "state")

        def build(caption, *args):
            with open(os.path.join(root, "assets.toml"), "w") as f:
                f.write(MANIFEST + f"\n[backends.placeholder]\ncaption = {caption}\n")
            report = os.path.join(root, "report.json")
            r = subprocess.run([KILN, "build", "--report", report, *args], cwd=root, env=env,
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(report) as f:
                status = by_name(json.load(f))["icons/sword"]["status"]
            return status, read(os.path.join(root, "out", "icons", "sword.png"))
        return build

    def test_caption_changed_reverted_and_forced(self):
        with_caption = self.project("fresh-true")("true")[1]
        without = self.project("fresh-false")("false")[1]
        self.assertNotEqual(with_caption, without)
        build = self.project("p")
        self.assertEqual(build("true"), ("generated", with_caption))
        self.assertEqual(build("false"), ("generated", without))  # not "no work to do"
        self.assertEqual(build("true"), ("cached", with_caption))
        self.assertEqual(build("false", "--force"), ("generated", without))
        self.assertEqual(build("true"), ("cached", with_caption))  # never the forced image
        self.assertEqual(build("false"), ("cached", without))


if __name__ == "__main__":
    unittest.main()
