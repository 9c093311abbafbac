"""The decoding and classification loop of ``ecoclassify predict``.

Chunks of ``batch_size`` files are decoded by a thread pool a few chunks ahead of the one
being classified: Pillow releases the GIL, so decoding overlaps the model, and memory holds
only those chunks however many files there are. Rows are handed to the checkpoint every
``checkpoint_every`` images.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ecoclassify.data.images import ImageReadError, load_rgb
from ecoclassify.errors import ModelError
from ecoclassify.models.io import LoadedClassifier
from ecoclassify.models.runtimes import InferenceRuntime, KerasRuntime
from ecoclassify.prediction.checkpoint import Checkpoint, RawRow, file_identity
from ecoclassify.prediction.inputs import WorkItem
from ecoclassify.prediction.options import PredictOptions

ProgressCallback = Callable[[int, int], None]

# Chunks decoded ahead of the one being classified: enough to keep the model busy, few enough
# that memory stays at a handful of batches however many files there are.
PREFETCH_CHUNKS = 2


class Runner:
    """Decodes chunks ahead in a thread pool, classifies them in order, checkpoints as it goes.

    Args:
        classifier: The loaded model.
        options: Batch size, decoding threads, limits and checkpoint interval.
        checkpoint: Where to save rows as they are done (None: nowhere).
        done: Rows of an earlier, interrupted run, by ``(root, filepath)``.
        progress: Called as ``progress(advance, total)``.
        runtime: What runs the model (None: the classifier's Keras model).

    Attributes:
        rows: Every row so far (re-used and new), in processing order.
        processed: Files decoded by this runner; ``reused`` came from the checkpoint.
        changed: Files the checkpoint held that were read again because their size or
            modification time changed since (or were not recorded).
        total: Files expected (for progress); set by the caller after its listing pass.
        seconds: Wall time of :meth:`run`.
    """

    def __init__(self, classifier: LoadedClassifier, options: PredictOptions, *, checkpoint: Checkpoint | None = None,
                 done: dict[tuple[str, str], RawRow] | None = None, progress: ProgressCallback | None = None,
                 runtime: InferenceRuntime | None = None) -> None:
        self.classifier = classifier
        self.runtime = runtime
        self.batch_size = options.batch_size
        self.workers = options.threads or os.cpu_count() or 1
        self.allow_truncated = options.allow_truncated
        self.max_pixels = options.max_pixels
        self.checkpoint = checkpoint
        self.checkpoint_every = options.checkpoint_every
        self.done = done or {}
        self.progress = progress
        self.total = 0
        self.rows: list[RawRow] = []
        self.unsaved: list[RawRow] = []
        self.processed = 0
        self.reused = 0
        self.changed = 0
        self.seconds = 0.0

    def run(self, items: Iterator[WorkItem]) -> None:
        """Classifies ``items`` in chunks, appending to :attr:`rows`; chunks the checkpoint holds are re-used."""
        started = time.perf_counter()
        if self.progress is not None:
            self.progress(0, self.total)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ecoclassify-decode")
        try:
            pending: collections.deque = collections.deque()
            for chunk in chunks(items, self.batch_size):
                pending.append(self._start(chunk, pool))
                while len(pending) > PREFETCH_CHUNKS:
                    self._finish(*pending.popleft())
            while pending:
                self._finish(*pending.popleft())
        except BaseException:
            # Ctrl-C or a crash: drop queued decodes and do not wait for running ones, so the
            # checkpoint is saved at once even when a read hangs (a dead network mount).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        else:
            pool.shutdown(wait=True)
        finally:
            self.seconds = time.perf_counter() - started

    def _start(self, chunk: list[WorkItem], pool: ThreadPoolExecutor) -> tuple[list[WorkItem], list[Future] | None]:
        # A chunk is re-used only when all its files were classified: recomputing partly done
        # chunks whole keeps every batch as in an uninterrupted run, so the numbers match exactly.
        if self.reusable(chunk) is not None:
            return chunk, None
        size = self.classifier.image_size
        futures = [pool.submit(decode, item, size, self.max_pixels, self.allow_truncated) for item in chunk]
        return chunk, futures

    def _finish(self, chunk: list[WorkItem], futures: list[Future] | None) -> None:
        if futures is None:
            self.rows.extend(self.done[(item.root, item.filepath)] for item in chunk)
            self.reused += len(chunk)
        else:
            results = [future.result() for future in futures]
            self.add(classify_decoded(self.classifier, results, self.batch_size, self.runtime))
        if self.progress is not None:
            self.progress(len(chunk), self.total)

    def add(self, rows: list[RawRow]) -> None:
        """Records newly classified rows and saves a checkpoint when enough have gathered."""
        self.rows.extend(rows)
        self.unsaved.extend(rows)
        self.processed += len(rows)
        if len(self.unsaved) >= self.checkpoint_every:
            self.flush()

    def reusable(self, chunk: list[WorkItem]) -> list[RawRow] | None:
        """The checkpoint's rows for ``chunk`` when every file in it was classified, else None."""
        previous = [self.done.get((item.root, item.filepath)) for item in chunk]
        if not all(row is not None and row.status == "ok" for row in previous):
            return None
        # The same name is not the same photo: a card swapped for new photos must not keep old labels.
        changed = sum(1 for item, row in zip(chunk, previous) if row.identity is None
                      or row.identity != file_identity(item.path))
        self.changed += changed
        return None if changed else previous

    def flush(self) -> None:
        """Saves the rows not yet in the checkpoint."""
        if self.checkpoint is not None and self.unsaved:
            self.checkpoint.append(self.unsaved)
        self.unsaved = []


def classify_files(classifier: LoadedClassifier, paths: list[Path], options: PredictOptions,
                   progress: ProgressCallback | None = None) -> list[RawRow]:
    """Decode and classify image files exactly as ``predict`` does: same decoder, batching and padding.

    ``evaluate`` uses it, so the numbers it reports are the ones ``predict`` writes for the
    same files.

    Args:
        classifier: The loaded model.
        paths: Image files, in the order wanted.
        options: Batch size, decoding threads and limits (output and checkpoint fields unused).
        progress: Called as ``progress(advance, total)``.

    Returns:
        One row per file, in the order of ``paths``; an unreadable file has ``status`` ``failed``,
        its reason and no probabilities.
    """
    runner = Runner(classifier, options, progress=progress)
    runner.total = len(paths)
    runner.run(WorkItem(str(Path(path).parent), Path(path).name) for path in paths)
    return runner.rows


def classify_decoded(classifier: LoadedClassifier, results: list[tuple[RawRow, np.ndarray | None]],
                     batch_size: int, runtime: InferenceRuntime | None = None) -> list[RawRow]:
    """Classify one batch of decoded files; failed ones keep their row without probabilities.

    The batch is always padded to ``batch_size``: one traced shape, and each image's numbers
    do not depend on how many others happened to be read with it (so a resumed or distributed
    run gives exactly the numbers of a plain one). ``runtime`` runs the model (None: the
    classifier's Keras model); this is the only call to it.
    """
    arrays = [array for _, array in results if array is not None]
    if not arrays:
        return [row for row, _ in results]
    height, width = classifier.image_size
    batch = np.zeros((batch_size, height, width, 3), dtype=np.uint8)
    batch[: len(arrays)] = np.stack(arrays)
    runtime = runtime if runtime is not None else KerasRuntime(classifier.model)
    probs = np.asarray(runtime.predict_batch(batch), dtype=np.float32)[: len(arrays)].copy()
    check_probabilities(classifier, probs)
    rows, position = [], 0
    for row, array in results:
        if array is not None:
            row = row._replace(probs=probs[position])
            position += 1
        rows.append(row)
    return rows


# Slack for float32 (or float16) rounding in a softmax over many classes; logits are far off.
_PROBABILITY_TOLERANCE = 0.01


def check_probabilities(classifier: LoadedClassifier, probs: np.ndarray) -> None:
    """Refuses model outputs that are not one probability distribution per image.

    A model exported without its softmax gives logits: written as ``prob_*`` and scores they
    would look like confident probabilities above 1 and labels would pass any threshold.

    Raises:
        ModelError: Some row has a value outside [0, 1] or does not sum to 1.
    """
    if probs.size == 0:
        return
    sums = probs.sum(axis=1)
    bad = ~(np.isfinite(probs).all(axis=1) & (probs.min(axis=1) >= -_PROBABILITY_TOLERANCE)
            & (probs.max(axis=1) <= 1 + _PROBABILITY_TOLERANCE) & (np.abs(sums - 1) <= _PROBABILITY_TOLERANCE))
    if bad.any():
        row = probs[int(np.argmax(bad))]
        shown = ", ".join(f"{value:.4g}" for value in row[:6]) + (", ..." if row.size > 6 else "")
        raise ModelError(
            f"the model's outputs are not probabilities (a softmax is missing?): {classifier.path} must give, per "
            "image, one value in [0, 1] per class summing to 1; add a softmax as its last layer (e.g. "
            f"keras.layers.Softmax()) and save it again. Received: [{shown}] (sum {float(row.sum()):.4g})")


def chunks(items: Iterator[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def decode(item: WorkItem, size: tuple[int, int], max_pixels: int | None,
            allow_truncated: bool) -> tuple[RawRow, np.ndarray | None]:
    # Before reading: a file replaced while it is read then looks changed on --resume, never the reverse.
    identity = file_identity(item.path)
    try:
        loaded = load_rgb(item.path, size=size, max_pixels=max_pixels, allow_truncated=allow_truncated)
    except ImageReadError as exc:
        return RawRow(item.root, item.filepath, "failed", exc.reason, exc.detail, None, None, None, None,
                      identity), None
    when = loaded.datetime.isoformat(sep=" ") if loaded.datetime else None
    return RawRow(item.root, item.filepath, "ok", None, None, when, loaded.width, loaded.height, None,
                  identity), loaded.array
