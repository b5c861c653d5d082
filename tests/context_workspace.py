"""The workspace fixture of the repository-context tests: tests/fixtures/workspace copied to a
temporary folder, with the files it must never read written into the copy (git would not keep
them: ignored, secret, over 1 MB, binary)."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "workspace"
EXCLUDED = {
    "build/generated.py": "def generated_in_build():\n    pass\n",  # .gitignore: build/
    "pkg/ignored_module.py": "def ignored_helper():\n    pass\n",  # .gitignore: ignored_*.py
    "pkg/credentials.py": 'API_TOKEN = "not-a-real-token"\n',  # a credential file's name
    ".env": "SECRET_KEY=not-a-real-secret\n",
    "pkg/huge.py": "def huge_def():\n    pass\n" + "# filler\n" * 120_000,  # over 1 MB
}


def make_workspace(tmp: Path) -> Path:
    root = tmp / "ws"
    shutil.copytree(FIXTURE, root)
    for rel, text in EXCLUDED.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "pkg" / "blob.py").write_bytes(b"def binary_def():\n\x00\x01\x02 pass\n")
    return root
