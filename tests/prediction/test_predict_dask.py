"""The Dask engine labels a folder exactly like the local engine (LocalCluster of 2 workers)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.prediction._predict_support import COLOURS, train_tiny_model
from tests.prediction.test_predict import write_card, write_numbered

distributed = pytest.importorskip("dask.distributed", reason="the Dask engine needs ecoclassify[dask]")

pytestmark = pytest.mark.slow

PROBS = [f"prob_{name}" for name in COLOURS]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("dask-model"))


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 worker processes shared by the tests (each loads the model once)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_the_dask_engine_gives_the_same_rows_order_and_probabilities_as_a_local_run(tmp_path, model_dir,
                                                                                  scheduler):
    from ecoclassify.prediction.labelling import predict

    card = tmp_path / "card"
    write_card(card)  # good and damaged files of every kind
    write_numbered(card / "more", 70)  # several chunks of 8 batches of 4
    local = predict(model_dir, card, batch_size=4)
    dask = predict(model_dir, card, batch_size=4, engine="dask", scheduler=scheduler, threads=1)
    assert list(dask.columns) == list(local.columns)
    assert dask[["root", "filepath", "status", "error", "label"]].equals(local[["root", "filepath", "status", "error",
                                                                                "label"]])
    probabilities = [c for c in local.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(dask[probabilities], local[probabilities], atol=1e-5, rtol=0)
    assert (dask["status"] == "failed").sum() >= 5 and dask.loc[dask["status"] == "failed", "label"].isna().all()


def test_a_dask_run_resumes_from_a_checkpoint_to_the_uninterrupted_result(tmp_path, model_dir, scheduler):
    from ecoclassify.prediction.labelling import PredictionInterrupted, predict

    folder = write_numbered(tmp_path / "images", 80)
    expected = predict(model_dir, folder, batch_size=4, output=tmp_path / "plain.csv")

    calls = {"n": 0}

    def stop_after_two_chunks(advance, total):
        calls["n"] += advance
        if calls["n"] >= 64:
            raise KeyboardInterrupt

    output = tmp_path / "dask.csv"
    with pytest.raises(PredictionInterrupted):
        predict(model_dir, folder, batch_size=4, output=output, checkpoint_every=8, engine="dask",
                scheduler=scheduler, threads=1, progress=stop_after_two_chunks)
    assert not output.exists()
    resumed = predict(model_dir, folder, batch_size=4, output=output, resume=True, engine="dask",
                      scheduler=scheduler, threads=1)
    columns = [c for c in expected.columns if c != "detail"]
    pd.testing.assert_frame_equal(resumed[columns], expected[columns], atol=1e-5, rtol=0)
    shutil.rmtree(tmp_path / "images")


def test_the_predict_command_starts_its_own_local_cluster_with_engine_dask(tmp_path, model_dir):
    from click.testing import CliRunner

    from ecoclassify.cli.app import main

    folder = write_numbered(tmp_path / "images", 12)
    result = CliRunner().invoke(main, ["predict", str(model_dir), str(folder), "-o", str(tmp_path / "out.csv"),
                                       "--engine", "dask", "--workers", "1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "out.csv")) == 12


def test_scheduler_options_without_the_dask_engine_are_refused(tmp_path, model_dir):
    from ecoclassify.errors import ConfigError
    from ecoclassify.prediction.labelling import predict

    with pytest.raises(ConfigError, match="apply to engine 'dask' only"):
        predict(model_dir, write_numbered(tmp_path / "images", 2), dask_workers=2)


def test_dask_workers_run_the_litert_file_the_client_converted_and_checked(tmp_path, model_dir, scheduler):
    pytest.importorskip("ai_edge_litert", reason="the LiteRT runtime needs ecoclassify[litert]")
    from ecoclassify.files import LITERT_FILE, LITERT_RECORD
    from ecoclassify.prediction.labelling import predict

    run = shutil.copytree(model_dir, tmp_path / "run")
    folder = write_numbered(tmp_path / "images", 40)
    local = predict(run, folder, batch_size=4, runtime="litert", threads=1)
    record = (run / LITERT_RECORD).read_text()
    kept = (run / LITERT_FILE).stat().st_mtime_ns
    dask = predict(run, folder, batch_size=4, runtime="litert", engine="dask", scheduler=scheduler, threads=1)
    pd.testing.assert_frame_equal(dask, local, atol=1e-6, rtol=0)
    # No worker converted the model again: the client's checked file is the one they ran.
    assert (run / LITERT_RECORD).read_text() == record and (run / LITERT_FILE).stat().st_mtime_ns == kept
    assert dask.attrs["metadata"]["options"]["runtime"] == "litert"


def test_a_dask_worker_runs_litert_without_keras_and_refuses_a_file_changed_since_the_check(tmp_path, model_dir):
    pytest.importorskip("ai_edge_litert", reason="the LiteRT runtime needs ecoclassify[litert]")
    from ecoclassify.errors import ModelError
    from ecoclassify.files import LITERT_FILE, LITERT_RECORD
    from ecoclassify.prediction import dask_runner
    from ecoclassify.prediction.inputs import WorkItem
    from ecoclassify.prediction.labelling import predict

    run = shutil.copytree(model_dir, tmp_path / "run")
    folder = write_numbered(tmp_path / "images", 8)
    local = predict(run, folder, batch_size=4, runtime="litert", threads=1)
    sha = json.loads((run / LITERT_RECORD).read_text())["tflite_sha256"]
    items = [WorkItem(str(folder), path) for path in local["filepath"]]
    rows = dask_runner.label_chunk(str(run / "model.keras"), items, 4, 1, None, False, (str(run / LITERT_FILE), sha))
    assert str(run / "model.keras") not in dask_runner._WORKER_MODELS  # Keras was never loaded for it
    np.testing.assert_array_equal(np.stack([row.probs for row in rows]).astype(float).round(6), local[PROBS].to_numpy())
    with pytest.raises(ModelError, match="changed after it was checked against Keras"):
        dask_runner.label_chunk(str(run / "model.keras"), items, 4, 1, None, False, (str(run / LITERT_FILE), "0" * 64))
