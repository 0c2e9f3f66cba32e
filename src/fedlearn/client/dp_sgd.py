"""Example-level DP-SGD with Opacus (Abadi et al., 2016), as the trainer uses it.

Each step draws a Poisson sample of the local data (every example independently with
probability ``sample_rate``, from :class:`~fedlearn.client.secure_random.SecureRandom`),
computes per-example gradients with Opacus's ``GradSampleModule``, clips each to L2 norm
``max_grad_norm``, sums them, adds ``N(0, (noise_multiplier * max_grad_norm)^2)`` noise
per coordinate and divides by the expected batch size (Opacus's ``DPOptimizer``). Poisson
sampling is what the RDP accountant's bound assumes; empty batches still take a
(noise-only) step, so that whether a step happened reveals nothing.

The noise comes from the OS CSPRNG rather than PyTorch's generator (see
:mod:`fedlearn.client.secure_random`), so DP training is not reproducible from a seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from fedlearn.client.privacy import PrivacyLedger
from fedlearn.client.secure_random import SecureRandom, secure_rng

__all__ = ["CLIP_MARGIN", "DpSgd", "SecureDPOptimizer"]

CLIP_MARGIN = 1e-5
"""Per-example gradients are clipped to ``max_grad_norm * (1 - CLIP_MARGIN)``: Opacus
computes norms in float32, and a gradient clipped to exactly the bound can come out up to
~1e-6 (relative) longer. The noise stays calibrated to the full ``max_grad_norm``."""


class SecureDPOptimizer(DPOptimizer):  # type: ignore[misc]  # opacus is untyped
    """Opacus's ``DPOptimizer`` with its Gaussian noise drawn from ``os.urandom``, and
    clipping that stays within ``max_grad_norm`` after float32 rounding."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        noise: SecureRandom,
    ) -> None:
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm * (1 - CLIP_MARGIN),
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",  # divide the noisy sum by expected_batch_size
        )
        self.noise = noise
        self.noise_std = noise_multiplier * max_grad_norm

    def add_noise(self) -> None:
        std = self.noise_std
        for p in self.params:
            summed: torch.Tensor = p.summed_grad
            draws = torch.from_numpy(self.noise.standard_normal(summed.numel()))
            noise = draws.to(dtype=summed.dtype).view_as(summed) * std
            p.grad = (summed + noise).view_as(p)


class DpSgd:
    """DP-SGD epochs for one model, charged to a :class:`PrivacyLedger`.

    Wrapping attaches Opacus's per-example gradient hooks to ``model`` (they do nothing
    in evaluation); its parameters and ``state_dict`` keys are unchanged.
    """

    def __init__(
        self, model: nn.Module, ledger: PrivacyLedger, *, noise: SecureRandom | None = None
    ) -> None:
        # "sum": per-example gradients are those of each example's own loss.
        self.module = GradSampleModule(model, loss_reduction="sum")
        self.ledger = ledger
        self.noise = noise or secure_rng()

    def optimizer(
        self, optimizer: torch.optim.Optimizer, *, expected_batch_size: int
    ) -> SecureDPOptimizer:
        return SecureDPOptimizer(
            optimizer,
            noise_multiplier=self.ledger.noise_multiplier,
            max_grad_norm=self.ledger.max_grad_norm,
            expected_batch_size=max(1, expected_batch_size),
            noise=self.noise,
        )

    def epoch(
        self,
        optimizer: SecureDPOptimizer,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        sample_rate: float,
        steps: int,
    ) -> float:
        """``steps`` DP-SGD steps, charged to the ledger first; the mean training loss."""
        self.ledger.charge(sample_rate=sample_rate, steps=steps)
        total = labels.shape[0]
        loss_sum, seen = 0.0, 0
        for _ in range(steps):
            chosen = torch.from_numpy(self.noise.random(total) < sample_rate)
            index = chosen.nonzero().squeeze(1)
            optimizer.zero_grad(set_to_none=True)
            logits = self.module(images.index_select(0, index))
            loss = F.cross_entropy(logits, labels.index_select(0, index), reduction="sum")
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += float(loss.detach())
            seen += int(index.shape[0])
        return loss_sum / seen if seen else float("nan")
