"""`cmake --install` lays Kiln out as documented, and the installed kiln finds its built-in
plugins relative to itself with no configuration."""

import os
import shutil
import subprocess
import tempfile
import unittest

BUILD_DIR = os.environ.get("KILN_BUILD_DIR", "build")


def install_kiln(prefix):
    """`cmake --install` of the build tree under test into `prefix`."""
    subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], check=True,
                   capture_output=True)


class InstallTest(unittest.TestCase):
    def test_installed_layout_works_without_configuration(self):
        prefix = tempfile.mkdtemp(prefix="kiln-install-")
        try:
            install_kiln(prefix)
            for rel in ["bin/kiln", "include/kiln/plugin.h", "include/kiln/kiln.hpp",
                        "lib/cmake/Kiln/KilnConfig.cmake", "lib/cmake/Kiln/KilnPlugin.cmake",
                        "lib/kiln/plugins/kiln-backend-placeholder.so",
                        "lib/kiln/plugins/kiln-validator-not-corrupt.so",
                        "share/kiln/examples/custom-validator/max_colours.cpp",
                        "share/kiln/examples/custom-validator/CMakeLists.txt",
                        "share/doc/kiln/SDK.md"]:
                self.assertTrue(os.path.exists(os.path.join(prefix, rel)), rel)
            kiln = os.path.join(prefix, "bin", "kiln")
            env = {k: v for k, v in os.environ.items() if k != "KILN_PLUGIN_PATH"}
            r = subprocess.run([kiln, "plugins"], capture_output=True, text=True, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(os.path.join(prefix, "lib/kiln/plugins/kiln-backend-placeholder.so"),
                          r.stdout)
            project = os.path.join(prefix, "game")
            os.makedirs(project)
            with open(os.path.join(project, "assets.toml"), "w") as f:
                f.write('[types.icon]\nwidth = 32\nheight = 32\n\n'
                        '[[asset]]\nname = "sword"\ntype = "icon"\nprompt = "a sword"\n')
            env["KILN_CACHE_DIR"] = os.path.join(prefix, "cache")
            env["KILN_STATE_DIR"] = os.path.join(prefix, "state")
            r = subprocess.run([kiln, "build"], cwd=project, capture_output=True, text=True,
                               env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(os.path.exists(os.path.join(project, "generated", "sword.png")))
        finally:
            shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
