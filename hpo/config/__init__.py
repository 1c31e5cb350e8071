"""A study file, validated in one place: the schema and its defaults, search-space parameters, loading with
the command line's overrides, checks against the learners, and preflight checks of the outside world."""
from hpo.config._learners import check_learners
from hpo.config._loading import check_workers, load_config, resolve_paths, selected_learners
from hpo.config._preflight import (ARTIFACT_FOLDER, check_mlflow_server, check_storage, check_tracking_uri, check_warm_start,
                                   is_mlflow_server, load_data, resolve_device, task_spec)
from hpo.config._schema import (NAME_LIMIT, SEED_LIMIT, BudgetConfig, CategoricalParam, CheckpointsConfig, DatasetConfig,
                                EarlyStoppingConfig, FloatParam, IntParam, LearnerConfig, MilestonesParam, PrunerConfig, RegistryConfig, SearchConfig, SpaceParam, StudyConfig,
                                TestConfig, WarmStartConfig)
from hpo.config._space import (applies, condition_order, describe, grid_search_points, grid_search_space,
                                is_conditional, suggest)
from hpo.errors import ConfigError

__all__ = ["ARTIFACT_FOLDER", "BudgetConfig", "CategoricalParam", "CheckpointsConfig", "ConfigError",
           "DatasetConfig", "EarlyStoppingConfig", "FloatParam", "IntParam", "LearnerConfig", "MilestonesParam",
           "NAME_LIMIT", "PrunerConfig", "RegistryConfig", "SEED_LIMIT", "SearchConfig", "SpaceParam", "StudyConfig",
           "TestConfig", "WarmStartConfig", "applies", "check_learners", "check_mlflow_server", "check_storage", "check_tracking_uri", "check_warm_start",
           "check_workers", "condition_order", "describe", "grid_search_points", "grid_search_space",
           "is_conditional", "is_mlflow_server", "load_config", "load_data", "resolve_device", "resolve_paths",
           "selected_learners", "task_spec"]
