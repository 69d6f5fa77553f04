"""requirements.lock, pyproject.toml and environment.yml describe one environment."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        pins[_canonical(match.group(1))] = match.group(2)
    return pins


def _lock() -> dict[str, str]:
    return _pins((ROOT / "requirements.lock").read_text().splitlines())


def test_lock_is_fully_pinned_without_duplicates() -> None:
    lines = [
        ln
        for ln in (ROOT / "requirements.lock").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert len(_lock()) == len(lines)


def test_pyproject_pins_agree_with_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = _lock()
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    for name, version in _pins(declared).items():
        assert lock.get(name) == version, f"pyproject {name}=={version}, lock {lock.get(name)}"


def test_environment_yml_agrees_with_lock() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins(pip_section)
    lock = _lock()
    # torchrec is installed with --no-deps after the conda env is created (see the file)
    assert set(lock) - set(env_pins) == {"torchrec"}
    assert all(lock[name] == version for name, version in env_pins.items())


def test_installed_environment_matches_lock() -> None:
    lock = _lock()
    for name in ("torch", "torchrec", "fbgemm-gpu-cpu", "pandas", "evidently", "bentoml"):
        installed = metadata.version(name)
        assert installed.split("+")[0] == lock[name], f"{name}: {installed} != {lock[name]}"
