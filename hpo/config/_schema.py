"""The study.yaml schema: the shape and types of a study file, and its defaults (pydantic).

Checks that need more than one field's value and type (hyperparameters against the learners,
storage kinds, data on disk) run after this, in :mod:`hpo.config._learners`,
:mod:`hpo.config._loading` and :mod:`hpo.config._preflight`.
"""
from __future__ import annotations

import importlib.util

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      field_validator, model_validator)

from hpo.redaction import register_secrets
from learners.base import SEED_LIMIT

Scalar = Union[None, bool, int, float, str]


# MLflow refuses experiment names over 500 characters; Optuna stores "<study>/<learner>" in 512.
NAME_LIMIT = 490


class Strict(BaseModel):
    # allow_inf_nan: a NaN bound or budget passes every comparison, and YAML reads .inf and .nan as floats.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, serialize_by_alias=True)


# --------------------------------------------------------------------------- search space entries

class Conditional(Strict):
    """``when``: the entry applies only to trials whose other (categorical) entries take these values, e.g.
    ``{scheduler: cosine}`` or ``{optimizer: [sgd, rmsprop]}``; a trial it does not apply to trains with the
    default and has no such parameter in Optuna. Checked against the space in :mod:`hpo.config._learners`."""

    when: dict[str, list[Scalar]] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        """One value is a list of one: every condition is the values its field may take."""
        if isinstance(value, dict):
            return {field: wanted if isinstance(wanted, list) else [wanted] for field, wanted in value.items()}
        return value


class FloatParam(Conditional):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: PositiveFloat | None = None

    @model_validator(mode="after")
    def _check(self) -> "FloatParam":
        _check_range(self.low, self.high)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.step is not None:
            count = (self.high - self.low) / self.step
            if abs(count - round(count)) > 1e-9:
                raise ValueError(f"high - low = {self.high - self.low:g} is not a multiple of step = {self.step:g}")
        return self


class IntParam(Conditional):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _check(self) -> "IntParam":
        _check_range(self.low, self.high)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined")
        if self.log and self.low < 1:
            raise ValueError("log needs low >= 1")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low = {self.high - self.low} is not a multiple of step = {self.step}")
        return self


class CategoricalParam(Conditional):
    # Choices are checked as the hyperparameter's values (a NaN choice of lr: "lr must be a finite number");
    # here a NaN would only fail every member of the Scalar union at once.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)

    type: Literal["categorical"]
    # Lists are allowed as choices (e.g. milestone lists); they are passed to Optuna as JSON strings.
    choices: Annotated[list[Union[Scalar, list[Scalar]]], Field(min_length=1)]


class MilestonesParam(Conditional):
    """Learning-rate milestones as fractions of the budget: explicit ``choices``, or ``count`` sorted
    fractions each drawn from ``[low, high]``."""

    type: Literal["milestones"]
    choices: Annotated[list[Annotated[list[float], Field(min_length=1)]], Field(min_length=1)] | None = None
    count: PositiveInt | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "MilestonesParam":
        ranged = (self.count, self.low, self.high)
        if self.choices is None and None in ranged:
            raise ValueError("give either choices (lists of fractions) or count, low and high")
        if self.choices is not None and any(v is not None for v in ranged):
            raise ValueError("give either choices or count/low/high, not both")
        fractions = [f for c in self.choices for f in c] if self.choices else [self.low, self.high]
        if any(not 0.0 < f < 1.0 for f in fractions):
            raise ValueError("milestones are fractions of the budget strictly between 0 and 1")
        if self.choices is None:
            _check_range(self.low, self.high)
        return self


def _check_range(low: float, high: float) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be below high ({high}); put a single value in 'fixed'")


SpaceParam = Annotated[Union[FloatParam, IntParam, CategoricalParam, MilestonesParam], Field(discriminator="type")]
SPACE_TYPES = ("float", "int", "categorical", "milestones")


# --------------------------------------------------------------------------- sections

class DatasetConfig(Strict):
    name: str
    root: Path | None = None
    split: str = "default"
    ways: PositiveInt
    shots: PositiveInt
    queries: PositiveInt
    cache_dir: Path | None = None
    download: bool = False

    @model_validator(mode="after")
    def _check(self) -> "DatasetConfig":
        if self.ways == 1:
            raise ValueError("ways=1: an episode of one class has nothing to classify (at least 2)")
        return self


class LearnerConfig(Strict):
    fixed: dict[str, Any] = {}
    space: dict[str, SpaceParam] = {}

    @model_validator(mode="before")
    @classmethod
    def _allow_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class PrunerConfig(Strict):
    type: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: NonNegativeInt = 5   # median: complete trials before pruning starts
    n_warmup_steps: NonNegativeInt = 0     # median: training iterations before a trial can be pruned
    reduction_factor: Annotated[int, Field(ge=2)] = 3  # hyperband

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class WarmStartConfig(Strict):
    """Queue the best ``top_k`` configurations of an earlier study first (see :mod:`hpo.execution._warm_start`)."""

    study: Annotated[str, Field(min_length=1)]  # its name (its study of the same learner) or "<name>/<learner>"
    storage: str | None = None                  # default: this study's storage
    top_k: PositiveInt = 5

    def study_of(self, learner: str) -> str:
        """The earlier study a learner's study starts from."""
        return self.study if "/" in self.study else f"{self.study}/{learner}"


class SearchConfig(Strict):
    sampler: Literal["tpe", "gp", "grid", "random"] = "tpe"
    pruner: PrunerConfig = PrunerConfig()
    n_trials: PositiveInt | None = None   # total per learner, over all runs (resume runs the remainder)
    timeout: PositiveFloat | None = None  # seconds per learner per run
    workers: PositiveInt = 1
    # A RUNNING trial whose process sent no heartbeat for grace_period seconds (killed, machine lost)
    # is failed and queued again by the next worker or the next start.
    heartbeat_interval: PositiveInt = 10
    grace_period: PositiveInt = 30
    # Failed trials do not count towards n_trials, so a study whose every trial fails would never end:
    # this many failures in a row stop the run (exit 1) instead.
    max_consecutive_failures: PositiveInt = 10
    warm_start: WarmStartConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials and/or timeout")
        if self.warm_start is not None and self.sampler == "grid":
            raise ValueError("warm_start: a grid runs every point anyway; use another sampler")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be longer than "
                             f"heartbeat_interval ({self.heartbeat_interval})")
        return self


class EarlyStoppingConfig(Strict):
    """Stop a trial after ``patience`` validations without an improvement of more than ``min_delta``; the
    learners' ``patience`` and ``min_delta`` hyperparameters, so a learner's ``fixed`` or ``space`` may
    override or search them."""

    patience: PositiveInt
    min_delta: NonNegativeFloat = 0.0


class BudgetConfig(Strict):
    iterations: PositiveInt
    val_interval: PositiveInt
    val_episodes: PositiveInt
    early_stopping: EarlyStoppingConfig | None = None
    # The model a trial keeps, and whose validation accuracy is the trial's value: the last (default: the value
    # is not the maximum of a noisy curve, and it is what a trial of this budget reaches), or the best validation.
    select: Literal["last", "best"] = "last"


class CheckpointsConfig(Strict):
    # What a finished trial keeps in its MLflow run: best, the model of the study's best trial only (the others'
    # are deleted as soon as they are beaten); all, every complete trial's model; none, no model (the final test
    # re-trains). Running trials always keep their last checkpoint, for resume.
    keep: Literal["best", "all", "none"] = "best"


class RegistryConfig(Strict):
    # After its final test, each learner's tested model is logged as an MLflow model of its parent run and, with
    # register: true, registered under `name` ({study} and {learner} are replaced): a new version whenever a
    # study tests a new model.
    # `register` in the file (a pydantic BaseModel has a `register` method, so the field has another name).
    enabled: bool = Field(True, alias="register")
    name: str = "{study}.{learner}"

    @field_validator("name")
    @classmethod
    def _name_has_learner(cls, name: str) -> str:
        # Without {learner}, the learners of one study would be versions of one model.
        if "{learner}" not in name:
            raise ValueError("must contain {learner}, so that each learner has a registered model of its own")
        try:
            name.format(study="s", learner="l")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{study}} and {{learner}} may be replaced in it ({e})") from None
        return name

    def model_name(self, study: str, learner: str) -> str:
        return self.name.format(study=study, learner=learner)


class TestConfig(Strict):
    episodes: PositiveInt = 600
    # false: test the best trial's kept model; true: re-train its hyperparameters with the study's seed and
    # test that (a full trial more per learner).
    retrain: bool = False
    # How every test interval is computed (learners.statistics): Student's t with n-1 degrees of freedom, the
    # normal approximation, or a percentile bootstrap.
    ci: Literal["t", "normal", "bootstrap"] = "t"
    # Training runs of the chosen configuration: the tested model (the study's seed) and seeds - 1 more, each
    # trained with another seed and tested on the same episodes, for the spread between training runs.
    seeds: PositiveInt = 1


class StudyConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=NAME_LIMIT)]
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] = 0
    dataset: DatasetConfig
    learners: Annotated[dict[str, LearnerConfig], Field(min_length=1)]
    search: SearchConfig
    budget: BudgetConfig
    test: TestConfig = TestConfig()
    checkpoints: CheckpointsConfig = CheckpointsConfig()
    registry: RegistryConfig = RegistryConfig()
    storage: str = "sqlite:///optuna.db"
    tracking_uri: str = "sqlite:///mlflow.db"
    # MLflow's own CPU, memory, disk and network (and GPU, with pynvml) samples on every trial run, every 10 s.
    system_metrics: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        if self.checkpoints.keep == "none" and not self.test.retrain:
            raise ValueError("checkpoints.keep: none keeps no model for the final test; set test.retrain: true")
        return self

    @model_validator(mode="after")
    def _check_system_metrics(self) -> "StudyConfig":
        if self.system_metrics and importlib.util.find_spec("psutil") is None:
            raise ValueError("system_metrics: true needs psutil: pip install -e '.[system-metrics]'")
        return self

    @model_validator(mode="after")
    def _register_secrets(self) -> "StudyConfig":
        # Here, not where a study file is loaded: every process that handles a config validates it, worker
        # processes too (their WorkerJob arrives as JSON), so each knows what its drivers' messages may quote.
        register_secrets(self.storage, self.tracking_uri)
        return self
