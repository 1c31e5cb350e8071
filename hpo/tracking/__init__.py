"""MLflow tracking: one experiment per study, a parent run per learner with nested trial and final-test runs, and a
summary run; every call names its run explicitly (MLflow's active run is thread-local). Also the trials'
checkpoints and kept models, the tested models as registered MLflow models, and the data as MLflow datasets."""
from hpo.errors import TrackingError
from hpo.tracking._checkpoints import CHECKPOINT_FOLDER, MODEL_FILE, TrialCheckpoints, load_kept_model, stored_bytes
from hpo.tracking._datasets import dataset_inputs
from hpo.tracking._models import (FINAL_TEST_TAG, FewShotModel, fetch_model, final_test_key, log_tested_model,
                                  register_tested_model)
from hpo.tracking._records import RUN_STATUS, close_orphan_runs, parent_params, run_status, trial_settings
from hpo.tracking._tracker import (ROLE_TAG, RUNNING, STATE_TAG, STUDY_TAG, TRIAL_TAG, ReportingClient, Tracker,
                                   system_metrics)

__all__ = ["CHECKPOINT_FOLDER", "FINAL_TEST_TAG", "MODEL_FILE", "ROLE_TAG", "RUNNING", "RUN_STATUS", "STATE_TAG",
           "STUDY_TAG", "TRIAL_TAG", "FewShotModel", "ReportingClient", "Tracker", "TrackingError", "TrialCheckpoints",
           "close_orphan_runs", "dataset_inputs", "fetch_model", "final_test_key", "load_kept_model",
           "log_tested_model", "parent_params", "register_tested_model", "run_status", "stored_bytes",
           "system_metrics", "trial_settings"]
