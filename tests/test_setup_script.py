"""scripts/setup.sh installs into .venv, the environment the README's two commands run with."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fake_env(root: Path) -> Path:
    """A stand-in virtual environment whose python records its arguments instead of installing anything."""
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> "{root}/calls"\n')
    python.chmod(0o755)
    return root


def _setup(checkout: Path, env: dict) -> subprocess.CompletedProcess:
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=60)


def test_active_virtual_environment_becomes_dot_venv(tmp_path):
    active = _fake_env(tmp_path / "active")
    run = _setup(tmp_path / "clone", {**os.environ, "VIRTUAL_ENV": str(active)})
    assert run.returncode == 0, run.stderr
    venv = tmp_path / "clone" / ".venv"
    assert venv.is_symlink() and venv.resolve() == active.resolve()
    # Installed into the active environment, so `.venv/bin/python -m pytest` then finds the pack there.
    assert "-m pip install -q -e .[dev]" in (active / "calls").read_text()


def test_an_existing_dot_venv_is_used_whatever_is_active(tmp_path):
    active = _fake_env(tmp_path / "active")
    own = _fake_env(tmp_path / "clone" / ".venv")
    run = _setup(tmp_path / "clone", {**os.environ, "VIRTUAL_ENV": str(active)})
    assert run.returncode == 0, run.stderr
    assert not own.is_symlink() and "-m pip install -q -e .[dev]" in (own / "calls").read_text()
    assert not (active / "calls").exists()
