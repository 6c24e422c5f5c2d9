"""The SDK guide cannot rot: every ```cpp block of sdk/README.md that exports a plugin
(`KILN_PLUGIN(`) is built as a plugin of its own against an installed Kiln, as the guide says
(find_package(Kiln) + kiln_add_plugin(), warnings as errors), and the installed kiln lists each
one with the kind its class derives from, its version and ABI 1.1.

Compiler messages point at the guide's own lines (each source starts with a #line directive).
Run by ctest with KILN_BUILD_DIR (the build tree to install) and KILN_SOURCE_DIR set; needs
cmake, ninja and a C++ compiler."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from test_install import install_kiln

SOURCE_DIR = os.environ.get("KILN_SOURCE_DIR",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GUIDE = os.path.abspath(os.path.join(SOURCE_DIR, "sdk", "README.md"))

# The adapter's base classes and the kind `kiln plugins` prints for each.
KINDS = {"Backend": "backend", "Enhancer": "enhancer", "RetryStrategy": "retry-strategy",
         "Validator": "validator", "Postprocessor": "postprocessor"}


def guide_examples(text):
    """Every plugin the guide shows: dicts of line (of its first code line), code, id, version,
    kind."""
    examples = []
    for block in re.finditer(r"^```cpp\n(.*?)^```[ \t]*$", text, re.S | re.M):
        code = block.group(1)
        if "KILN_PLUGIN(" not in code:
            continue
        line = text.count("\n", 0, block.start(1)) + 1
        entry = re.search(r'KILN_PLUGIN\(\s*(\w+)\s*,\s*"([^"]*)"\s*,\s*"([^"]*)"', code)
        assert entry, f"{GUIDE}:{line}: a KILN_PLUGIN( this test cannot read"
        cls, plugin_id, version = entry.groups()
        base = re.search(r"\bclass\s+" + cls + r"\s*:\s*public\s+kiln::(\w+)", code)
        assert base and base.group(1) in KINDS, \
            f"{GUIDE}:{line}: class {cls} derives from none of kiln::{', kiln::'.join(KINDS)}"
        examples.append({"line": line, "code": code, "id": plugin_id, "version": version,
                         "kind": KINDS[base.group(1)]})
    return examples


class SdkGuideTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(GUIDE) as f:
            cls.examples = guide_examples(f.read())
        cls.tmp = tempfile.mkdtemp(prefix="kiln-sdk-guide-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        install_kiln(cls.prefix)
        cls.kiln_exe = os.path.join(cls.prefix, "bin", "kiln")

        src = os.path.join(cls.tmp, "src")
        os.makedirs(src)
        cmake = ["cmake_minimum_required(VERSION 3.25)",
                 "project(KilnSdkGuideExamples LANGUAGES CXX)",
                 "find_package(Kiln 0.1 CONFIG REQUIRED)"]
        for e in cls.examples:
            name = f"guide-{e['line']}" # by line: two examples with one id still build
            with open(os.path.join(src, name + ".cpp"), "w") as f:
                f.write(f'#line {e["line"]} "{GUIDE}"\n{e["code"]}')
            cmake += [f'kiln_add_plugin({name} SOURCES {name}.cpp '
                      f'OUTPUT_DIRECTORY "${{CMAKE_CURRENT_BINARY_DIR}}/plugins")',
                      f"target_compile_options({name} PRIVATE -Wall -Wextra -Wpedantic "
                      f"-Wshadow -Werror)"]
        with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
            f.write("\n".join(cmake) + "\n")
        build = os.path.join(cls.tmp, "build")
        cls.built = []
        for cmd in (["cmake", "-S", src, "-B", build, "-G", "Ninja",
                     "-DCMAKE_PREFIX_PATH=" + cls.prefix],
                    ["cmake", "--build", build, "-j2", "--", "-k", "0"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            cls.built.append(r)
            if r.returncode != 0:
                break
        cls.plugins = os.path.join(build, "plugins")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_every_kind_has_an_example(self):
        self.assertEqual({e["kind"] for e in self.examples}, set(KINDS.values()))

    def test_example_ids_are_unique(self):
        ids = [e["id"] for e in self.examples]
        self.assertEqual(sorted(ids), sorted(set(ids)),
                         "two examples of the guide export the same id: kiln would refuse one")

    def test_every_example_compiles(self):
        for r in self.built:
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for e in self.examples:
            self.assertTrue(os.path.isfile(os.path.join(self.plugins, f"kiln-guide-{e['line']}.so")),
                            f"{GUIDE}:{e['line']}: {e['id']} was not built")

    def test_kiln_lists_every_example(self):
        env = {k: v for k, v in os.environ.items() if k != "KILN_PLUGIN_PATH"}
        env["KILN_PLUGIN_PATH"] = self.plugins
        r = subprocess.run([self.kiln_exe, "plugins", "-v"], capture_output=True, text=True,
                           env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotRegex(r.stdout, r"(?m)^broken\b", "a guide example does not load")
        for e in self.examples:
            self.assertRegex(
                r.stdout,
                rf"(?m)^{re.escape(e['kind'])}\s+{re.escape(e['id'])}\s+{re.escape(e['version'])}"
                rf"\s+1\.1\s+\S*/kiln-guide-{e['line']}\.so$",
                f"{GUIDE}:{e['line']}: {e['id']} is not listed as a {e['kind']}")


if __name__ == "__main__":
    unittest.main()
