"""One seeded training run, end to end: load data, build a learner, ``fit``, score on the test episodes.

The command line (``learners.train``) and the accuracy benchmark both run through here,
so a number from either means the same thing. Seeds: ``torch.manual_seed(seed)`` before
the learner is built, training episodes and batches from ``TrainingData(..., seed)``,
validation and test episodes fixed by ``evaluation_seed(seed, 'val' | 'test')``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from learners.base import (SEED_LIMIT, Budget, FitResult, FitState, Learner, TrainingData, ValidationCallback,
                           ValidationPoint, evaluation_seed, fit)
from learners.checkpoint import CheckpointError, SavedModel, TrainedOn, load_checkpoint, save_checkpoint
from learners.data import DataError, DatasetSplits, TaskSpec, default_split, load_dataset
from learners.registry import build_learner, hparams_with_defaults, learner_class
from learners.statistics import check_ci_method, mean_interval


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (plus the device it runs on)."""

    learner: str
    dataset: str = "omniglot"
    split: str | None = None        # None: the dataset's default (vinyals for Omniglot)
    root: str | None = None          # None: default_root(dataset)
    ways: int = 5
    shots: int = 1
    queries: int = 15
    iterations: int = 2000
    seed: int = 0
    test_episodes: int = 1000
    ci: str = "t"                    # how the test interval is computed (learners.statistics)
    val_interval: int = Budget.val_interval
    val_episodes: int = Budget.val_episodes
    select: str = Budget.select      # last | best: the model that is tested
    device: str = "auto"             # auto | cpu | cuda
    hparams: dict[str, Any] = field(default_factory=dict)  # overrides of the learner's defaults

    def __post_init__(self) -> None:
        for name in ("iterations", "val_interval", "val_episodes", "test_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.split is None:
            object.__setattr__(self, "split", default_split(self.dataset))
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be between 0 and {SEED_LIMIT - 1}, got {self.seed}")
        check_ci_method(self.ci)
        if self.root is not None and not Path(self.root).exists():
            raise DataError(f"data root '{self.root}' does not exist")

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(self.ways, self.shots, self.queries)

    @property
    def budget(self) -> Budget:
        return Budget(self.iterations, self.val_interval, self.val_episodes, self.select)

    @property
    def data_root(self) -> Path:
        return Path(self.root) if self.root is not None else default_root(self.dataset)


@dataclass
class RunResult:
    config: RunConfig
    hparams: dict[str, Any]          # every hyperparameter the learner ran with, defaults included
    bn_at_test: str
    device: str
    test_accuracy: float
    test_ci95: float                 # half-width of the 95% interval of config.ci
    history: list[ValidationPoint]
    stop_reason: str                 # budget | early_stopping
    selected_step: int               # the step of the tested model
    train_seconds: float
    test_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The config (its overrides replaced by the full ``hparams``) and the results, JSON-ready."""
        return {**asdict(self.config), "hparams": self.hparams, "bn_at_test": self.bn_at_test,
                "device": self.device, "test_accuracy": self.test_accuracy,
                "test_ci95": self.test_ci95 if math.isfinite(self.test_ci95) else None,  # NaN for 1 episode: not JSON
                "history": [asdict(point) for point in self.history], "stop_reason": self.stop_reason,
                "selected_step": self.selected_step, "train_seconds": self.train_seconds,
                "test_seconds": self.test_seconds, "seconds": self.train_seconds + self.test_seconds}


def default_root(dataset: str) -> Path:
    """``../shared/data/<dataset>`` (the shared archive next to the checkout) if it exists, else ``./data/<dataset>``."""
    shared = Path("..", "shared", "data", dataset)
    return shared if shared.exists() else Path("data", dataset)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without it is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got '{name}'")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


@dataclass(frozen=True)
class TrainingSetup:
    """Everything a training run needs besides its hyperparameters: learner, data, episode shape, budget,
    seed and device.

    Every run of a setup uses its seed for the initial weights and the training episodes, so two
    runs differ only by their hyperparameters, and re-training the same ones reproduces a model.
    ``training_seed``, when set, replaces the seed for the weights and training episodes only: the validation and
    test episodes stay those of ``seed``, so models trained with other seeds are scored on the same tasks.

    Example::

        setup = TrainingSetup("protonet", data, TaskSpec(5, 1, 15), Budget(2000), seed=0,
                              device=resolve_device("auto"))
        learner, result = setup.train({"lr": 0.002})
        accuracies = setup.test(learner, episodes=1000)  # per episode
    """

    learner: str
    data: DatasetSplits
    spec: TaskSpec
    budget: Budget
    seed: int
    device: torch.device
    training_seed: int | None = None

    @property
    def weights_seed(self) -> int:
        """The seed of the initial weights and the training episodes and batches."""
        return self.seed if self.training_seed is None else self.training_seed

    @classmethod
    def of_run(cls, config: RunConfig, data: DatasetSplits | None = None) -> TrainingSetup:
        """The setup of a :class:`RunConfig`, its episode shape checked against every split (a run fails before
        training, not at its first validation); ``data`` skips loading the dataset."""
        device = resolve_device(config.device)
        data = data if data is not None else load_dataset(config.dataset, config.data_root, config.split)
        data.check_spec(config.spec)
        setup = cls(config.learner, data, config.spec, config.budget, config.seed, device)
        setup.check_training_shape(config.hparams)
        return setup

    def check_training_shape(self, hparams: dict[str, Any]) -> None:
        """Raise :class:`~learners.data.DataError` naming the hyperparameters (``train_ways``, ...) whose training
        episodes the training split cannot form."""
        learner_class(self.learner).HParams(**hparams).check_training_shape(self.spec, self.data.train)

    def build(self, hparams: dict[str, Any]) -> Learner:
        """The learner, initialised from the setup's (training) seed."""
        torch.manual_seed(self.weights_seed)
        train = self.data.train
        return build_learner(self.learner, hparams, train.image_shape, self.spec, train.num_classes).to(self.device)

    def trained_on(self) -> TrainedOn:
        """What every model of this setup is trained on (saved with its checkpoints and models)."""
        train = self.data.train
        return TrainedOn(self.data.dataset, self.data.split, self.seed, self.spec, train.image_shape,
                         train.num_classes, self.data.preprocessing)

    def training_data(self) -> TrainingData:
        return TrainingData(self.data.train, self.spec, self.weights_seed, self.device)

    def train(self, hparams: dict[str, Any], on_validation: ValidationCallback | None = None,
              progress: bool = True, resume: FitState | None = None,
              on_checkpoint: Callable[[FitState], None] | None = None) -> tuple[Learner, FitResult]:
        """Build and train a learner; validation runs on the setup's fixed validation episodes. The learner
        returned holds the model the budget's ``select`` keeps.

        ``resume`` and ``on_checkpoint`` are :func:`~learners.base.fit`'s: continue from a state, and receive
        one after every validation (a killed run loses at most one validation interval, and ends as if never
        stopped: bit-identical on the CPU).

        Raises:
            TrainingDiverged: the loss became NaN or infinite.
        """
        learner = self.build(hparams)
        result = fit(learner, self.training_data(), self.data.val, self.budget, evaluation_seed(self.seed, "val"),
                     on_validation=on_validation, progress=progress, resume=resume, on_checkpoint=on_checkpoint)
        return learner, result

    def load(self, model: SavedModel) -> Learner:
        """The learner of a kept model, built for this setup's data and episode shape.

        Raises:
            CheckpointError: the model is of another learner, or for other images or episodes.
        """
        if model.learner != self.learner:
            raise CheckpointError(f"the model is of {model.learner}, not of {self.learner}")
        trained_on = self.trained_on()
        if model.trained_on is None:  # a format 2 file of this setup's study
            model = replace(model, trained_on=trained_on)
        if (model.trained_on.image_shape, model.trained_on.spec) != (trained_on.image_shape, trained_on.spec):
            raise CheckpointError(f"the model is for {model.trained_on.image_shape} images in "
                                  f"{model.trained_on.spec} episodes, not {trained_on.image_shape} in {trained_on.spec}")
        return model.build(self.device)

    def test(self, learner: Learner, episodes: int, progress: bool = False) -> torch.Tensor:
        """The accuracy of each of ``episodes`` test episodes fixed by the setup's seed."""
        return learner.evaluate(self.data.test, episodes, evaluation_seed(self.seed, "test"), progress=progress)


def train_and_test(config: RunConfig, data: DatasetSplits | None = None, progress: bool = True,
                   on_validation: ValidationCallback | None = None, checkpoint: Path | None = None) -> RunResult:
    """Train with ``fit`` and score on ``config.test_episodes`` fixed test episodes.

    With ``checkpoint``, the run's state is saved there after every validation, and a run that finds one there
    (of the same learner and hyperparameters) continues from it; the finished run leaves its last state there,
    which :func:`learners.checkpoint.load_model` reads like a study's kept model.

    Raises:
        CheckpointError: ``checkpoint`` is unreadable or of another run.
        OSError: ``checkpoint`` cannot be written.
    """
    setup = TrainingSetup.of_run(config, data)
    every = hparams_with_defaults(config.learner, config.hparams)
    resume = load_checkpoint(checkpoint, config.learner, every) if checkpoint and checkpoint.exists() else None
    start = time.perf_counter()
    learner, fitted = setup.train(config.hparams, on_validation, progress, resume,
                                  None if checkpoint is None else
                                  lambda state: save_checkpoint(checkpoint, config.learner, every,
                                                                setup.trained_on(), state))
    trained = time.perf_counter()
    interval = mean_interval(setup.test(learner, config.test_episodes, progress), config.ci)
    return RunResult(config, asdict(learner.hparams), learner.bn_at_test, str(learner.device), interval.mean,
                     interval.half_width, fitted.history, fitted.stop_reason,
                     fitted.stopped_at if fitted.selected is None else fitted.selected.step,
                     trained - start, time.perf_counter() - trained)
