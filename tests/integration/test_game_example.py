"""examples/game as a game studio would use Kiln: installed to a prefix, found with
find_package(Kiln), assets baked by kiln_add_assets() inside an ordinary CMake + Ninja build with a
downstream rule per asset. Asserts that Ninja regenerates only what changed and re-runs only the
rules downstream of changed asset files.

Run by ctest with KILN_BUILD_DIR set (the build tree to install); needs cmake and ninja."""

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

from test_install import install_kiln

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "game")
ASSETS = ["icons/sword.png", "icons/shield.png", "textures/grass.png"]


class ExampleCase(unittest.TestCase):
    """examples/game copied to a temporary folder, configured against an installed Kiln."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-game-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        install_kiln(cls.prefix)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    generator = "Ninja"

    def setUp(self):
        self.src = tempfile.mkdtemp(prefix="src-", dir=self.tmp)
        shutil.copytree(EXAMPLE, self.src, dirs_exist_ok=True)
        self.build = os.path.join(self.src, "build")
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("KILN_PLUGIN_PATH", "REPLICATE_API_TOKEN")}
        self.env["KILN_CACHE_DIR"] = os.path.join(self.src, "cache")
        self.env["KILN_STATE_DIR"] = os.path.join(self.src, "state")
        self.configure()

    def configure(self, *args):
        r = subprocess.run(["cmake", "-S", self.src, "-B", self.build, "-G", self.generator,
                            "-DCMAKE_PREFIX_PATH=" + self.prefix, *args],
                           capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def ninja(self, config=None):
        """Builds with the test's generator at -j8; the build's output."""
        command = ["cmake", "--build", self.build, "-j", "8"]
        if config:
            command += ["--config", config]
        r = subprocess.run(command, capture_output=True, text=True, env=self.env)
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


class GameExampleTest(ExampleCase):
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
        """What `cmake --install` ships, relative to the art folder; CPack's archive must hold
        exactly the same files."""
        prefix = os.path.join(self.src, name)
        r = subprocess.run(["cmake", "--install", self.build, "--prefix", prefix],
                           capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        art = os.path.join(prefix, "share", "kiln-example-game", "art")
        installed = sorted(os.path.relpath(os.path.join(d, f), art)
                           for d, _, files in os.walk(prefix) for f in files)
        r = subprocess.run(["cpack", "-G", "TGZ", "-B", os.path.join(self.src, name + "-pack")],
                           cwd=self.build, capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        [archive] = glob.glob(os.path.join(self.src, name + "-pack", "*.tar.gz"))
        with tarfile.open(archive) as tar:
            packed = sorted(m.name.split("/share/kiln-example-game/art/", 1)[1]
                            for m in tar.getmembers() if m.isfile())
        self.assertEqual(packed, installed)
        return installed

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
        # Exactly the declared art ships: the kept edit of an undeclared asset stays on disk,
        # out of the package.
        self.assertEqual(self.install("p2"), ["icons/sword.png"])
        with open(grass, "rb") as f:
            self.assertEqual(f.read(), edit)
        with open(os.path.join(self.src, "kiln.lock")) as f:
            self.assertEqual(f.read().count("[assets."), 1)

    # Must show 2 (issue 17): in a project whose cmake_minimum_required leaves CMP0116 OLD, the
    # module still sets it for its own rule, so Ninja reads Kiln's depfile and a second build
    # has nothing to do (it re-ran Kiln every time before).
    def test_an_old_cmake_minimum_required_still_builds_nothing_twice(self):
        path = os.path.join(self.src, "CMakeLists.txt")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("cmake_minimum_required(VERSION 3.25)",
                                 "cmake_minimum_required(VERSION 3.16)"))
        shutil.rmtree(self.build)
        self.configure()
        self.ninja()
        self.assertEqual(self.packed(), sorted(ASSETS))
        self.assertIn("no work to do", self.ninja())
        self.assertEqual(self.packed(), [])

    # Linking the art to code would hold up every object file: refused, with the pattern.
    def test_linking_art_to_an_executable_is_refused_with_the_pattern(self):
        with open(os.path.join(self.src, "CMakeLists.txt"), "a") as f:
            f.write("\nenable_language(C)\nfile(WRITE ${CMAKE_BINARY_DIR}/main.c "
                    "\"int main(void) { return 0; }\")\n"
                    "add_executable(game ${CMAKE_BINARY_DIR}/main.c)\n"
                    "kiln_link_assets(game game_art)\n")
        r = subprocess.run(["cmake", "-S", self.src, "-B", self.build],
                           capture_output=True, text=True, env=self.env)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("kiln_link_assets(game game_art): game is code (executable); the art would "
                      "hold up every one of its object files", " ".join(r.stderr.split()))


class EveryGeneratorCase(ExampleCase):
    """Must show 1 (issue 17): the same cycle under each generator at -j8. A first build makes
    every asset and every downstream step; a second runs no downstream step and rewrites no
    asset (Ninja: nothing at all); one edited prompt regenerates exactly that asset and re-runs
    exactly its downstream step."""

    generator = None
    configs = [None]

    def setUp(self):
        if self.generator is None:
            self.skipTest("the generators are the subclasses")
        super().setUp()

    def nothing_ran(self, out):
        if "Ninja" in self.generator:
            self.assertIn("no work to do", out)
        self.assertNotIn("Packing", out)
        self.assertNotIn("generated", out.replace("0 generated", ""))

    def test_first_build_then_nothing_then_exactly_the_edited_asset(self):
        first, *others = self.configs
        self.assertIn("Baking the assets", self.ninja(first))
        self.assertEqual(self.report()["summary"]["generated"], 3)
        self.assertEqual(self.packed(), sorted(ASSETS))
        for config in others:  # the art is the same for every configuration: made once
            self.nothing_ran(self.ninja(config))
        before = self.mtimes()
        for config in self.configs:
            self.nothing_ran(self.ninja(config))
        self.assertEqual(self.packed(), [])
        self.assertEqual(self.mtimes(), before)

        self.edit_manifest('prompt = "a steel sword"', 'prompt = "a golden sword"')
        self.ninja(first)
        summary = self.report()["summary"]
        self.assertEqual((summary["generated"], summary["up_to_date"]), (1, 2))
        self.assertEqual(self.packed(), ["icons/sword.png"])
        after = self.mtimes()
        self.assertNotEqual(after.pop("icons/sword.png"), before.pop("icons/sword.png"))
        self.assertEqual(after, before)
        for config in self.configs:
            self.nothing_ran(self.ninja(config))
        self.assertEqual(self.packed(), [])


class NinjaTest(EveryGeneratorCase):
    generator = "Ninja"


class NinjaMultiConfigTest(EveryGeneratorCase):
    generator = "Ninja Multi-Config"
    configs = ["Debug", "Release"]


class UnixMakefilesTest(EveryGeneratorCase):
    generator = "Unix Makefiles"


# The README's CMake section, pasted as a game would: its kiln_add_assets() block and the three
# patterns, built under Ninja and Unix Makefiles at -j8, installed (issue 17).
class ReadmePatternsTest(ExampleCase):
    def readme_project(self):
        readme = os.path.join(os.path.dirname(EXAMPLE), "..", "README.md")
        with open(readme) as f:
            text = f.read()
        section = text.split("## In a CMake build", 1)[1].split("\n## ", 1)[0]
        blocks = section.split("```cmake\n")[1:]
        add_assets, patterns = (b.split("```", 1)[0] for b in blocks[:2])
        self.assertIn("kiln_add_assets(game_art", add_assets)
        self.assertIn("kiln_install_assets(game_art", patterns)
        with open(os.path.join(self.src, "CMakeLists.txt"), "w") as f:
            f.write("cmake_minimum_required(VERSION 3.16)\nproject(Pasted LANGUAGES NONE)\n"
                    "set(KILN_BACKEND placeholder)\n" + add_assets + patterns)

    def test_the_three_patterns_work_as_written(self):
        self.readme_project()
        for generator in ("Ninja", "Unix Makefiles"):
            self.generator = generator
            shutil.rmtree(self.build, ignore_errors=True)
            self.configure()
            self.ninja()
            for asset in ASSETS:
                self.assertTrue(os.path.exists(os.path.join(self.build, "data", asset)))
            with tarfile.open(os.path.join(self.build, "art.pak")) as tar:
                self.assertEqual(len([m for m in tar.getmembers() if m.isfile()]), 3)
            prefix = os.path.join(self.src, "prefix-" + generator.split()[0])
            r = subprocess.run(["cmake", "--install", self.build, "--prefix", prefix,
                                "--component", "art"], capture_output=True, text=True,
                               env=self.env)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            art = os.path.join(prefix, "share", "mygame", "art")
            self.assertEqual(sorted(os.path.relpath(os.path.join(d, f), art)
                                    for d, _, files in os.walk(prefix) for f in files),
                             sorted(ASSETS))
            out = self.ninja()
            if generator == "Ninja":  # Makefiles may enter the art target (it writes nothing)
                self.assertNotIn("Baking", out)
            self.assertNotIn("Generating", out)


# Must show 3 (issue 17): a game with 20 C++ files and paid art (the fake Replicate, 1 s per
# image): with the documented pattern, object files compile while the art is being made.
class ArtDoesNotHoldUpTheCompileTest(unittest.TestCase):
    def setUp(self):
        from test_replicate import FLUX, TOKEN, FakeReplicate
        self.tmp = tempfile.mkdtemp(prefix="kiln-compile-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        prefix = os.path.join(self.tmp, "prefix")
        install_kiln(prefix)
        self.server = FakeReplicate()
        self.addCleanup(self.server.stop)
        self.server.control(latency_s=1.0)
        self.src = os.path.join(self.tmp, "game")
        os.makedirs(os.path.join(self.src, "src"))
        for i in range(20):
            with open(os.path.join(self.src, "src", "unit%02d.cpp" % i), "w") as f:
                f.write("#include <map>\n#include <regex>\n#include <string>\n"
                        "int unit%02d(const std::string& s) {\n"
                        "  std::map<std::string, int> m{{s, 1}};\n"
                        "  return std::regex_match(s, std::regex(\"a+\")) ? m[s] : 0;\n}\n" % i)
        with open(os.path.join(self.src, "src", "main.cpp"), "w") as f:
            f.write("int main() { return 0; }\n")
        with open(os.path.join(self.src, "CMakeLists.txt"), "w") as f:
            f.write("""cmake_minimum_required(VERSION 3.16)
project(Shooter LANGUAGES CXX)
find_package(Kiln CONFIG REQUIRED)
kiln_add_assets(game_art MANIFEST assets.toml OUTPUT_DIR art)
file(GLOB sources ${CMAKE_SOURCE_DIR}/src/*.cpp)
add_executable(game ${sources})
get_target_property(art game_art KILN_OUTPUTS)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/data.tar
                   COMMAND ${CMAKE_COMMAND} -E tar cf ${CMAKE_BINARY_DIR}/data.tar ${art}
                   DEPENDS ${art})
add_custom_target(game_data ALL DEPENDS ${CMAKE_BINARY_DIR}/data.tar)
kiln_link_assets(game_data game_art)
""")
        text = f"""[defaults]
backend = "replicate"
model = "{FLUX}"

[backends.replicate]
base_url = "{self.server.url}/v1"

[types.icon]
width = 256
height = 256
"""
        for name in ("sword", "shield", "potion", "bow"):
            text += f"""
[[asset]]
name = "icons/{name}"
type = "icon"
prompt = "a {name}"
"""
        with open(os.path.join(self.src, "assets.toml"), "w") as f:
            f.write(text)
        self.env = {k: v for k, v in os.environ.items() if k != "KILN_PLUGIN_PATH"}
        self.env.update(REPLICATE_API_TOKEN=TOKEN, KILN_CACHE_DIR=os.path.join(self.tmp, "c"),
                        KILN_STATE_DIR=os.path.join(self.tmp, "s"))
        self.build = os.path.join(self.src, "build")
        r = subprocess.run(["cmake", "-S", self.src, "-B", self.build, "-G", "Ninja",
                            "-DCMAKE_PREFIX_PATH=" + prefix], capture_output=True, text=True,
                           env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_objects_compile_while_the_art_is_made(self):
        r = subprocess.run(["ninja", "-C", self.build, "-j", "8"], capture_output=True,
                           text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(self.server.stats()["creates"]), 4)
        with open(os.path.join(self.build, ".ninja_log")) as f:
            entries = [line.split("\t") for line in f if not line.startswith("#")]
        # Ninja logs the stamp under its relative and its absolute name: one run.
        art = {(int(e[0]), int(e[1])) for e in entries if e[3].endswith("game_art.kiln-stamp")}
        objects = [(int(e[0]), int(e[1])) for e in entries if e[3].endswith(".o")]
        self.assertEqual(len(art), 1, entries)
        self.assertEqual(len(objects), 21)
        [(start, end)] = art
        self.assertGreater(end - start, 1000)  # the art took its paid second at least
        during = [o for o in objects if o[0] < end and o[1] > start]
        self.assertGreater(len(during), 0, "no object compiled while the art was made: %s %s"
                           % (art, sorted(objects)))


if __name__ == "__main__":
    unittest.main()
