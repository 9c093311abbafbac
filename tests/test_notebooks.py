"""The notebooks run from top to bottom (shrunk by ECOCLASSIFY_NOTEBOOK_SMOKE=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra (nbclient, nbformat)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra (nbclient, nbformat)")

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
VGG16_SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vgg16_hed_bsds500_notop.weights.h5"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_the_notebook_runs_from_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCLASSIFY_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ECOCLASSIFY_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("ECOCLASSIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # Offline there is no ImageNet download: the shared VGG16 weights when present, else random ones.
    monkeypatch.setenv("ECOCLASSIFY_VGG16_WEIGHTS", str(VGG16_SHARED) if VGG16_SHARED.is_file() else "none")
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "stored with outputs"
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
    assert not any(os.scandir(NOTEBOOKS / "notebook-runs")) if (NOTEBOOKS / "notebook-runs").exists() else True
