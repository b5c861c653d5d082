"""The VS Code extension's own checks, run from pytest so CI runs them: `npm test` in
editors/vscode (TypeScript type check, then the node:test unit tests of settings, command
resolution, restart back-off and status view) on Node 24.
"""

from __future__ import annotations

import os
import subprocess

from editors_helpers import VSCODE_EXT, node24, require


def test_extension_typechecks_and_unit_tests_pass():
    node = node24()
    require(VSCODE_EXT / "node_modules" / "vscode-languageclient", "the extension's npm packages")
    env = dict(os.environ, PATH=f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run(
        ["npm", "test"],
        cwd=VSCODE_EXT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(run.stdout[-4000:])
    assert run.returncode == 0, f"npm test failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert "# fail 0" in run.stdout or "ℹ fail 0" in run.stdout, run.stdout[-2000:]
