"""A throwaway copy of the project for tests that run the real `dvc repro`.

Copies what git would ship (tracked and untracked-but-not-ignored files) into a
temporary folder, links ``../shared`` beside it (params.yaml refers to
``../shared/data``), and makes it a git repository of its own, as a fresh clone is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason="../shared not present (the pairs stage reads the public sets there)"
)
"""The one skip marker for tests that need the public data sets beside the checkout."""
VENV_BIN = Path(sys.executable).parent
KNOWN_INPUTS = [SHARED / "data", *sorted((ROOT / "pipelines").glob("*.py"))]
"""Inputs whose text is not user data: the public sets the pipeline reads, and our own
modules (the logged model ships them; a docstring may say "San Diego"). A canary that
already occurs in them proves nothing, so the PII audit in the tests excludes it."""


def project_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for subprocesses: the venv first on PATH, no analytics, offline hubs."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra or {})
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command, raising with its output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or project_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_project(dest_parent: Path) -> Path:
    """Copy the project into ``dest_parent/repo`` and return that path."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    dest = dest_parent / "repo"
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if SHARED.exists() and not (dest_parent / "shared").exists():
        (dest_parent / "shared").symlink_to(SHARED)
    git = ["git", "-c", "user.email=test@example.org", "-c", "user.name=test"]
    run(["git", "init", "-q"], dest)
    run([*git, "add", "-A"], dest)
    run([*git, "commit", "-qm", "copy"], dest)
    return dest
