"""The scheduled routes of ``recsys drift`` in deploy/: cron, systemd timer, papermill.

Each schedule's command is parsed with the real command line (an unknown or misspelt option
fails here, not at 06:00), its windows are parsed, and the unit files are checked by
``systemd-analyze verify`` where it exists.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import typer

from recsys.cli import app
from recsys.monitoring import parse_window

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PREFIX = "/opt/recsys"
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def drift_params(argv: list[str]) -> dict:
    """Parse ``recsys drift ...`` arguments with the real command (raises on bad options)."""
    assert Path(argv[0]).name == "recsys" and argv[1] == "drift", argv
    group = typer.main.get_command(app)
    command = group.get_command(None, "drift")  # type: ignore[arg-type]
    return command.make_context("drift", list(argv[2:])).params


def check_windows(params: dict) -> None:
    assert params["log"] is not None
    for key in ("reference_window", "current_window"):
        window = parse_window(params[key], now=1.8e9)
        assert window.end > window.start


def cron_jobs(path: Path) -> list[tuple[list[str], str]]:
    jobs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        jobs.append((fields[:5], fields[5]))
    return jobs


def test_cron_line_runs_a_valid_recsys_drift() -> None:
    (schedule, command), *rest = cron_jobs(DEPLOY / "cron" / "recsys-drift.cron")
    assert not rest
    assert all(CRON_FIELD.match(f) for f in schedule), schedule
    assert "%" not in command  # cron would turn it into a newline
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if w.endswith("bin/recsys"))
    end = words.index(">>")
    params = drift_params(words[start:end])
    check_windows(params)
    assert params["workspace"] is not None and not params["no_workspace"]
    assert words[words.index("cd") + 1] == PREFIX
    # a non-zero exit (1 drift, 2 error) is reported, not swallowed
    assert "||" in words and "$?" in command


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_systemd_service_and_timer() -> None:
    service = unit(DEPLOY / "systemd" / "recsys-drift.service")
    timer = unit(DEPLOY / "systemd" / "recsys-drift.timer")
    assert service["Service"]["Type"] == "oneshot"
    exec_start = shlex.split(service["Service"]["ExecStart"])
    assert exec_start[0] == f"{PREFIX}/.venv/bin/recsys"
    check_windows(drift_params(exec_start))
    assert service["Service"]["WorkingDirectory"] == PREFIX
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "recsys-drift.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    calendar = timer["Timer"]["OnCalendar"]
    if shutil.which("systemd-analyze"):
        check = subprocess.run(
            ["systemd-analyze", "calendar", calendar], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
    else:  # without systemd: at least the shape "<dow?> Y-M-D H:M:S <tz?>"
        assert re.match(r"^([A-Za-z,.]+ )?\S+-\S+-\S+ \d\d:\d\d(:\d\d)?( \w+)?$", calendar)


def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on copies installed under a temporary prefix.

    verify insists that ExecStart's binary exists, so the units are copied with the install
    prefix replaced by a temporary folder holding a stub ``recsys``.
    """
    if shutil.which("systemd-analyze") is None:
        # the unit syntax is still covered by test_systemd_service_and_timer
        return
    prefix = tmp_path / "opt" / "recsys"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    stub = prefix / ".venv" / "bin" / "recsys"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = []
    for name in ("recsys-drift.service", "recsys-drift.timer"):
        text = (DEPLOY / "systemd" / name).read_text().replace(PREFIX, str(prefix))
        units.append(tmp_path / name)
        units[-1].write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_papermill_route_passes_the_notebooks_parameters() -> None:
    script = DEPLOY / "papermill" / "run-drift-notebook.sh"
    assert script.stat().st_mode & 0o111, "the script must be executable"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    text = script.read_text()
    assert "notebooks/08_drift_monitoring.ipynb" in text
    passed = set(re.findall(r"-p (\w+) ", text))
    book = json.loads((ROOT / "notebooks" / "08_drift_monitoring.ipynb").read_text())
    cell = next(c for c in book["cells"] if "parameters" in c["metadata"].get("tags", []))
    defined = set(re.findall(r"^(\w+) = ", "".join(cell["source"]), flags=re.MULTILINE))
    assert passed and passed <= defined, passed - defined
    assert {"LOG_DIR", "REFERENCE_WINDOW", "CURRENT_WINDOW", "FAIL_ON_DRIFT"} <= passed
    for window in re.findall(r"_WINDOW:-([^}]+)\}", text):
        parse_window(window, now=1.8e9)
