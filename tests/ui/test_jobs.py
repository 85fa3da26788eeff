"""The job runner: one job at a time, progress and ETA, cancel, errors kept for the tab."""
from __future__ import annotations

import threading

import pytest

from lib_mecha.errors import Busy, MergeCancelled, ParameterError
from lib_mecha.jobs import Job, JobRunner


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
        job.planned(100, 4000)
        job.progress(25, 100, 1000)
        step.set()
        go_on.wait(30)
    job = runner.start("save", "save x", work)
    assert step.wait(30)
    assert job.fraction == 0.25 and job.phase == "merging" and job.eta() is not None and job.eta() >= 0
    go_on.set()
    assert job.finished.wait(30) and job.eta() is None


def test_the_eta_counts_bytes_from_the_end_of_planning_and_waits_for_a_tenth():
    job = Job("save", "save x", started=100.0)
    job.planned(1000, 10_000)
    job.merging_since = 160.0             # a minute of planning (and hashing) before the first key
    job.progress(1, 1000, 800)            # the first key is a large one: 8 % of the bytes
    assert job.eta(now=170.0) is None     # before a tenth of the work: no guess at all
    job.progress(2, 1000, 2000)           # 20 % of the bytes after 20 s of merging, 0.2 % of the keys
    assert job.eta(now=180.0) == pytest.approx(80.0)
    assert job.fraction == pytest.approx(0.2)
    job.progress(999, 1000, 9999)
    assert job.eta(now=260.0) == pytest.approx(0.01, abs=0.01)


def test_without_a_plan_size_there_is_no_eta():
    job = Job("merge", "m")
    job.progress(500, 1000, 10)
    assert job.eta() is None and job.fraction == 0.5


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
