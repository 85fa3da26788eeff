"""The job runner: one job at a time, progress and ETA, cancel, errors kept for the tab."""
from __future__ import annotations

import threading

import pytest

from lib_mecha.errors import Busy, MergeCancelled, ParameterError
from lib_mecha.jobs import JobRunner


def test_a_second_job_is_refused_while_one_runs():
    runner = JobRunner()
    release = threading.Event()
    first = runner.start("merge", "merge & load", lambda job: release.wait(30) and "ok")
    with pytest.raises(Busy, match=r"a merge is running \(merge & load\); save was not started"):
        runner.start("save", "save x", lambda job: None)
    release.set()
    assert first.finished.wait(30) and first.result == "ok" and first.error is None
    second = runner.start("save", "save x", lambda job: 42)
    assert second.finished.wait(30) and second.result == 42


def test_progress_eta_and_fraction():
    runner = JobRunner()
    step = threading.Event()
    go_on = threading.Event()

    def work(job):
        assert job.eta() is None
        job.progress(25, 100, 1000)
        step.set()
        go_on.wait(30)
    job = runner.start("save", "save x", work)
    assert step.wait(30)
    assert job.fraction == 0.25 and job.phase == "merging" and job.eta() is not None and job.eta() >= 0
    go_on.set()
    assert job.finished.wait(30) and job.eta() is None


def test_cancel_sets_the_event_the_engine_checks():
    runner = JobRunner()
    assert runner.cancel() is False

    def work(job):
        if not job.cancel.wait(30):
            return "not cancelled"
        raise MergeCancelled()
    job = runner.start("merge", "merge & load", work)
    assert runner.cancel() is True
    assert job.finished.wait(30)
    assert job.cancelled and job.message() == "merge cancelled; nothing was written"
    assert runner.busy() is None


def test_errors_are_kept_as_readable_messages():
    runner = JobRunner()

    def fail(job):
        raise ParameterError("weighted_sum", "alpha", "1.5 is out of range")
    job = runner.start("merge", "m", fail)
    assert job.finished.wait(30)
    assert job.message() == "weighted_sum: parameter 'alpha': 1.5 is out of range"

    def bug(job):
        raise KeyError("x")
    job = runner.start("merge", "m", bug)
    assert job.finished.wait(30)
    assert job.message() == "unexpected error: KeyError: 'x'"
