"""The worker process ``python -m hpo.execution.worker`` that ``search.workers: N`` starts (internal).

It reads its job (:class:`~hpo.execution._runners.WorkerJob`) as JSON on stdin, opens the study,
tracker and data itself, and runs trials until the study's total (over all workers) is reached or
its timeout passes.

Exit codes: 0 done (total reached or timeout), 1 a fault (one ``error:`` line), 130 / 143 stopped
by Ctrl-C / SIGTERM (the trial it ran is queued again).
"""
from __future__ import annotations

import os
import sys

import torch

from hpo.config import check_learners, load_data
from hpo.execution._loop import deadline_after
from hpo.execution._runners import InProcessRunner, WorkerJob
from hpo.execution._search import LearnerSearch
from hpo.execution._signals import as_command
from hpo.logs import quiet_logging


def main() -> int:
    job = WorkerJob.model_validate_json(sys.stdin.read())
    check_learners(job.config)  # coerces fixed values and choices to the learners' types again
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(job.threads)
    quiet_logging()
    return as_command(lambda: work(job), job.config.storage, error_prefix=f"worker {job.worker}: ")


def work(job: WorkerJob) -> None:
    """Run trials of the job's learner until its study's total is reached or the job's timeout passes."""
    search = LearnerSearch.open(job.config, job.learner, load_data(job.config), job.worker)
    runner = InProcessRunner(search, search.objective(job.parent_run, progress=False))
    runner.run(deadline_after(job.timeout))


if __name__ == "__main__":
    sys.exit(main())
