"""Every notebook runs top to bottom (globbed, not a hand-kept list), in its SMOKE setting.

Each notebook has a cell tagged ``parameters`` that defines ``SMOKE``; papermill injects
``SMOKE = True`` so the whole set runs in CI time. Outputs are written to a temp folder.
Notebooks run in the ``recsys`` kernel they name — the one ``make lab`` registers in
``.venv`` — and each must show at least one figure inline (an ``image/png`` output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "recsys"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


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


@pytest.fixture(scope="session")
def recsys_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ``recsys`` kernel, resolving to the interpreter that runs the tests.

    ``make lab`` registers it inside ``.venv`` (``ipykernel install --prefix .venv``); where
    that has not run (or a ``recsys`` kernel of another environment is found) the same
    installer registers it in a temporary ``JUPYTER_PATH``, which Jupyter searches first.
    """
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if os.path.abspath(spec.argv[0]) == os.path.abspath(sys.executable):
            yield KERNEL
            return
    except NoSuchKernel:
        pass
    prefix = tmp_path_factory.mktemp("jupyter")
    install(prefix=str(prefix), kernel_name=KERNEL, display_name="recsys (.venv)")
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(prefix / "share" / "jupyter"), before) if p
    )
    yield KERNEL
    if before is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = before


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_names_the_recsys_kernel(path: Path) -> None:
    spec = json.loads(path.read_text())["metadata"]["kernelspec"]
    assert spec["name"] == KERNEL and spec["language"] == "python"


def test_recsys_kernel_resolves_to_the_project_environment(recsys_kernel: str) -> None:
    """The spec the notebooks name starts this environment's python, which imports this
    checkout's recsys."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(recsys_kernel)
    assert os.path.abspath(spec.argv[0]) == os.path.abspath(sys.executable)
    assert "ipykernel_launcher" in spec.argv
    probe = subprocess.run(
        [spec.argv[0], "-c", "import sys, recsys; print(sys.prefix); print(recsys.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **spec.env},
    )
    prefix, module = probe.stdout.split()
    assert prefix == sys.prefix
    assert Path(module).resolve().is_relative_to(ROOT / "src")


def test_make_lab_registers_the_kernel_the_notebooks_name() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "ipykernel install --prefix" in makefile and f"--name {KERNEL}" in makefile
    assert "jupyter lab" in makefile


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_shows_a_figure(
    path: Path, tmp_path: Path, recsys_kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papermill

    # the kernel's backend is set from outside, as JupyterLab does: inline PNGs, never a window
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    output = tmp_path / path.name
    papermill.execute_notebook(
        str(path),
        str(output),
        parameters={"SMOKE": True},
        kernel_name=recsys_kernel,
        cwd=str(path.parent),
        progress_bar=False,
        execution_timeout=300,
    )
    cells = json.loads(output.read_text())["cells"]
    images = [
        out
        for cell in cells
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert images, f"{path.name} showed no figure"
