"""How a learner's trials run: one interface, :class:`TrialRunner`, with an in-process implementation and
one that starts ``search.workers`` worker processes on this machine.

Each worker is a fresh ``python -m hpo.execution.worker`` that reads its job (JSON) on stdin: URLs
with passwords never appear on a command line (``ps`` shows those to every user). Workers run in
their own process group, so a Ctrl-C in the terminal reaches only this process, which forwards
it exactly once; a worker would otherwise get it twice and could be interrupted in its clean-up.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from typing import Callable

from pydantic import BaseModel

from hpo.config import StudyConfig
from hpo.errors import RunAborted
from hpo.execution._loop import optimize, seconds_left
from hpo.execution._objective import Objective
from hpo.execution._search import LearnerSearch
from hpo.execution._signals import interrupts_deferred, stop_signal
from hpo.execution._timing import TimedObjective

WORKER_POLL_S = 2.0  # how often the coordinating process looks at its workers (and updates progress)
# After forwarding a stop signal, how long a worker may take to close its trial before it is killed
# (its trial is then failed by the stale-trial check and retried by the next start).
STOP_GRACE_S = 120.0
INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)


class TrialRunner(ABC):
    """Runs trials of one learner's study, reporting progress through ``on_progress`` after each."""

    @abstractmethod
    def run(self, deadline: float | None) -> bool:
        """Run trials until the study's total is reached (True) or ``deadline`` (``time.monotonic()``) passes
        (False); Ctrl-C / SIGTERM propagate once the runner's trials are closed and queued again."""


def trial_runner(search: LearnerSearch, objective: Objective, parent_run: str,
                 on_progress: Callable[[], None]) -> TrialRunner:
    """In this process for ``search.workers: 1``, else in that many worker processes."""
    if search.config.search.workers == 1:
        return InProcessRunner(search, objective, on_progress)
    return WorkerProcessRunner(search.config, search.learner, parent_run, on_progress)


class InProcessRunner(TrialRunner):
    """Trials in this process, each timed (the ``timing`` user attr)."""

    def __init__(self, search: LearnerSearch, objective: Objective, on_progress: Callable[[], None] | None = None):
        self.search, self.on_progress = search, on_progress
        self.objective = TimedObjective(objective)

    def run(self, deadline: float | None) -> bool:
        return optimize(self.search.study, self.objective, self.search.config.search, deadline, self.on_progress)


class WorkerJob(BaseModel):
    """What a worker process needs, sent as JSON on its stdin (never on the command line: passwords)."""

    config: StudyConfig
    learner: str
    parent_run: str   # the learner's MLflow parent run, created by the coordinating process
    worker: str       # unique among the study's workers; seeds the worker's sampler
    timeout: float | None
    threads: int


class WorkerProcessRunner(TrialRunner):
    """``search.workers`` processes of ``python -m hpo.execution.worker`` on this machine.

    A worker killed by a signal only loses its current trial, which the stale-trial check queues
    again (unless every worker was killed: something kills them on sight); a worker stopped by a
    fault (exit code 1, its error printed) stops the run once the others end.
    """

    def __init__(self, config: StudyConfig, learner: str, parent_run: str, on_progress: Callable[[], None]):
        self.config, self.learner, self.parent_run, self.on_progress = config, learner, parent_run, on_progress

    def run(self, deadline: float | None) -> bool:
        workers = self.config.search.workers
        threads = max(1, (os.cpu_count() or 1) // workers)  # one worker per core beats cores shared by threads
        jobs = [WorkerJob(config=self.config, learner=self.learner, parent_run=self.parent_run,
                          worker=f"{socket.gethostname()}/{index}", timeout=seconds_left(deadline),
                          threads=threads).model_dump_json() for index in range(workers)]
        codes = self._start_and_wait(jobs)
        for index, code in enumerate(codes):
            if code < 0 or code in INTERRUPTED:
                print(f"worker {index} of {self.learner} was stopped by a signal; its trial will run again",
                      file=sys.stderr)
        faults = [(index, code) for index, code in enumerate(codes) if code > 0 and code not in INTERRUPTED]
        if faults:
            index, code = faults[0]
            raise RunAborted(f"worker {index} of {self.learner} stopped with exit code {code} (its error is above); "
                             f"rerun to resume")
        if 0 not in codes:
            raise RunAborted(f"all {workers} workers of {self.learner} were stopped by signals; rerun to resume")
        return deadline is None or time.monotonic() < deadline

    def _start_and_wait(self, jobs: list[str]) -> list[int]:
        """Run one worker per job until all exit; return their exit codes.

        A ``KeyboardInterrupt`` here (Ctrl-C) is passed on to every worker as SIGINT, anything else
        (SIGTERM's ``Terminated``, an error) as SIGTERM; once they have exited it is raised again.
        """
        processes = [subprocess.Popen([sys.executable, "-m", "hpo.execution.worker"], stdin=subprocess.PIPE,
                                      text=True, process_group=0) for _ in jobs]
        try:
            for process, job in zip(processes, jobs):
                process.stdin.write(job)
                process.stdin.close()
            while any(process.poll() is None for process in processes):
                self.on_progress()
                time.sleep(WORKER_POLL_S)
        except BaseException as error:  # Ctrl-C, SIGTERM, or this process failing: never leave workers behind
            with interrupts_deferred():
                _stop(processes, stop_signal(error))
            raise
        self.on_progress()
        return [process.returncode for process in processes]


def _stop(processes: list[subprocess.Popen], signum: int) -> None:
    """Send ``signum`` to the running workers and wait for them; kill those that outlast the grace period."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
