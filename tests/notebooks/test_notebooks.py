"""Every notebook runs top to bottom (globbed, not a hand-kept list), in its SMOKE setting.

Each notebook has a cell tagged ``parameters`` that defines ``SMOKE``; papermill injects
``SMOKE = True`` so the whole set runs in CI time. Outputs are written to a temp folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_exist() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert "00_quickstart.ipynb" in names and "01_data_exploration.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_parameters_cell_and_no_outputs(path: Path) -> None:
    book = json.loads(path.read_text())
    code_cells = [c for c in book["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code_cells[0].get("metadata", {}).get("tags", [])
    assert "SMOKE" in "".join(code_cells[0]["source"])
    assert all(not c.get("outputs") for c in code_cells), "commit notebooks without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    import papermill

    os.environ.setdefault("MPLBACKEND", "Agg")
    papermill.execute_notebook(
        str(path),
        str(tmp_path / path.name),
        parameters={"SMOKE": True},
        kernel_name="python3",
        cwd=str(path.parent),
        progress_bar=False,
        execution_timeout=300,
    )
