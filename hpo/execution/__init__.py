"""Running a study: the objective, the trial loop, the trial runners (in this process or in worker processes),
one learner's study with its final test, the whole study, and Ctrl-C / SIGTERM handling."""
from hpo.execution._final_test import final_test, final_test_is_current
from hpo.execution._learner_study import tune_learner
from hpo.execution._loop import FailureLimit, optimize
from hpo.execution._objective import Objective
from hpo.execution._runners import InProcessRunner, TrialRunner, WorkerJob, WorkerProcessRunner, trial_runner
from hpo.execution._search import LearnerSearch, make_pruner, make_sampler, open_study, study_name, training_setup
from hpo.execution._signals import (Interrupted, Terminated, as_command, exit_code, interrupts_deferred,
                                    stop_signals_as_interrupts)
from hpo.execution._study import run_study, study_summaries
from hpo.execution._timing import TIMING_ATTR, TimedObjective
from hpo.execution._warm_start import WARM_START_ATTR, WarmStartPoint, warm_start_points

__all__ = ["FailureLimit", "InProcessRunner", "Interrupted", "LearnerSearch", "Objective", "TIMING_ATTR",
           "Terminated", "TimedObjective", "TrialRunner", "WARM_START_ATTR", "WarmStartPoint", "WorkerJob",
           "WorkerProcessRunner", "as_command", "exit_code", "final_test", "final_test_is_current",
           "interrupts_deferred", "make_pruner", "make_sampler", "open_study", "optimize", "run_study",
           "stop_signals_as_interrupts", "study_name", "study_summaries", "training_setup", "trial_runner",
           "tune_learner", "warm_start_points"]
