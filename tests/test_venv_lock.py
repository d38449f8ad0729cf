"""The lock: scripts/_env.sh never uses a .venv whose versions differ from constraints.txt."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

LOCK = ROOT / "constraints.txt"


def _venvcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("venvcheck", ROOT / "scripts" / "venvcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


venvcheck = _venvcheck()


def test_differences_name_what_is_off() -> None:
    lock = venvcheck.read_lock("# comment\nAio_Http==3.1  # why\nredis==8.1.0\n\nruff==0.17.6\n")
    assert lock == {"aio-http": "3.1", "redis": "8.1.0", "ruff": "0.17.6"}
    same = {"aio.http": "3.1", "Redis": "8.1.0", "livecommerce": "0.1.0"}
    assert venvcheck.differences(lock, same) == []  # not all of the lock is installed: fine
    off = {"redis": "8.2.0", "extra-pkg": "1.0", "ruff": "0.17.6"}
    assert venvcheck.differences(lock, off) == [
        "extra-pkg 1.0 is installed but not in the lock",
        "redis 8.2.0 is installed, the lock says 8.1.0",
    ]


@pytest.mark.parametrize("line", ["redis>=8", "redis", "==1.0", "redis==", "-e ."])
def test_a_lock_line_that_is_no_exact_pin_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        venvcheck.read_lock(line)


def test_the_tools_are_pinned_exactly_and_as_in_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = venvcheck.read_lock(LOCK.read_text())
    test_extra = project["optional-dependencies"]["test"]
    for tool in ("ruff", "mypy"):
        (pin,) = [r for r in test_extra if re.match(rf"{tool}\b", r)]
        assert pin == f"{tool}=={lock[tool]}"
    # the runtime libraries have an upper bound for people who pip install the package
    for req in project["dependencies"]:
        assert "<" in req, req


def test_this_suite_runs_on_the_locked_versions() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "venvcheck.py"), str(LOCK)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def _copy_of_the_checkout(tmp: Path) -> Path:
    """scripts/, pyproject.toml and the lock in ``tmp``, with this suite's .venv."""
    (tmp / "scripts").mkdir()
    for name in ("_env.sh", "venvcheck.py"):
        (tmp / "scripts" / name).write_text((ROOT / "scripts" / name).read_text())
    for name in ("pyproject.toml", "constraints.txt"):
        (tmp / name).write_text((ROOT / name).read_text())
    (tmp / ".venv").symlink_to(Path(sys.prefix))
    return tmp


def _env(root: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {root}/scripts/_env.sh; {script}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": os.environ["PATH"]},
    )


def test_env_sh_reuses_a_venv_only_while_it_matches_the_lock(tmp_path: Path) -> None:
    root = _copy_of_the_checkout(tmp_path)
    stamp = root / ".venv" / ".installed-check"
    try:
        assert _env(root, "venv_current check").returncode == 1  # never installed
        stamp.write_text(_env(root, "venv_stamp check").stdout)
        assert _env(root, "venv_current check").returncode == 0
        # A new lock (one version moved): the stamp no longer matches, nor the versions.
        lock = (root / "constraints.txt").read_text()
        moved = re.sub(r"(?m)^ruff==.*$", "ruff==0.0.1", lock)
        assert moved != lock
        (root / "constraints.txt").write_text(moved)
        assert _env(root, "venv_current check").returncode == 1
        # Same stamp but a version that differs in the .venv: refused too.
        stamp.write_text(_env(root, "venv_stamp check").stdout)
        refused = _env(root, "venv_current check")
        assert refused.returncode == 1
        assert "ruff" in refused.stderr and "the lock says 0.0.1" in refused.stderr
    finally:
        stamp.unlink(missing_ok=True)
