"""How long does a Camtrap DP export of a large predict run take? Goal: 100,000 images in <= 30 s.

Writes a synthetic predictions csv as ``ecoclassify predict --sequence-gap`` writes it (no
images are needed: the export reads the EXIF times from the ``datetime`` column), 20
deployments of 5,000 images each with sequences of 5 frames, then times
:func:`ecoclassify.export_camtrapdp` end to end (reading the csv, checking the inputs, writing
the package). Run from the repository root: ``python bench/camtrapdp_export.py [--rows 100000]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecoclassify import export_camtrapdp  # noqa: E402

CLASSES = ["blank", "deer", "fox", "human", "owl", "vehicle"]


def write_inputs(folder: Path, rows: int, cameras: int = 20) -> Path:
    rng = np.random.default_rng(0)
    per_camera = rows // cameras
    start = dt.datetime(2024, 5, 1, 8, 0, 0)
    probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.3, size=rows)
    best = probs.argmax(axis=1)
    order = np.argsort(-probs, axis=1)
    index = np.arange(rows)
    camera = index // per_camera
    frame = pd.DataFrame({
        "filepath": [f"CAM{c:02d}/DCIM/IMG_{i:06d}.JPG" for c, i in zip(camera, index)],
        "root": "/data/cards",
        "status": np.where(index % 997 == 0, "failed", "ok"),
        "error": np.where(index % 997 == 0, "truncated", ""),
        "detail": "",
        "label": np.where(probs.max(axis=1) < 0.5, "unknown", np.array(CLASSES)[best]),
        "score": probs.max(axis=1).round(6),
        "top1_label": np.array(CLASSES)[order[:, 0]], "top1_score": probs[index, order[:, 0]].round(6),
        **{f"prob_{name}": probs[:, k].round(6) for k, name in enumerate(CLASSES)},
        "datetime": [(start + dt.timedelta(seconds=int(i % per_camera) * 60 + int(i % 5) * 2)).isoformat(sep=" ")
                     for i in index],
        "width": 1920, "height": 1080,
        "sequence_id": index // 5,
        "sequence_label": np.array(CLASSES)[best[(index // 5) * 5]],
        "sequence_score": probs.max(axis=1)[(index // 5) * 5].round(6),
    })
    frame.to_csv(folder / "predictions.csv", index=False)
    deployments = pd.DataFrame({"deploymentID": [f"CAM{c:02d}" for c in range(cameras)],
                                "locationID": [f"LOC{c:02d}" for c in range(cameras)],
                                "latitude": 50 + np.arange(cameras) / 100, "longitude": 4 + np.arange(cameras) / 100,
                                "deploymentStart": "2024-05-01T00:00:00+02:00",
                                "deploymentEnd": "2024-12-31T00:00:00+01:00"})
    deployments.to_csv(folder / "deployments.csv", index=False)
    pd.DataFrame({"class": CLASSES, "scientificName": ["", "Capreolus capreolus", "Vulpes vulpes", "", "Strigiformes",
                                                       ""],
                  "taxonRank": ["", "species", "species", "", "order", ""]}).to_csv(folder / "taxonomy.csv", index=False)
    (folder / "project.yaml").write_text("title: Benchmark\ncontributors: [{title: Bench Mark, role: contact}]\n"
                                         "project: {title: Benchmark project, samplingDesign: opportunistic}\n",
                                         encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_inputs(Path(tmp), args.rows)
        began = time.perf_counter()
        result = export_camtrapdp(folder / "predictions.csv", folder / "deployments.csv", folder / "taxonomy.csv",
                                  folder / "project.yaml", folder / "package")
        seconds = time.perf_counter() - began
        print(result.format())
        print(f"exported {args.rows} predictions in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s); goal <= 30 s")


if __name__ == "__main__":
    main()
