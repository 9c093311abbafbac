"""The command line's progress bar: one bar however many threads report, none under --quiet."""

from __future__ import annotations

import threading

import click
from click.testing import CliRunner

from ecoclassify.cli.progress import ProgressBar


def _report_from_threads(bar: ProgressBar, threads: int) -> None:
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()  # every thread makes the first call at the same moment
        bar(1, threads)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_threads_reporting_at_once_open_a_single_bar(capsys):
    for _ in range(20):  # the race needs a few tries to show itself
        with ProgressBar("checking images") as bar:
            _report_from_threads(bar, 8)
        assert bar.done == 8 and bar.closed
    assert capsys.readouterr().err.count("checking images") == 20


def test_a_bar_under_quiet_draws_nothing_even_from_worker_threads():
    @click.command()
    @click.option("--quiet", is_flag=True)
    def command(quiet: bool) -> None:
        with ProgressBar("checking images") as bar:
            _report_from_threads(bar, 4)  # worker threads do not see click's context

    assert "checking images" in CliRunner().invoke(command, []).output
    assert "checking images" not in CliRunner().invoke(command, ["--quiet"]).output
