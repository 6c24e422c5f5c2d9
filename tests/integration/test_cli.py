"""The kiln command line end to end, as a user runs it: real manifests in a temp folder, the
built kiln binary and its built-in plugins, real image files checked byte by byte.

Run by ctest with KILN_EXE set; standard library only."""

import fcntl
import glob
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import time
import tempfile
import termios
import unittest
import zlib

import pixels

KILN = os.environ.get("KILN_EXE", "kiln")

MANIFEST = """\
[project]
output_dir = "out"

[defaults]
backend = "placeholder"
model = "black-forest-labs/flux-schnell"

[types.icon]
width = 64
height = 64
format = "png"
style = "flat icon"
negative = "text"
enhancers = ["style"]
validators = ["resolution", "format", "not-blank", "not-corrupt"]

[types.texture]
width = 96
height = 80
format = "webp"
validators = ["resolution", "format", "not-blank", "not-corrupt"]

[types.cover]
width = 160
height = 90
format = "jpg"

[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a steel sword"

[[asset]]
name = "icons/shield"
type = "icon"
prompt = "a wooden shield"

[[asset]]
name = "textures/grass"
type = "texture"
prompt = "meadow grass"

[[asset]]
name = "cover"
type = "cover"
prompt = "a castle at dusk"
"""

EXPECTED = {
    "icons/sword.png": ("png", 64, 64),
    "icons/shield.png": ("png", 64, 64),
    "textures/grass.webp": ("webp", 96, 80),
    "cover.jpg": ("jpg", 160, 90),
}


def png_size(data):
    """Width and height of a PNG after checking every chunk's CRC and inflating its pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        assert zlib.crc32(kind + body) == crc, "bad CRC in %r" % kind
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
        if kind == b"IEND":
            break
    w, h = size
    assert len(zlib.decompress(idat)) == h * (1 + 4 * w), "pixel data is incomplete"
    return size


def jpg_size(data):
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9", "not a whole JPEG"
    pos = 2
    while pos < len(data):
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xC3:
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return w, h
        pos += 2 + length
    raise AssertionError("no frame header")


def webp_size(data):
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", "not a WebP"
    assert struct.unpack("<I", data[4:8])[0] + 8 == len(data), "WebP is truncated"
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    raise AssertionError("unknown WebP chunk %r" % chunk)


def image_size(path, fmt):
    with open(path, "rb") as f:
        data = f.read()
    return {"png": png_size, "jpg": jpg_size, "webp": webp_size}[fmt](data)


class Project:
    def __init__(self, root, text=MANIFEST):
        self.root = root
        self.manifest = os.path.join(root, "assets.toml")
        self.out = os.path.join(root, "out")
        self.env = dict(os.environ, KILN_CACHE_DIR=os.path.join(root, "cache"),
                        KILN_STATE_DIR=os.path.join(root, "state"))
        self.env.pop("KILN_PLUGIN_PATH", None)
        self.write(text)

    def write(self, text):
        with open(self.manifest, "w") as f:
            f.write(text)

    def read(self):
        with open(self.manifest) as f:
            return f.read()

    def kiln(self, *args, env=None):
        return subprocess.run([KILN, *args], cwd=self.root, env=env or self.env,
                              capture_output=True, text=True, timeout=120)

    def kiln_on_a_terminal(self, *args, columns=100):
        """Runs kiln with stdout and stderr on a pseudo-terminal; returns (exit code, bytes)."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        p = subprocess.Popen([KILN, *args], cwd=self.root, env=dict(self.env, TERM="xterm"),
                             stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
        os.close(master)
        return p.wait(timeout=120), out

    def build(self, *args):
        report = os.path.join(self.root, "report.json")
        r = self.kiln("build", "--report", report, *args)
        with open(report) as f:
            return r, json.load(f)

    def mtimes(self):
        return {rel: os.stat(os.path.join(self.out, rel)).st_mtime_ns for rel in EXPECTED}


def state_folder(root):
    """The state folder Kiln keeps for <root>/out, with KILN_STATE_DIR=<root>/state."""
    found = glob.glob(os.path.join(root, "state", "out-*"))
    assert len(found) == 1, found
    return found[0]


def by_name(report):
    return {a["name"]: a for a in report["assets"]}


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-cli-")
        self.p = Project(self.tmp)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_outputs_valid(self):
        for rel, (fmt, w, h) in EXPECTED.items():
            self.assertEqual(image_size(os.path.join(self.p.out, rel), fmt), (w, h), rel)

    def test_build_rebuild_edit_revert(self):
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        s = report["summary"]
        self.assertEqual((s["total"], s["generated"], s["failed"]), (4, 4, 0))
        self.assert_outputs_valid()
        for a in report["assets"]:
            self.assertEqual(a["status"], "generated")
            self.assertEqual(len(a["fingerprint"]), 64)
            self.assertEqual(len(a["attempts"]), 1)
            self.assertEqual(a["backend"], "placeholder")
            self.assertIsNone(a["error"])
            self.assertTrue(os.path.isabs(a["output"]))
        self.assertEqual(by_name(report)["icons/sword"]["prompt"], "a steel sword, flat icon")
        before = self.p.mtimes()

        # Second run: nothing to do, nothing touched.
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["generated"], 0)
        self.assertEqual(report["summary"]["up_to_date"], 4)
        self.assertTrue(all(a["status"] == "up_to_date" for a in report["assets"]))
        self.assertIn("no work to do", r.stdout)
        self.assertEqual(self.p.mtimes(), before)

        # Edit one prompt: exactly that asset is generated, the others stay untouched.
        original = self.p.read()
        self.p.write(original.replace("a wooden shield", "an iron shield"))
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["generated"], 1)
        shield = by_name(report)["icons/shield"]
        self.assertEqual((shield["status"], shield["reason"]), ("generated", "prompt changed"))
        after = self.p.mtimes()
        self.assertNotEqual(after.pop("icons/shield.png"), before["icons/shield.png"])
        self.assertEqual(after, {k: v for k, v in before.items() if k != "icons/shield.png"})

        # Revert: the old image comes back from the cache, no backend call.
        self.p.write(original)
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        s = report["summary"]
        self.assertEqual((s["generated"], s["cached"], s["up_to_date"]), (0, 1, 3))
        shield = by_name(report)["icons/shield"]
        self.assertEqual(shield["status"], "cached")
        self.assertEqual(shield["attempts"], [])
        self.assert_outputs_valid()

    def test_comment_and_formatting_edits_change_nothing(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        before = self.p.mtimes()
        edited = "# art for the game\n" + self.p.read().replace(
            'prompt = "a steel sword"', "prompt   =   'a steel sword'   # the hero's")
        self.p.write(edited)
        r, report = self.p.build()
        self.assertEqual(report["summary"]["up_to_date"], 4, r.stdout)
        self.assertEqual(self.p.mtimes(), before)

    def test_deleted_outputs_come_back_from_the_cache_and_edited_ones_are_kept(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        os.remove(os.path.join(self.p.out, "cover.jpg"))
        sword = os.path.join(self.p.out, "icons/sword.png")
        edit = pixels.write_png(sword, 64, 64)
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        assets = by_name(report)
        self.assertEqual(assets["cover"]["status"], "cached")
        self.assertEqual(assets["cover"]["reason"], "output missing; in cache")
        self.assertEqual(assets["icons/sword"]["status"], "kept")
        self.assertIn("edited by hand: kept", assets["icons/sword"]["reason"])
        self.assertIn("icons/sword: edited by hand: kept", r.stderr)
        self.assertEqual(report["summary"]["generated"], 0)
        self.assertEqual(report["summary"]["kept"], 1)
        with open(sword, "rb") as f:
            self.assertEqual(f.read(), edit)

    def test_a_repeated_build_answers_from_its_record_and_notices_every_change(self):
        def build():
            r = self.p.kiln("build")
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout
        build()
        records = os.path.join(self.tmp, "cache", "noop")
        self.assertEqual(len(os.listdir(records)), 1)
        self.assertIn("no work to do (4 assets up to date)", build())
        os.remove(os.path.join(self.p.out, "cover.jpg"))
        self.assertIn("cached cover (output missing", build())
        self.assertIn("no work to do", build())
        self.p.write(self.p.read().replace("a steel sword", "a bronze sword"))
        self.assertIn("generated icons/sword (prompt changed", build())
        self.assertIn("no work to do", build())
        # A failed run leaves no record: the next run checks everything again.
        strict = "\n[validators.not-blank]\nmin_stddev = 250.0\n"
        self.p.write(self.p.read() + strict)
        self.assertEqual(self.p.kiln("build", "--force").returncode, 1)
        self.assertEqual(os.listdir(records), [])
        self.p.write(self.p.read().replace(strict, ""))
        build()
        self.assertEqual(len(os.listdir(records)), 1)
        self.assert_outputs_valid()

    def test_plan_predicts_without_writing(self):
        r = self.p.kiln("plan", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        plan = json.loads(r.stdout)
        self.assertEqual(plan["summary"]["generate"], 4)
        self.assertEqual({a["reason"] for a in plan["assets"]}, {"new"})
        self.assertFalse(os.path.exists(self.p.out))
        self.assertEqual(self.p.build()[0].returncode, 0)
        self.p.write(self.p.read().replace("height = 80", "height = 81"))
        plan = json.loads(self.p.kiln("plan", "--json").stdout)
        grass = [a for a in plan["assets"] if a["name"] == "textures/grass"][0]
        self.assertEqual((grass["action"], grass["reason"]), ("generate", "size changed"))
        human = self.p.kiln("plan").stdout
        self.assertIn("1 to generate, 0 cached, 3 up to date; predicted cost $0.00", human)

    def test_only_and_force(self):
        r, report = self.p.build("--only", "icons/*")
        self.assertEqual(report["summary"]["total"], 2)
        self.assertFalse(os.path.exists(os.path.join(self.p.out, "cover.jpg")))
        r, report = self.p.build("--only", "cover", "--force")
        self.assertEqual(by_name(report)["cover"]["reason"], "forced")
        r = self.p.kiln("build", "--only", "icons/swrd")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--only 'icons/swrd' matches no asset of assets.toml (did you mean "
                      "'icons/sword'?)", r.stderr)

    def test_outputs_lists_absolute_paths_in_manifest_order(self):
        r = self.p.kiln("outputs", "-m", self.p.manifest)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(),
                         [os.path.join(self.p.out, rel) for rel in EXPECTED])

    def test_malformed_manifests_exit_2_with_location_and_write_nothing(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        before = self.p.mtimes()
        good = self.p.read()
        cases = {
            "wrong type": (good.replace("width = 64", 'width = "64"'),
                           'assets.toml:9:9: width must be an integer, not a string'),
            "unknown key": (good.replace('prompt = "a steel sword"', 'promt = "a steel sword"'),
                            "assets.toml:31:1: unknown key 'promt' in [[asset]] "
                            "(did you mean 'prompt'?)"),
            "dot-dot": (good.replace('name = "cover"', 'name = "../cover"'),
                        "assets.toml:44:8: asset name '../cover' escapes output_dir"),
            "duplicate": (good.replace('name = "icons/shield"', 'name = "icons/sword"'),
                          "assets.toml:34:8: duplicate asset name 'icons/sword' "
                          "(first declared at assets.toml:29)"),
            "unknown plugin": (good.replace('enhancers = ["style"]', 'enhancers = ["styel"]'),
                               "assets.toml:14:14: unknown enhancer 'styel' "
                               "(did you mean 'style'?)"),
            # Names that collide on disk, or would in an atlas or an engine's resource tree.
            "case": (good.replace('name = "icons/shield"', 'name = "Icons/Sword"'),
                     "assets.toml:34:8: asset name 'Icons/Sword' is the same as 'icons/sword' "
                     "(line 29) but for case"),
            "file and folder": (good + '\n[[asset]]\nname = "cover.jpg/back"\ntype = "cover"\n'
                                'prompt = "the back cover"\n',
                                "assets.toml:49:8: asset name 'cover.jpg/back' needs a folder "
                                "'cover.jpg' where asset 'cover' (line 44) writes its file"),
            "folder of another": (good + '\n[[asset]]\nname = "cover/back"\ntype = "cover"\n'
                                  'prompt = "the back cover"\n',
                                  "assets.toml:49:8: asset name 'cover/back' is inside 'cover', "
                                  "which is asset 'cover' (line 44)"),
        }
        for what, (text, message) in cases.items():
            with self.subTest(what):
                self.p.write(text)
                for command in ("build", "plan"):
                    r = self.p.kiln(command)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn(message, r.stderr)
                    self.assertIn("    ^", r.stderr)
                self.assertEqual(self.p.mtimes(), before)
        # A broken manifest on a fresh project creates no output folder at all.
        fresh = Project(tempfile.mkdtemp(dir=self.tmp), good.replace("width = 64", "width = -1"))
        self.assertEqual(fresh.kiln("build").returncode, 2)
        self.assertFalse(os.path.exists(fresh.out))

    def test_plugins_lists_builtins_and_refuses_another_abi(self):
        r = self.p.kiln("plugins")
        self.assertEqual(r.returncode, 0, r.stderr)
        for kind, plugin_id in [("backend", "placeholder"), ("enhancer", "style"),
                                ("validator", "resolution"), ("validator", "format"),
                                ("validator", "not-blank"), ("validator", "not-corrupt")]:
            self.assertRegex(r.stdout, r"(?m)^%s +%s +1\.\d\.\d +1\.1 +/\S+\.so$" % (kind, plugin_id))
        # A library of another major ABI on the path (issue 18): listed as broken with why; a
        # build whose manifest does not name it goes on; one that names it fails, saying why.
        wrong = os.environ["KILN_WRONG_ABI_DIR"]
        env = dict(self.p.env, KILN_PLUGIN_PATH=wrong)
        path = os.path.join(wrong, "kiln-fixture-wrong-abi.so")
        why = "plugin '%s' was built for Kiln plugin ABI 2, this kiln supports 1" % path
        r = self.p.kiln("plugins", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^broken +wrong-abi +- +- +%s$" % re.escape(path))
        self.assertIn("\n    " + why + "\n", r.stdout)
        r = self.p.kiln("build", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.p.write(self.p.read().replace('validators = ["resolution"',
                                           'validators = ["wrong-abi", "resolution"'))
        r = self.p.kiln("build", env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("unknown validator 'wrong-abi': " + why, r.stderr)

    # A plugin that crashes in its entry point is named before Kiln dies of it; -v says what
    # is being loaded (issue 16).
    def test_a_plugin_crashing_at_load_is_named(self):
        crash = os.environ["KILN_CRASH_DIR"]
        env = dict(self.p.env, KILN_PLUGIN_PATH=crash)
        path = os.path.join(crash, "kiln-fixture-crash-entry.so")
        for command in (["plugins"], ["build", "-v"]):
            r = self.p.kiln(*command, env=env)
            self.assertEqual(r.returncode, -signal.SIGSEGV, r.stderr)
            self.assertIn("kiln: error: fatal signal SIGSEGV in plugin %s (during load)" % path,
                          r.stderr)
        self.assertIn("loading %s" % path, r.stderr)

    # A plugin that ends the process from its constructor cannot make Kiln exit 0 with the
    # work undone: Kiln's own exit functions name it and exit 2 (issue 16).
    def test_a_plugin_calling_exit_cannot_end_kiln_with_success(self):
        folder = os.environ["KILN_EXIT_DIR"]
        path = os.path.join(folder, "kiln-fixture-exit-entry.so")
        for how in ("_exit", "exit"):
            env = dict(self.p.env, KILN_PLUGIN_PATH=folder, KILN_FIXTURE_EXIT=how)
            for command in (["plugins"], ["build"]):
                r = self.p.kiln(*command, env=env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("kiln: error: plugin %s (during load) called %s(0) before Kiln "
                              "finished; stopping with exit code 2" % (path, how), r.stderr)
        self.assertFalse(os.path.exists(self.p.out))

    # A validator that keeps its Context logs from validate() (issue 18): the message arrives,
    # tagged; under the sanitized suite (ASan) nothing reads freed memory. An option read after
    # the constructor fails that asset with a message saying so, not a crash.
    def test_a_validator_keeping_its_context_logs_from_validate(self):
        folder = os.environ["KILN_KEEPS_CONTEXT_DIR"]
        env = dict(self.p.env, KILN_PLUGIN_PATH=folder)
        self.p.write(self.p.read().replace('validators = ["resolution"',
                                           'validators = ["keeps-context", "resolution"'))
        r = self.p.kiln("build", "-v", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("checking icons/sword from validate()", r.stderr)
        self.p.write(self.p.read().replace('name = "icons/sword"\ntype = "icon"\nprompt = "a steel '
                                           'sword"', 'name = "late"\ntype = "icon"\nprompt = "x"'))
        r = self.p.kiln("build", env=env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("option 'word' read after the constructor: options are read there", r.stderr)
        self.assertIn("validator 'keeps-context' threw in validate() (a bug in the plugin", r.stderr)

    def test_a_plugin_folder_from_the_manifest_is_searched(self):
        solid = os.environ["KILN_SOLID_DIR"]
        text = MANIFEST.replace('output_dir = "out"',
                                'output_dir = "out"\n\n[plugins]\npaths = ["%s"]\n\n'
                                '[backends.solid]\nlabel = "x"\ncost_usd = 0.25' % solid)
        self.p.write(text)
        r = self.p.kiln("plugins", "-m", "assets.toml")
        self.assertIn("solid", r.stdout)
        r = self.p.kiln("plan", "--backend", "solid")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("predicted cost $1.00", r.stdout)
        # The solid backend draws one flat colour: not-blank must reject its icons.
        r, report = self.p.build("--backend", "solid")
        self.assertEqual(r.returncode, 1)
        sword = by_name(report)["icons/sword"]
        self.assertEqual(sword["status"], "failed")
        self.assertEqual(sword["error_category"], "validation")
        self.assertIn("validator 'not-blank' rejected the image: image is blank", sword["error"])
        self.assertIn("icons/sword: validator 'not-blank' rejected the image", r.stderr)
        self.assertEqual(by_name(report)["cover"]["status"], "generated")
        self.p.write(text.replace('paths = ["%s"]' % solid, 'paths = ["no/such/dir"]'))
        r = self.p.kiln("build")
        self.assertEqual(r.returncode, 2)
        self.assertIn("plugin folder '%s' does not exist"
                      % os.path.join(self.tmp, "no/such/dir"), r.stderr)

    def test_identical_requests_are_paid_once(self):
        solid = os.environ["KILN_SOLID_DIR"]
        twin = '\n[[asset]]\nname = "cover_copy"\ntype = "cover"\nprompt = "a castle at dusk"\n'
        self.p.write(MANIFEST.replace('output_dir = "out"',
                                      'output_dir = "out"\n[plugins]\npaths = ["%s"]\n'
                                      '[backends.solid]\nlabel = "x"\ncost_usd = 0.25' % solid)
                     + twin)
        plan = json.loads(self.p.kiln("plan", "--json", "--only", "cover*",
                                      "--backend", "solid").stdout)
        self.assertEqual(plan["summary"]["predicted_cost_usd"], 0.25)
        r, report = self.p.build("--only", "cover*", "--backend", "solid")
        self.assertEqual(r.returncode, 0, r.stderr)
        assets = by_name(report)
        self.assertEqual(assets["cover"]["fingerprint"], assets["cover_copy"]["fingerprint"])
        self.assertEqual((assets["cover"]["status"], len(assets["cover"]["attempts"])), ("generated", 1))
        self.assertEqual((assets["cover_copy"]["status"], assets["cover_copy"]["attempts"]),
                         ("cached", []))
        self.assertEqual(assets["cover_copy"]["reason"], "new; same image as cover")
        self.assertEqual(report["summary"]["cost_usd"], 0.25)
        with open(os.path.join(self.p.out, "cover.jpg"), "rb") as a, \
                open(os.path.join(self.p.out, "cover_copy.jpg"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_removed_assets_lose_their_files_unless_edited_and_leave_the_state(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        self.p.write(self.p.read().replace('name = "cover"', 'name = "cover2"')
                                  .replace('name = "icons/shield"', 'name = "icons/buckler"'))
        # An artist's edit: kept even though no longer declared.
        pixels.write_png(os.path.join(self.p.out, "icons/shield.png"), 64, 64)
        plan = self.p.kiln("plan")
        self.assertRegex(plan.stdout, r"remove +cover +no longer declared")
        self.assertRegex(plan.stdout, r"kept +icons/shield +no longer declared; edited by hand")
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(by_name(report)["cover2"]["status"], "cached")  # same request
        self.assertEqual(report["summary"]["removed"], 1)
        self.assertFalse(os.path.exists(os.path.join(self.p.out, "cover.jpg")))
        self.assertTrue(os.path.exists(os.path.join(self.p.out, "icons/shield.png")))
        self.assertIn("icons/shield is no longer declared, but this one was edited by hand",
                      r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.p.out, ".kiln")))
        with open(os.path.join(state_folder(self.tmp), "state.jsonl")) as f:
            lines = f.read().splitlines()
        self.assertEqual(json.loads(lines[0]), {"kiln_state": 2})
        # The edited file's record stays, so later plans still name it.
        self.assertEqual(sorted(json.loads(line)["name"] for line in lines[1:]),
                         ["cover2", "icons/buckler", "icons/shield", "icons/sword",
                          "textures/grass"])
        self.assertRegex(self.p.kiln("plan").stdout,
                         r"kept +icons/shield +no longer declared; edited by hand")

    def test_progress_updates_one_line_on_a_terminal_and_prints_lines_in_a_pipe(self):
        n = len(EXPECTED)
        rc, out = self.p.kiln_on_a_terminal("build", columns=70)
        self.assertEqual(rc, 0, out)
        text = out.decode()
        # One line redrawn in place: carriage return, the status, erase to the end of the line.
        frames = re.findall(r"\r(\[\d+/\d+\][^\r\n]*?)\x1b\[K", text)
        self.assertGreaterEqual(len(frames), n, text)
        for frame in frames:
            self.assertRegex(frame, r"^\[\d+/%d\] .* · \d+ running · .*\$0\.00" % n)
            self.assertLessEqual(len(frame) - frame.count("·"), 69, frame)  # never wraps
        self.assertTrue(frames[-1].startswith("[%d/%d] " % (n, n)), frames[-1])
        self.assertTrue(any("ETA" in f for f in frames), frames)
        # The finished status stays; no per-asset lines scroll by; then the summary.
        self.assertNotRegex(text, r"(^|\n)\[\d+/\d+\] generated")
        self.assertRegex(text, r"\x1b\[K\r?\nkiln: %d assets: %d generated" % (n, n))

        # Piped (CI): a plain line per asset, no escape codes.
        r = self.p.kiln("build", "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("\x1b", r.stdout + r.stderr)
        self.assertNotIn("\r", r.stdout)
        done = re.findall(r"^\[(\d+)/%d\] (?:generated|cached) (\S+)" % n, r.stdout, re.M)
        self.assertEqual(sorted(int(k) for k, _ in done), list(range(1, n + 1)), r.stdout)
        self.assertEqual(sorted(name for _, name in done),
                         sorted(rel.rsplit(".", 1)[0] for rel in EXPECTED))
        # -q: errors only; -v on a terminal: a line per asset above the status line.
        r = self.p.kiln("build", "--force", "-q")
        self.assertEqual((r.returncode, r.stdout), (0, ""))
        rc, out = self.p.kiln_on_a_terminal("build", "--force", "-v")
        self.assertEqual(rc, 0, out)
        self.assertEqual(len(re.findall(r"\r\n?\x1b\[K\[\d+/%d\] generated " % n, out.decode())),
                         n, out)

    def test_help_and_usage_errors(self):
        for command in ("build", "plan", "outputs", "plugins"):
            r = self.p.kiln(command, "--help")
            self.assertEqual(r.returncode, 0)
            self.assertIn("Example:", r.stdout)
        r = self.p.kiln("biuld")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'biuld' (did you mean 'build'?)", r.stderr)
        r = self.p.kiln("build", "--jobz", "3")
        self.assertEqual(r.returncode, 2)
        self.assertIn("Try 'kiln build --help'", r.stderr)
        self.assertRegex(self.p.kiln("--version").stdout, r"^kiln \d+\.\d+\.\d+ \(plugin ABI 1\.1\)")

    def test_a_comment_appended_to_the_manifest_during_a_build_fails_no_asset(self):
        n = 240
        head = MANIFEST.split("[[asset]]")[0]
        assets = "".join('\n[[asset]]\nname = "icons/i%03d"\ntype = "icon"\nprompt = "icon %d"\n'
                         % (i, i) for i in range(n))
        self.p.write(head + assets)
        report = os.path.join(self.tmp, "report.json")
        proc = subprocess.Popen([KILN, "build", "-j", "2", "--report", report], cwd=self.tmp,
                                env=self.p.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            first = proc.stdout.readline()  # the first asset is done: the others are under way
            self.assertRegex(first, r"^\[1/%d\] " % n)
            with open(self.p.manifest, "a") as f:
                f.write("# edited during the build\n")
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err + out[-2000:])
        with open(report) as f:
            s = json.load(f)["summary"]
        self.assertEqual((s["total"], s["generated"], s["failed"]), (n, n, 0), err)
        self.assertEqual(image_size(os.path.join(self.p.out, "icons/i239.png"), "png"), (64, 64))
        # Nothing changed for any asset: the next build has no work.
        r, again = self.p.build()
        self.assertEqual(again["summary"]["up_to_date"], n, r.stdout)


    def test_a_second_manifest_writing_into_the_same_folder_exits_2_naming_both(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        other = os.path.join(self.tmp, "ui.toml")
        with open(other, "w") as f:
            f.write(MANIFEST.replace('name = "cover"', 'name = "ui/cover"'))
        before = self.p.mtimes()
        for command in ("build", "plan"):
            r = self.p.kiln(command, "-m", "ui.toml")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("ui.toml:2:14: the output folder %s holds the art of %s"
                          % (self.p.out, self.p.manifest), r.stderr)
            self.assertIn("two manifests must not write into one folder", r.stderr)
        self.assertEqual(self.p.mtimes(), before)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "ui.lock")))
        # Once the first manifest is gone, the folder is the other's.
        os.remove(self.p.manifest)
        self.assertEqual(self.p.kiln("build", "-m", "ui.toml").returncode, 0)

    def test_the_state_of_an_older_kiln_in_the_output_folder_is_moved_out(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        # Where kilns before 0.2 kept it: inside the output folder.
        state = state_folder(self.tmp)
        old = os.path.join(self.p.out, ".kiln")
        shutil.move(state, old)
        os.remove(os.path.join(self.tmp, "kiln.lock"))  # an older kiln wrote none
        self.assertIn("4 up to date", self.p.kiln("plan").stdout)  # read where it is
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("moved Kiln's state out of", r.stderr)
        self.assertEqual(report["summary"]["up_to_date"], 4)
        self.assertFalse(os.path.exists(old))
        self.assertTrue(os.path.exists(os.path.join(state_folder(self.tmp), "state.jsonl")))
        self.assertEqual(sorted(os.listdir(self.p.out)), ["cover.jpg", "icons", "textures"])

    def test_a_changed_format_removes_the_old_file(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        self.p.write(self.p.read().replace('format = "webp"', 'format = "png"'))
        plan = self.p.kiln("plan")
        self.assertRegex(plan.stdout, r"remove +textures/grass +its file is now another format")
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["removed"], 1)
        self.assertEqual(sorted(os.listdir(os.path.join(self.p.out, "textures"))), ["grass.png"])

    def test_another_state_dir_is_not_skipped_by_the_no_op_shortcut(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        other = os.path.join(self.tmp, "elsewhere")
        r = self.p.kiln("build", "--state-dir", other)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(other, "state.jsonl")))
        self.assertIn("no work to do", self.p.kiln("build", "--state-dir", other).stdout)

    # A link planted in the state folder or below the output folder is never written through:
    # the file or folder it points at stays as it was (issue 16).
    def test_planted_symlinks_are_refused_and_their_targets_untouched(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        victim = os.path.join(self.tmp, "precious.txt")
        with open(victim, "w") as f:
            f.write("precious")
        state = state_folder(self.tmp)

        def refused(message):
            r = self.p.kiln("build", "--force")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(message, r.stderr)
            with open(victim) as f:
                self.assertEqual(f.read(), "precious")
        for name in ("journal.jsonl", "lock"):
            path = os.path.join(state, name)
            saved = path + ".saved"
            if os.path.exists(path):
                os.rename(path, saved)
            os.symlink(victim, path)
            refused("'%s' is a symbolic link" % path)
            os.remove(path)
            if os.path.exists(saved):
                os.rename(saved, path)
        # A hard link shares its bytes: emptying the journal would empty the other file.
        journal = os.path.join(state, "journal.jsonl")
        if os.path.exists(journal):
            os.remove(journal)
        os.link(victim, journal)
        refused("'%s' has another hard link" % journal)
        os.remove(journal)
        # An output subfolder replaced by a link to a folder elsewhere.
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.makedirs(elsewhere)
        shutil.rmtree(os.path.join(self.p.out, "icons"))
        os.symlink(elsewhere, os.path.join(self.p.out, "icons"))
        r, report = self.p.build()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(os.listdir(elsewhere), [])
        self.assertIn("is a symbolic link: Kiln writes outputs only into real folders",
                      by_name(report)["icons/sword"]["error"])
        self.assertEqual(by_name(report)["cover"]["status"], "up_to_date")

    # `kiln outputs` prints one path per line for CMake: a folder name with control characters
    # could neither be carried nor shown raw, so it is refused, escaped (issue 16).
    def test_outputs_refuses_an_output_folder_with_control_characters(self):
        self.p.write(self.p.read().replace('output_dir = "out"', 'output_dir = "o\\u001b[2Jut"'))
        r = self.p.kiln("outputs")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertNotIn("\x1b", r.stderr)
        self.assertIn("o\\x1b[2Jut/", r.stderr)
        self.assertIn("holds control characters, which one path per line cannot carry", r.stderr)

    # From an attacker's review of issue 16: removals, the report's spool, the stamp and the
    # cache's own removals never go through a planted link; FIFOs never hang Kiln.
    def test_removals_spool_and_stamp_never_go_through_planted_links(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        # An undeclared output whose folder became a link: kept, the link named.
        elsewhere = os.path.join(self.tmp, "installed")
        shutil.move(os.path.join(self.p.out, "icons"), elsewhere)
        os.symlink(elsewhere, os.path.join(self.p.out, "icons"))
        self.p.write(self.p.read().replace('name = "icons/sword"', 'name = "weapons/sword"'))
        r = self.p.kiln("build")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(elsewhere, "sword.png")))
        self.assertIn("is a symbolic link", r.stderr)
        # The report's spool and the stamp replaced by links to a victim.
        victim = os.path.join(self.tmp, "victim.txt")
        with open(victim, "w") as f:
            f.write("precious")
        report = os.path.join(self.p.root, "rep.json")
        os.symlink(victim, report + ".kiln-tmp.spool")
        stamp = os.path.join(self.p.root, "st.stamp")
        os.symlink(os.path.join(self.tmp, "new-file"), stamp)
        r = self.p.kiln("build", "--report", report)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.p.kiln("build", "--force", "--stamp", stamp)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("kiln build: cannot touch '%s': it is a symbolic link" % stamp, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "new-file")))
        with open(victim) as f:
            self.assertEqual(f.read(), "precious")
        # A killed run's spool in the output folder is a leftover the next build removes.
        spool = os.path.join(self.p.out, "rep.json.kiln-tmp.spool")
        with open(spool, "w") as f:
            f.write("{")
        self.assertEqual(self.p.kiln("build", "--force").returncode, 0)
        self.assertFalse(os.path.exists(spool))

    def test_fifos_where_files_belong_are_refused_not_waited_on(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        journal = os.path.join(state_folder(self.tmp), "journal.jsonl")
        if os.path.exists(journal):
            os.remove(journal)
        os.mkfifo(journal)
        r = self.p.kiln("build", "--force")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("'%s' is not a regular file" % journal, r.stderr)
        os.remove(journal)
        lock = os.path.join(self.p.root, "kiln.lock")
        os.remove(lock)
        os.mkfifo(lock)
        r = self.p.kiln("build", "--force")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("'%s' is not a regular file" % lock, r.stderr)

    def test_bad_numbers_and_names_on_the_command_line_are_refused(self):
        for args, message in [
                (["--budget", "nan"], "--budget must be a number of US dollars, zero or more"),
                (["--budget", "-1"], "--budget must be a number of US dollars, zero or more"),
                (["-j", "-1"], "--jobs must be at least 1"),
                (["-m", ""], "-m needs a manifest file")]:
            r = self.p.kiln("build", *args)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(message, r.stderr)
            self.assertNotIn("internal error", r.stderr)

    # Outputs are replaced by rename, never written in place: a regenerated asset is a new
    # file (new inode), and a reader that opened the old one still reads it whole (issue 18: an
    # in-place write passed every test, the next run repaired what a kill left).
    def test_a_regenerated_output_is_a_new_file_not_rewritten_in_place(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        sword = os.path.join(self.p.out, "icons", "sword.png")
        before = os.stat(sword).st_ino
        with open(sword, "rb") as reader:
            old = reader.read()
            reader.seek(0)
            self.p.write(self.p.read().replace('prompt = "a steel sword"',
                                               'prompt = "a golden sword"'))
            self.assertEqual(self.p.kiln("build").returncode, 0)
            self.assertEqual(reader.read(), old)
        self.assertNotEqual(os.stat(sword).st_ino, before)

    # An edit of the same size is an edit: the stamp's time counts, not only its size (issue 18:
    # comparing sizes alone passed every test). And a forced rebuild of identical bytes writes
    # nothing, so nothing downstream runs again.
    def test_a_same_size_edit_is_noticed_and_identical_bytes_are_not_rewritten(self):
        self.assertEqual(self.p.build()[0].returncode, 0)
        shield = os.path.join(self.p.out, "icons", "shield.png")
        with open(shield, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF  # same size, broken bytes
        time.sleep(0.01)
        with open(shield, "wb") as f:
            f.write(data)
        r, report = self.p.build()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotEqual(by_name(report)["icons/shield"]["status"], "up_to_date")
        with open(shield, "rb") as f:
            self.assertNotEqual(f.read(), bytes(data))
        before = self.p.mtimes()
        time.sleep(0.01)
        r, report = self.p.build("--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["summary"]["generated"], len(EXPECTED))
        self.assertEqual(self.p.mtimes(), before)

    # The no-op shortcut is keyed on the plugin files too: a replaced plugin library means the
    # build runs, and here fails, naming it (issue 18: a shortcut ignoring plugin files said
    # "no work to do" after a plugin upgrade).
    def test_a_changed_plugin_file_defeats_the_no_op_shortcut(self):
        folder = os.path.join(self.tmp, "plugins")
        shutil.copytree(os.environ["KILN_KEEPS_CONTEXT_DIR"], folder)
        env = dict(self.p.env, KILN_PLUGIN_PATH=folder)
        self.p.write(self.p.read().replace('validators = ["resolution"',
                                           'validators = ["keeps-context", "resolution"'))
        self.assertEqual(self.p.kiln("build", env=env).returncode, 0)
        self.assertIn("no work to do", self.p.kiln("build", env=env).stdout)
        library = os.path.join(folder, "kiln-fixture-keeps-context.so")
        time.sleep(0.01)
        with open(library, "wb") as f:
            f.write(b"not a library any more")
        r = self.p.kiln("build", env=env)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("kiln-fixture-keeps-context.so", r.stderr)

    # A read-only file system is reported as one, naming the folder, never as a missing file
    # (issue 16). Mounts a read-only tmpfs in a mount namespace of the test's own.
    def test_a_read_only_mount_is_reported_as_read_only(self):
        ro = os.path.join(self.tmp, "ro")
        os.makedirs(ro)
        script = 'mount -t tmpfs -o ro,size=1m tmpfs "$0" && exec "$@"'

        def on_read_only(*command, env):
            return subprocess.run(["unshare", "--mount", "sh", "-c", script, ro, *command],
                                  cwd=self.p.root, env=env, capture_output=True, text=True,
                                  timeout=120)
        if not shutil.which("unshare") or on_read_only("true", env=self.p.env).returncode != 0:
            self.skipTest("cannot mount a read-only file system here (needs root)")
        state = os.path.join(ro, "state")
        r = on_read_only(KILN, "build", env=dict(self.p.env, KILN_STATE_DIR=state))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cannot create the state folder '%s/" % state, r.stderr)
        self.assertIn("Read-only file system", r.stderr)
        self.assertNotIn("No such file", r.stderr)
        self.p.write(self.p.read().replace('output_dir = "out"', 'output_dir = "%s"' % ro))
        r = on_read_only(KILN, "build", env=self.p.env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("kiln: error: icons/sword: cannot create folder '%s/icons': Read-only file "
                      "system" % ro, r.stderr)
        self.assertNotIn("No such file", r.stderr)
        self.p.write(self.p.read().replace('output_dir = "%s"' % ro, 'output_dir = "out"'))
        r = on_read_only(KILN, "build", "--stamp", os.path.join(ro, "st.stamp"), env=self.p.env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cannot touch '%s/st.stamp': Read-only file system" % ro, r.stderr)
        self.assertNotIn("internal error", r.stderr)

if __name__ == "__main__":
    unittest.main()
