"""What every learner shares: typed hyperparameters, one training loop, evaluation.

A learner is a small ``nn.Module`` around a backbone (as in learn2learn). It
implements ``train_step`` (compute gradients for one optimisation step and return
the loss) and ``predict`` (query logits for a batch of episodes). ``fit`` owns the
optimiser and learning-rate schedule (:mod:`learners.optimization`), periodic validation and divergence checks.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from learners.backbones import build_backbone
from learners.data.episodes import (DataError, EpisodeSampler, Episodes, ImageSplit, LabelledBatches, TaskSpec,
                                    fixed_episodes)
from learners.optimization import OPTIMIZERS, SCHEDULERS, Schedule, l1_penalty, make_optimizer


BN_AT_TEST = ("running", "batch")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class HParams:
    """Hyperparameters every learner has. Subclasses add their own fields with defaults.

    The optimiser and schedule fields are explained in :mod:`learners.optimization`; each applies only to the
    optimiser or schedule named in its comment (the others ignore it).
    """

    backbone: str = "conv4"
    # The batch-norm statistics at test: "running" (inductive: the training averages, eval mode) or "batch"
    # (transductive: each test episode's own support and query images). MAML and Reptile are always "batch".
    bn_at_test: str = "running"
    optimizer: str = "adam"          # adam | sgd | adamw | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0        # L2, the optimiser's own
    l1: float = 0.0                  # L1, added to the loss: l1 * sum(|w|) over the trainable parameters
    momentum: float = 0.9            # sgd, rmsprop
    nesterov: bool = False           # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    scheduler: str = "multistep"     # multistep | step | exponential | cosine | plateau
    # Fractions of the training budget, so they survive budget changes.
    milestones: tuple[float, ...] = (0.5,)  # multistep
    gamma: float = 0.5               # the factor of each drop (multistep, step, plateau); over the budget (exponential)
    step_size: float = 0.25          # step: a drop every this fraction of the budget
    eta_min: float = 0.0             # cosine: the rate it anneals to
    plateau_patience: int = 2        # plateau: validations without improvement before a drop
    warmup: float = 0.0              # a linear warm-up over this fraction of the budget, before any schedule
    # Early stopping, counted in validations: stop after `patience` validations that did not beat the best
    # validation accuracy so far by more than `min_delta` (None: train the whole budget). Hyperparameters, not
    # budget fields, so that a study can search them like any other.
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):  # NaN passes every comparison below, and inf is never meant
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value}")
        if self.bn_at_test not in BN_AT_TEST:
            raise ValueError(f"bn_at_test must be one of {', '.join(BN_AT_TEST)}, got '{self.bn_at_test}'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got '{self.scheduler}'")
        self.milestones = tuple(float(m) for m in self.milestones)
        if any(not 0.0 < m < 1.0 for m in self.milestones):
            raise ValueError(f"milestones must be fractions strictly between 0 and 1, got {list(self.milestones)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("weight_decay", "l1", "eta_min", "min_delta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with a momentum above 0")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or any(not 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be positive, got {self.gamma}")
        if not 0.0 < self.step_size <= 1.0:
            raise ValueError(f"step_size must be a fraction of the budget in (0, 1], got {self.step_size}")
        if self.scheduler == "cosine" and self.eta_min >= self.lr:
            raise ValueError(f"eta_min ({self.eta_min}) must be below lr ({self.lr}): cosine anneals down to it")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be a fraction of the budget in [0, 1), got {self.warmup}")
        if self.scheduler == "multistep" and self.warmup > 0 and min(self.milestones) <= self.warmup:
            raise ValueError(f"milestones ({list(self.milestones)}) must come after the warm-up ({self.warmup})")
        self.require_at_least_one("plateau_patience", "patience")

    #: The hyperparameters that change the shape of the training episodes (see :meth:`training_shape`).
    TRAINING_SHAPE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def training_shape(self, spec: TaskSpec) -> TaskSpec | None:
        """The shape of the episodes the learner trains on, for test episodes of shape ``spec``; ``None`` for
        a learner that trains on labelled batches only."""
        return spec

    def check_training_shape(self, spec: TaskSpec, train: ImageSplit) -> None:
        """Raise :class:`~learners.data.DataError` naming the hyperparameters when the training split cannot
        form :meth:`training_shape` (found before training, not when the first step samples it)."""
        shape = self.training_shape(spec)
        if shape is None:
            return
        try:
            train.check_spec(shape)
        except DataError as e:
            given = ", ".join(f"{name}={getattr(self, name)}" for name in self.TRAINING_SHAPE_FIELDS
                              if getattr(self, name) is not None)
            raise DataError(f"training episodes {shape.ways}-way {shape.shots}-shot {shape.queries}-query"
                            f"{f' ({given})' if given else ''}: {e}") from None

    def require_at_least_one(self, *names: str) -> None:
        """Raise for any of these integer fields below 1 (``None``, where a field allows it, passes)."""
        for name in names:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


# Seeds that NumPy's RandomState (Optuna's samplers, the grid order) and torch accept alike.
SEED_LIMIT = 2**32


def evaluation_seed(seed: int, split: str) -> int:
    """Seed of the fixed evaluation episodes of ``split`` ('val' or 'test') for a run seeded with ``seed``.

    Every learner and every trial with the same seed is scored on the same episodes.
    """
    return seed + {"val": 1_000, "test": 2_000}[split]


SELECTIONS = ("last", "best")


@dataclass(frozen=True)
class Budget:
    """How long to train, how often to validate, and which model a run keeps.

    ``select``: ``last``, the model at the end of training, or ``best``, the model of the best validation (the
    last one that beat the best before it by more than the learner's ``min_delta``).
    """

    iterations: int = 1000
    val_interval: int = 200
    val_episodes: int = 100
    select: str = "last"

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got '{self.select}'")


class TrainingData:
    """Seeded sources of training batches for one run: episodes (any number of ways) and labelled batches."""

    def __init__(self, split: ImageSplit, spec: TaskSpec, seed: int, device: torch.device | str = "cpu"):
        self.split, self.spec, self.seed, self.device = split, spec, seed, torch.device(device)
        self._samplers: dict[tuple[int, int, int], EpisodeSampler] = {}  # by (ways, shots, queries)
        self._batches: LabelledBatches | None = None

    def episodes(self, tasks: int, ways: int | None = None, queries: int | None = None,
                 shots: int | None = None) -> Episodes:
        """``tasks`` training episodes of the run's shape, optionally with other numbers of ways, queries or shots."""
        return self._sampler((ways or self.spec.ways, shots or self.spec.shots, queries or self.spec.queries)
                             ).sample(tasks)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An ordinary mini-batch of images and class indices over all training classes."""
        return self._labelled_batches().sample(batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Where every stream drawn from so far stands (see :class:`FitState`)."""
        return {"episodes": {shape: sampler.generator.get_state() for shape, sampler in self._samplers.items()},
                "batches": None if self._batches is None else self._batches.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue every stream from ``state`` (of the same split, shape and seed)."""
        for shape, generator_state in state["episodes"].items():
            self._sampler(tuple(shape)).generator.set_state(generator_state)
        if state["batches"] is not None:
            self._labelled_batches().generator.set_state(state["batches"])

    def _sampler(self, shape: tuple[int, int, int]) -> EpisodeSampler:
        if shape not in self._samplers:
            ways, shots, queries = shape
            # Each shape has its own stream; the run's own shape keeps the seed it always had.
            seed = (self.seed + ways + (0 if queries == self.spec.queries else 7919 * queries)
                    + (0 if shots == self.spec.shots else 104729 * shots))
            self._samplers[shape] = EpisodeSampler(self.split, TaskSpec(ways, shots, queries), seed, self.device)
        return self._samplers[shape]

    def _labelled_batches(self) -> LabelledBatches:
        if self._batches is None:
            self._batches = LabelledBatches(self.split, self.seed, self.device)
        return self._batches


class Learner(nn.Module):
    """Base class. Subclasses set ``HParams`` and implement the two steps."""

    HParams: ClassVar[type[HParams]] = HParams
    # Learners that run the backbone under vmap need the batch norm that stays exact there (slower).
    vmaps_backbone: ClassVar[bool] = False
    # Images per batched computation on a CPU (evaluation batches; vmap chunks). Larger ones outgrow the
    # caches and glibc's reusable heap: 16 episodes of 80 images at once ran 2-3x slower than 2 at a time,
    # and vmapping all 32 tasks of 80 images 3x slower than chunks of ~160 images.
    cpu_images_per_batch: ClassVar[int] = 160
    # A head with one output per class, its width fixed when the learner is built (MAML, Reptile): such a
    # learner classifies episodes of its own number of ways only. The others compare embeddings, any ways.
    fixed_ways: ClassVar[bool] = False

    def __init__(self, hparams: HParams, image_shape: tuple[int, int, int], spec: TaskSpec, num_train_classes: int):
        super().__init__()
        self.hparams, self.image_shape, self.spec, self.num_train_classes = hparams, image_shape, spec, num_train_classes
        self.backbone, self.feature_dim = build_backbone(hparams.backbone, image_shape,
                                                         track_running_stats=self.bn_at_test == "running",
                                                         composite_batch_norm=self.vmaps_backbone)
        if not self.vmaps_backbone:
            # Convolutions, batch norm and max-pool ran 1.5-2x faster on channels-last activations on a CPU
            # (max-pool 10x); vmap cannot keep that layout, so vmapping learners stay contiguous.
            self.backbone.to(memory_format=torch.channels_last)

    def train_step(self, data: TrainingData, step: int, total_steps: int) -> float:
        """Fill ``.grad`` of the parameters for one optimiser step; return the training loss."""
        raise NotImplementedError

    def predict(self, episodes: Episodes, ways: int) -> torch.Tensor:
        """Query logits ``[tasks, queries, ways]`` of episodes of ``ways`` classes (support labels ``0..ways-1``,
        any number of support images per class). Called in eval mode under ``no_grad``."""
        raise NotImplementedError

    def check_ways(self, ways: int) -> None:
        """Raise :class:`~learners.data.DataError` unless the learner can classify ``ways``-way episodes."""
        if ways < 2:
            raise DataError(f"an episode of {ways} class(es) has nothing to classify (at least 2)")
        if self.fixed_ways and ways != self.spec.ways:
            raise DataError(f"{type(self).__name__} has a head of {self.spec.ways} ways and classifies "
                            f"{self.spec.ways}-way episodes only, not {ways}-way")

    def classify(self, episode: Episodes, ways: int) -> torch.Tensor:
        """Class probabilities ``[queries, ways]`` of the query images of one episode of ``ways`` classes, any
        number of support and query images each (a user's own episode: see :meth:`check_ways`)."""
        self.check_ways(ways)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.predict(episode, ways)[0].softmax(-1)
        finally:
            self.train(was_training)

    def embed(self, episodes: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query features ``[tasks, n, feature_dim]`` from one forward pass (one big batch is faster).

        With ``bn_at_test: batch``, evaluation embeds each episode in a pass of its own: batch statistics over
        several episodes would make a score depend on the evaluation batch size."""
        tasks, n_support = episodes.support.shape[:2]
        images = torch.cat([episodes.support, episodes.query], dim=1)
        if self.bn_at_test == "batch" and not self.training:
            features = torch.stack([self._features(episode) for episode in images])
        else:
            features = self._features(images.flatten(0, 1)).view(tasks, -1, self.feature_dim)
        return features[:, :n_support], features[:, n_support:]

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images.contiguous(memory_format=torch.channels_last))

    @property
    def bn_at_test(self) -> str:
        """Which batch-norm statistics the backbone uses at test (the ``bn_at_test`` hyperparameter)."""
        return self.hparams.bn_at_test

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def evaluate(self, split: ImageSplit, episodes: int, seed: int, batch_size: int | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Per-episode query accuracy on ``episodes`` episodes fixed by ``seed``; ``progress`` shows a bar.

        ``batch_size`` episodes go through :meth:`predict` at once (default: :meth:`evaluation_batch_size`);
        it does not change the result.
        """
        if batch_size is None:
            batch_size = self.evaluation_batch_size()
        was_training = self.training
        self.eval()
        accuracies = []
        bar = tqdm(total=episodes, desc=f"test {type(self).__name__} on {split.name}", unit="episode",
                   disable=not progress, leave=False, dynamic_ncols=True)
        with torch.no_grad(), bar:
            for batch in fixed_episodes(split, self.spec, episodes, seed, batch_size, self.device):
                logits = self.predict(batch, self.spec.ways)
                accuracies.append((logits.argmax(-1) == batch.query_labels).float().mean(-1).cpu())
                bar.update(batch.num_tasks)
        self.train(was_training)
        return torch.cat(accuracies)

    def evaluation_batch_size(self) -> int:
        """Episodes per evaluation batch: about ``cpu_images_per_batch`` images on a CPU, 16 episodes on a GPU."""
        return self.items_per_batch(self.spec.ways * (self.spec.shots + self.spec.queries)) or 16

    def items_per_batch(self, images_per_item: int) -> int | None:
        """How many items (episodes, tasks) of ``images_per_item`` images to compute at once: about
        ``cpu_images_per_batch`` images on a CPU; ``None`` (no limit) on a GPU."""
        if self.device.type != "cpu":
            return None
        return max(1, self.cpu_images_per_batch // images_per_item)


@dataclass
class ValidationPoint:
    step: int
    val_accuracy: float
    train_loss: float
    lr: float
    seconds: float


# Called after each validation; may raise (e.g. to prune a trial) to stop training.
ValidationCallback = Callable[[ValidationPoint], None]


@dataclass
class Selection:
    """The best validation so far and the early-stopping count: which model a run keeps, and when it stops."""

    best_step: int = 0
    best_accuracy: float = -math.inf
    validations_without_improvement: int = 0

    def update(self, point: ValidationPoint, min_delta: float) -> bool:
        """Count ``point``; True when it is the new best."""
        if point.val_accuracy > self.best_accuracy + min_delta:
            self.best_step, self.best_accuracy, self.validations_without_improvement = (point.step,
                                                                                        point.val_accuracy, 0)
            return True
        self.validations_without_improvement += 1
        return False

    def patience_ran_out(self, patience: int | None) -> bool:
        return patience is not None and self.validations_without_improvement >= patience


@dataclass
class FitState:
    """A training run after its validation at ``step``: what :func:`fit` needs to continue it exactly
    (saved and loaded by :mod:`learners.checkpoint`)."""

    step: int
    history: list[ValidationPoint]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    data: dict[str, Any]      # TrainingData.state_dict()
    rng: dict[str, Any]       # torch's global generators
    selection: Selection
    # select: best, once a later validation did not beat it: the weights of the best validation's step.
    best_model: dict[str, Any] | None

    @property
    def selected_step(self) -> int:
        """The step of the model the run keeps so far (``model``'s own step unless ``best_model`` is set)."""
        return self.step if self.best_model is None else self.selection.best_step

    def selected_model(self) -> dict[str, Any]:
        return self.model if self.best_model is None else self.best_model

    @staticmethod
    def global_rng() -> dict[str, Any]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore_global_rng(self) -> None:
        torch.set_rng_state(self.rng["cpu"])
        if "cuda" in self.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng["cuda"])


STOP_REASONS = ("budget", "early_stopping")


@dataclass
class FitResult:
    """How a run ended: its validations, where and why it stopped, and the model it kept (now in the learner)."""

    history: list[ValidationPoint]
    stopped_at: int              # the last step trained
    stop_reason: str             # one of STOP_REASONS
    selected: ValidationPoint | None  # the validation of the kept model (None: the run had no validation)


def fit(learner: Learner, train: TrainingData, val: ImageSplit | None, budget: Budget, val_seed: int,
        on_validation: ValidationCallback | None = None, progress: bool = True, resume: FitState | None = None,
        on_checkpoint: Callable[[FitState], None] | None = None) -> FitResult:
    """Train for ``budget.iterations`` steps, validating every ``budget.val_interval`` steps and at the end;
    stop early once the learner's ``patience`` validations in a row brought no improvement.

    Validation always uses the episodes fixed by ``val_seed``, so runs are compared on the same tasks.
    At the end the learner holds the model ``budget.select`` keeps: the last, or the best validation's.

    Args:
        learner: the learner to train (in place).
        train: the seeded training episodes and batches.
        val: the validation split (``None``: no validation, e.g. to time steps).
        budget: iterations, validation interval and episodes, and which model to keep.
        val_seed: fixes the validation episodes.
        on_validation: called with each validation point (the pruner's hook: it may raise to stop).
        resume: a state from ``on_checkpoint`` of a run of the same learner, hyperparameters and data: training
            continues after its step, and ends as the run never stopped would (bit-identical on the CPU).
        on_checkpoint: called with the run's state after each validation (after ``on_validation``, so that a
            resumed run never reports a validation twice).

    Returns:
        The validation history (with ``resume``: its points, then the new ones), where and why training
        stopped, and the kept model's validation.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
    """
    optimizer = make_optimizer(learner.parameters(), learner.hparams)
    scheduler = Schedule(optimizer, learner.hparams, budget.iterations)
    history: list[ValidationPoint] = []
    selection, best_weights = Selection(), None  # best_weights: select best, the best validation's weights
    first = 1
    if resume is not None:
        learner.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        train.load_state_dict(resume.data)
        resume.restore_global_rng()
        history, first = list(resume.history), resume.step + 1
        selection = copy.deepcopy(resume.selection)
        best_weights = copy.deepcopy(resume.selected_model()) if budget.select == "best" else None
    patience, min_delta = learner.hparams.patience, learner.hparams.min_delta
    # A resumed run whose checkpoint is of the validation that stopped it early has nothing left to train.
    stopped_early = selection.patience_ran_out(patience) and first <= budget.iterations
    step = first - 1
    losses: list[float] = []
    start = time.perf_counter() - (history[-1].seconds if history else 0.0)
    learner.train()
    bar = tqdm(range(first, budget.iterations + 1) if not stopped_early else range(0),
               desc=f"train {type(learner).__name__}", unit="it", initial=first - 1, total=budget.iterations,
               disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = learner.train_step(train, step, budget.iterations) + l1_penalty(learner, learner.hparams.l1)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss} at step {step}")
        optimizer.step()
        scheduler.after_step()
        losses.append(loss)
        if val is not None and (step % budget.val_interval == 0 or step == budget.iterations):
            acc = float(learner.evaluate(val, budget.val_episodes, seed=val_seed).double().mean())
            point = ValidationPoint(step, acc, sum(losses) / len(losses), scheduler.lr, time.perf_counter() - start)
            scheduler.after_validation(acc)
            losses.clear()
            history.append(point)
            bar.set_postfix(loss=f"{point.train_loss:.3f}", val=f"{acc:.3f}")
            if on_validation is not None:
                on_validation(point)
            if selection.update(point, min_delta) and budget.select == "best":
                best_weights = copy.deepcopy(learner.state_dict())
            if on_checkpoint is not None:
                # Copies: state dicts share the tensors that the next step changes in place.
                on_checkpoint(FitState(step, list(history), copy.deepcopy(learner.state_dict()),
                                       copy.deepcopy(optimizer.state_dict()), scheduler.state_dict(),
                                       train.state_dict(), FitState.global_rng(), copy.deepcopy(selection),
                                       best_weights if selection.best_step != step else None))
            if selection.patience_ran_out(patience) and step < budget.iterations:
                stopped_early = True
                break
    bar.close()
    if best_weights is not None and selection.best_step != step:
        learner.load_state_dict(best_weights)
    by_step = {point.step: point for point in history}
    selected = by_step.get(selection.best_step if budget.select == "best" else step)
    return FitResult(history, stopped_at=step, stop_reason="early_stopping" if stopped_early else "budget",
                     selected=selected)
