"""MLflow tracking: one experiment per study, a parent run per learner with a nested run per trial, and a
summary run; every call names its run explicitly (MLflow's active run is thread-local)."""
from hpo.errors import TrackingError
from hpo.tracking._models import (FINAL_TEST_TAG, FewShotModel, fetch_model, final_test_key, log_tested_model,
                                  register_tested_model)
from hpo.tracking._datasets import dataset_inputs
from hpo.tracking._checkpoints import CHECKPOINT_FOLDER, MODEL_FILE, TrialCheckpoints, load_kept_model, stored_bytes
from hpo.tracking._records import RUN_STATUS, close_orphan_runs, parent_params, run_status, trial_settings
from hpo.tracking._tracker import (ROLE_TAG, RUNNING, STATE_TAG, STUDY_TAG, TRIAL_TAG, ReportingClient, Tracker,
                                   system_metrics)

__all__ = ["dataset_inputs", "FINAL_TEST_TAG", "final_test_key", "FewShotModel", "fetch_model", "log_tested_model", "register_tested_model", "CHECKPOINT_FOLDER", "MODEL_FILE", "TrialCheckpoints", "load_kept_model", "stored_bytes", "ROLE_TAG", "RUNNING", "RUN_STATUS", "ReportingClient", "STATE_TAG", "STUDY_TAG", "TRIAL_TAG", "Tracker",
           "TrackingError", "close_orphan_runs", "parent_params", "run_status", "system_metrics", "trial_settings"]
