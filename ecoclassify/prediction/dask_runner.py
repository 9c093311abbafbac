"""The Dask engine of ``ecoclassify predict``: chunks of the file list labelled on Dask workers.

The discovered files are cut into chunks of whole batches; each worker process loads the
model once and labels its chunks with the same decoder, batching and padding as the local
engine, so the merged output has the same rows, order and probabilities. With
``runtime="litert"`` the client converts and checks the model once (workers never convert,
so they cannot race on the file) and workers open the kept file, after checking its SHA-256,
without loading Keras. Results come back
in submission order and go through the same checkpoint, so ``--resume`` works the same way.
Needs the optional extra: ``pip install 'ecoclassify[dask]'``.
"""

from __future__ import annotations

import collections
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

from ecoclassify.errors import ConfigError
from ecoclassify.models.io import LoadedClassifier, load_classifier
from ecoclassify.models.runtimes import InferenceRuntime
from ecoclassify.prediction.checkpoint import RawRow
from ecoclassify.prediction.inputs import WorkItem
from ecoclassify.prediction.options import PredictOptions
from ecoclassify.prediction.runner import Runner, chunks, classify_decoded, decode

#: Batches per Dask task: large enough that scheduling costs little, small enough to balance.
BATCHES_PER_TASK = 8

_WORKER_MODELS: dict[str, LoadedClassifier] = {}
_WORKER_RUNTIMES: dict[tuple[str, str, int, int], tuple[LoadedClassifier, InferenceRuntime]] = {}


def label_chunk(model_path: str, items: list[WorkItem], batch_size: int, threads: int,
                max_pixels: Optional[int], allow_truncated: bool, litert: Optional[tuple[str, str]] = None
                ) -> list[RawRow]:
    """Label ``items`` on a Dask worker; the model is loaded once per worker process.

    Batches start at the chunk's first item, and chunks hold whole batches, so every image is
    classified in the same batch as in a local run. ``litert`` is ``(file, sha256)`` of the
    LiteRT model the client kept and checked; None runs Keras.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runtime = None
    if litert is not None:
        classifier, runtime = _worker_litert(model_path, litert, batch_size, threads)
    else:
        classifier = _WORKER_MODELS.get(model_path)
        if classifier is None:
            classifier = _WORKER_MODELS[model_path] = load_classifier(model_path)
    rows: list[RawRow] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ecoclassify-decode") as pool:
        for batch in chunks(iter(items), batch_size):
            results = list(pool.map(lambda item: decode(item, classifier.image_size, max_pixels, allow_truncated),
                                    batch))
            rows.extend(classify_decoded(classifier, results, batch_size, runtime))
    return rows


def _worker_litert(model_path: str, litert: tuple[str, str], batch_size: int,
                   threads: int) -> tuple[LoadedClassifier, InferenceRuntime]:
    """The worker's interpreter for the kept LiteRT file, opened once; Keras is never loaded."""
    from ecoclassify.models.litert import open_litert

    key = (*litert, batch_size, threads)
    if key not in _WORKER_RUNTIMES:
        runtime = open_litert(Path(litert[0]), litert[1], batch_size, threads)
        # Decoding needs only the image size, which the LiteRT model's input states.
        _WORKER_RUNTIMES[key] = LoadedClassifier(None, [], runtime.image_size, Path(model_path)), runtime
    return _WORKER_RUNTIMES[key]


class DaskRunner(Runner):
    """A :class:`Runner` whose chunks are labelled by Dask workers instead of local threads.

    Args:
        classifier: The loaded model.
        options: As for :class:`Runner`, plus ``scheduler`` (address of a running Dask
            scheduler, e.g. from ``dask-jobqueue`` on SLURM; None starts a ``LocalCluster``) and
            ``dask_workers`` (its worker processes; default 2, or 1 on one core); ``threads`` is
            the decoding threads per Dask worker.
        **kwargs: As for :class:`Runner`.
    """

    def __init__(self, classifier: LoadedClassifier, options: PredictOptions, **kwargs: Any) -> None:
        super().__init__(classifier, options, **kwargs)
        self.scheduler = options.scheduler
        self.n_workers = options.dask_workers

    def run(self, items: Iterator[WorkItem]) -> None:
        """Label ``items`` on the cluster, keeping a bounded number of chunks in flight."""
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--engine dask needs Dask: pip install 'ecoclassify[dask]'") from None
        started = time.perf_counter()
        if self.progress is not None:
            self.progress(0, self.total)
        cluster = None
        if self.scheduler is None:
            workers = self.n_workers or max(1, min(2, os.cpu_count() or 1))
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(self.scheduler or cluster)
        try:
            in_flight = 2 * max(1, len(client.scheduler_info().get("workers", {})))
            pending: collections.deque = collections.deque()
            model_path = str(self.classifier.path)
            litert = None
            if self.runtime is not None and self.runtime.name == "litert":
                litert = (str(self.runtime.path.resolve()), self.runtime.sha256)
            for chunk in chunks(items, self.batch_size * BATCHES_PER_TASK):
                reused = [self.reusable(batch) for batch in chunks(iter(chunk), self.batch_size)]
                if all(rows is not None for rows in reused):
                    pending.append((chunk, None))
                else:
                    pending.append((chunk, client.submit(label_chunk, model_path, chunk, self.batch_size, self.workers,
                                                         self.max_pixels, self.allow_truncated, litert,
                                                         pure=False)))
                while len(pending) > in_flight:
                    self._collect(*pending.popleft())
            while pending:
                self._collect(*pending.popleft())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
            self.seconds = time.perf_counter() - started

    def _collect(self, chunk: list[WorkItem], future: Any) -> None:
        if future is None:
            self.rows.extend(self.done[(item.root, item.filepath)] for item in chunk)
            self.reused += len(chunk)
        else:
            self.add(future.result())
        if self.progress is not None:
            self.progress(len(chunk), self.total)
