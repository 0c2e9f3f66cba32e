"""Local training on one client's data: mini-batch SGD, reproducible per round.

The trainer keeps its model and the preprocessed tensors in memory across rounds; each
round the coordinator's weights are copied in with :meth:`LocalTrainer.set_weights`,
trained with :meth:`LocalTrainer.train` and read back with :meth:`LocalTrainer.get_weights`.

With a :class:`~fedlearn.client.privacy.PrivacyLedger` the trainer runs DP-SGD instead
(:mod:`fedlearn.client.dp_sgd`): Poisson-sampled batches, per-example clipping and
Gaussian noise from the OS CSPRNG, charged to the ledger, which refuses a round that
would exceed the budget. DP training is not reproducible from the seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from fedlearn.client.checkpoints import EpochState, RoundCheckpoints
from fedlearn.client.integrity import check_images_and_labels
from fedlearn.client.privacy import dp_sample_rate
from fedlearn.client.sgd import PlainSgd
from fedlearn.core.types import EvalResult, RoundConfig, Weights
from fedlearn.errors import ConfigError
from fedlearn.models.evaluate import evaluate_model
from fedlearn.models.preprocess import NUM_CLASSES, dataset_to_tensors
from fedlearn.models.registry import build_model
from fedlearn.models.weights import load_weights, model_to_weights

if TYPE_CHECKING:
    from fedlearn.client.dp_sgd import DpSgd
    from fedlearn.client.privacy import PrivacyLedger

__all__ = [
    "LocalTrainer",
    "TrainResult",
    "round_seed",
]

logger = logging.getLogger(__name__)

_Sgd = PlainSgd | torch.optim.Optimizer
"""Plain SGD, or the ``torch.optim`` one that DP-SGD wraps."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Outcome of one round of local training."""

    loss: float
    """Mean training cross-entropy over the last epoch."""
    samples: int
    """Number of training samples (the FedAvg weight)."""
    seconds: float
    """Wall-clock time spent training."""
    privacy_budget_used: float = 0.0
    """Epsilon spent by this client so far, this round included (0 without DP)."""


def round_seed(seed: int, round_number: int) -> int:
    """A 63-bit seed for the shuffling of ``round_number``, derived from ``seed``."""
    if seed < 0 or round_number < 0:
        raise ConfigError(f"seed and round_number must be >= 0, got {seed}, {round_number}")
    state = np.random.SeedSequence([seed, round_number]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def _check_config(config: RoundConfig) -> None:
    if config.local_epochs < 1:
        raise ConfigError(f"local_epochs must be at least 1, got {config.local_epochs}")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {config.batch_size}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ConfigError(f"learning_rate must be positive, got {config.learning_rate}")


class LocalTrainer:
    """Trains one model on one client's images with SGD (no momentum), or DP-SGD when
    given a ``privacy`` ledger.

    An optional holdout set (both ``holdout_images`` and ``holdout_labels``, or neither)
    is used by :meth:`evaluate_holdout`; an empty holdout counts as none.
    """

    __slots__ = ("_dp", "_holdout", "_images", "_labels", "_model", "model_name", "seed")

    def __init__(
        self,
        model_name: str,
        images: npt.NDArray[np.uint8],
        labels: npt.NDArray[np.integer],
        *,
        holdout_images: npt.NDArray[np.uint8] | None = None,
        holdout_labels: npt.NDArray[np.integer] | None = None,
        seed: int = 0,
        privacy: PrivacyLedger | None = None,
    ) -> None:
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        if (holdout_images is None) != (holdout_labels is None):
            raise ConfigError("give both holdout_images and holdout_labels, or neither")
        check_images_and_labels(images, labels, num_classes=NUM_CLASSES)
        self._images, self._labels = dataset_to_tensors(images, labels)
        self._holdout: tuple[torch.Tensor, torch.Tensor] | None = None
        if holdout_images is not None and holdout_labels is not None:
            check_images_and_labels(
                holdout_images,
                holdout_labels,
                num_classes=NUM_CLASSES,
                what="holdout data",
                allow_empty=True,
            )
            holdout = dataset_to_tensors(holdout_images, holdout_labels)
            if holdout[1].shape[0] > 0:
                self._holdout = holdout
        self.model_name = model_name
        self.seed = seed
        # Channels-last (not under Opacus, left as it was): one round of the CNN on 400
        # digits took 0.335-0.344 CPU-s against 0.363-0.375 contiguous (one thread,
        # 2026-12-04). Only the layout changes: weights come and go as before.
        self._model = build_model(model_name, seed=seed, channels_last=privacy is None)
        self._dp: DpSgd | None = None
        if privacy is not None:
            # Opacus costs ~110 MB of memory: only a client that trains with DP loads it.
            from fedlearn.client.dp_sgd import DpSgd  # noqa: PLC0415

            self._dp = DpSgd(self._model, privacy)
        logger.debug(
            "trainer for %s: %d training, %d holdout samples",
            model_name,
            self.samples,
            0 if self._holdout is None else int(self._holdout[1].shape[0]),
        )

    @property
    def samples(self) -> int:
        """Number of training samples."""
        return int(self._labels.shape[0])

    def set_weights(self, weights: Weights) -> None:
        """Copy ``weights`` into the model; :class:`ConfigError` if they do not fit."""
        load_weights(self._model, weights)

    def get_weights(self) -> dict[str, npt.NDArray[np.float32]]:
        """A float32 numpy copy of the model's current weights."""
        weights: dict[str, npt.NDArray[np.float32]] = model_to_weights(self._model)
        return weights

    def train(
        self,
        config: RoundConfig,
        *,
        round_number: int,
        checkpoints: RoundCheckpoints | None = None,
    ) -> TrainResult:
        """Run ``config.local_epochs`` epochs of mini-batch SGD on the local data.

        Mini-batches are drawn from a fresh permutation each epoch, generated by a
        ``torch.Generator`` seeded from ``(seed, round_number)``: the same weights, data,
        seed and round give the same result. With ``checkpoints``, the state after each
        epoch but the last is saved, and a saved state of this round and these settings is resumed
        from (model, optimizer and generator), which gives the weights an uninterrupted
        run would have.
        """
        _check_config(config)
        generator = torch.Generator().manual_seed(round_seed(self.seed, round_number))
        model = self._model
        optimizer = self._optimizer(config.learning_rate)
        fingerprint = self._fingerprint(config, round_number)
        done, mean_loss = self._resume(checkpoints, fingerprint, optimizer, generator)
        run_epoch = self._epoch_runner(config, optimizer, generator, config.local_epochs - done)
        started = time.perf_counter()
        model.train()
        for epoch in range(done, config.local_epochs):
            mean_loss = run_epoch()
            # Not after the last epoch: the caller stores the update durably next (its
            # outbox), so that save would only cost a model-sized write and fsync a round.
            if checkpoints is not None and epoch + 1 < config.local_epochs:
                checkpoints.save(
                    EpochState(
                        epochs_done=epoch + 1,
                        fingerprint=fingerprint,
                        # saved at once, so the live tensors do: no model-sized copy
                        model={k: v.detach() for k, v in model.state_dict().items()},
                        optimizer=optimizer.state_dict(),
                        generator=generator.get_state(),
                        loss=mean_loss,
                    )
                )
        seconds = time.perf_counter() - started
        model.zero_grad(set_to_none=True)  # the next step makes its own: free them until then
        if not math.isfinite(mean_loss):
            logger.warning("round %d: training loss is %s", round_number, mean_loss)
        logger.debug(
            "round %d: %d epochs (%d resumed) on %d samples, loss %.4f, %.2fs",
            round_number,
            config.local_epochs,
            done,
            self.samples,
            mean_loss,
            seconds,
        )
        spent = self._dp.ledger.epsilon() if self._dp is not None else 0.0
        return TrainResult(mean_loss, self.samples, seconds, privacy_budget_used=spent)

    def _optimizer(self, lr: float) -> _Sgd:
        """SGD without momentum; Opacus's DP-SGD wraps a ``torch.optim`` one, plain
        training takes :class:`PlainSgd` (the same update, without loading
        ``torch._dynamo``)."""
        if self._dp is not None:
            return torch.optim.SGD(self._model.parameters(), lr=lr, momentum=0.0)
        return PlainSgd(self._model.parameters(), lr=lr)

    def _epoch_runner(
        self,
        config: RoundConfig,
        optimizer: _Sgd,
        generator: torch.Generator,
        epochs: int,
    ) -> Callable[[], float]:
        """One epoch of SGD, or of DP-SGD after checking that ``epochs`` fit the budget."""
        dp = self._dp
        if dp is None:
            return lambda: self._epoch(optimizer, generator, config.batch_size)
        assert isinstance(optimizer, torch.optim.Optimizer)
        rate, steps = dp_sample_rate(self.samples, config.batch_size)
        dp.ledger.before_round(sample_rate=rate, steps=steps * epochs)
        dp_optimizer = dp.optimizer(optimizer, expected_batch_size=int(self.samples * rate))
        return lambda: dp.epoch(
            dp_optimizer, self._images, self._labels, sample_rate=rate, steps=steps
        )

    def _fingerprint(self, config: RoundConfig, round_number: int) -> str:
        return (
            f"{self.model_name}|seed={self.seed}|round={round_number}|n={self.samples}"
            f"|epochs={config.local_epochs}|batch={config.batch_size}"
            f"|lr={config.learning_rate!r}"
            + (f"|dp_clip={self._dp.ledger.max_grad_norm!r}" if self._dp is not None else "")
        )

    def _resume(
        self,
        checkpoints: RoundCheckpoints | None,
        fingerprint: str,
        optimizer: _Sgd,
        generator: torch.Generator,
    ) -> tuple[int, float]:
        """Epochs already done and the last epoch's loss (0 and NaN for a fresh start)."""
        state = checkpoints.load(fingerprint) if checkpoints is not None else None
        if state is None:
            return 0, math.nan
        self._model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        generator.set_state(state.generator)
        logger.info("resuming local training after epoch %d from a checkpoint", state.epochs_done)
        return state.epochs_done, state.loss

    def _epoch(self, optimizer: _Sgd, generator: torch.Generator, batch_size: int) -> float:
        """One pass over the local data in shuffled mini-batches; the mean loss."""
        model, total = self._model, self.samples
        epoch_loss = torch.zeros((), dtype=torch.float64)
        order = torch.randperm(total, generator=generator)
        for start in range(0, total, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            logits = model(self._images.index_select(0, index))
            loss = F.cross_entropy(logits, self._labels.index_select(0, index))
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            epoch_loss += loss.detach().double() * index.shape[0]
        return float(epoch_loss) / total

    def evaluate_holdout(self, *, batch_size: int = 256) -> EvalResult | None:
        """Accuracy and loss on the holdout set, or ``None`` without one."""
        if self._holdout is None:
            return None
        images, labels = self._holdout
        return evaluate_model(self._model, images, labels, batch_size=batch_size)
