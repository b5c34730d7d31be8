"""The Makefile's commands run the stages with the venv's python, whatever the caller's PATH says."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.project import ROOT

PROBE = "probe:\n\t@python -c 'import sys, typer; print(sys.prefix)'\n"
"""A recipe like dvc.yaml's stage commands: a bare ``python`` that needs the project's packages."""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_recipes_find_the_venv_python_before_any_other(tmp_path):
    """`make run` failed with `No module named 'typer'` where a pyenv shim or a system python came first."""
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "python").write_text("#!/bin/sh\necho decoy python; exit 3\n")
    (decoy / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{decoy}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(["make", "-s", "-f", "Makefile", "-f", "-", "probe"], cwd=ROOT, env=env,
                          input=PROBE, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(proc.stdout.strip()).resolve() == (ROOT / ".venv").resolve()
