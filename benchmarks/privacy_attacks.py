"""Gradient inversion against single-example client updates, with and without DP.

The attacker sees one client's update after one SGD step on one bundled digit (batch 1,
``delta = -lr * grad``), made by the production trainer; with DP, by its DP-SGD path
(Opacus, per-example clip 1.0, noise multiplier 1.0, noise from the OS CSPRNG), or by
update-level ``apply_differential_privacy`` (clip 1.0, noise multiplier 1.0).

* MLP, exact: the first layer's input is ``dW1[i] / db1[i]`` for the row with the
  largest bias change (Phong et al. 2017; the unit tests also check a least-squares fit
  over all rows).
* CNN, iDLG (Zhu et al. 2019, with the label read off the output bias as in Zhao et
  al. 2020; the true label is given under DP): Adam on a dummy image, from a seeded
  uniform start, minimising the L2 distance between its gradient and the observed
  ``-delta / lr``.

Reported: PSNR (dB, pixels in [0, 1], reconstructions clipped to that range) against the
true digit, next to the PSNR of two guesses that need no update: the mean training
digit and a blank image. Quick mode: 3 digits for the MLP, 1 for the CNN (150 Adam
steps); full mode: 10 and 3 (500 steps).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.report import Result, Target
from fedlearn.client.privacy import DpOptions, PrivacyLedger
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.privacy import apply_differential_privacy
from fedlearn.core.types import PrivacyConfig, RoundConfig
from fedlearn.data import load_dataset
from fedlearn.models.preprocess import MNIST_MEAN, MNIST_STD, images_to_tensor
from fedlearn.models.registry import build_model

__all__ = ["run"]

LR = 0.05
MODEL_SEED = 3
DP = PrivacyConfig(delta=1e-5, max_grad_norm=1.0, noise_multiplier=1.0)
LOW, HIGH = (0.0 - MNIST_MEAN) / MNIST_STD, (1.0 - MNIST_MEAN) / MNIST_STD
COLUMNS = ("model", "attack", "privacy", "digits", "PSNR dB (mean)", "PSNR dB (worst)", "s")

Update = dict[str, np.ndarray]


def _update(model: str, image: np.ndarray, label: int, dp: PrivacyConfig | None) -> Update:
    ledger = None if dp is None else PrivacyLedger(DpOptions(dp, planned_rounds=1))
    trainer = LocalTrainer(model, image[None], np.array([label]), seed=MODEL_SEED, privacy=ledger)
    before = trainer.get_weights()
    trainer.train(RoundConfig(local_epochs=1, batch_size=1, learning_rate=LR), round_number=1)
    after = trainer.get_weights()
    return {k: after[k].astype(np.float64) - before[k] for k in before}


def _update_level(update: Update, rng: np.random.Generator) -> Update:
    noised = apply_differential_privacy(update, clip_norm=1.0, noise_multiplier=1.0, rng=rng)
    return {k: v.astype(np.float64) for k, v in noised.items()}


def _psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    a = np.clip(estimate, LOW, HIGH) * MNIST_STD + MNIST_MEAN
    b = truth * MNIST_STD + MNIST_MEAN
    return 10 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def _invert_mlp(update: Update) -> np.ndarray:
    weight, bias = update["fc1.weight"], update["fc1.bias"]
    i = int(np.argmax(np.abs(bias)))
    return np.asarray(weight[i] / bias[i])


def _idlg(model_name: str, update: Update, *, label: int, steps: int) -> np.ndarray:
    model = build_model(model_name, seed=MODEL_SEED)
    named = list(model.named_parameters())
    params = [p for _, p in named]
    observed = [torch.from_numpy(-update[n] / LR).float() for n, _ in named]
    generator = torch.Generator().manual_seed(0)
    dummy = torch.rand((1, 1, 28, 28), generator=generator) * (HIGH - LOW) + LOW
    dummy.requires_grad_(True)
    target = torch.tensor([label])
    optimizer = torch.optim.Adam([dummy], lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        grads = torch.autograd.grad(
            F.cross_entropy(model(dummy), target), params, create_graph=True
        )
        distance = torch.stack(
            [((g - o) ** 2).sum() for g, o in zip(grads, observed, strict=True)]
        ).sum()
        distance.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return dummy.detach().numpy().reshape(-1).astype(np.float64)


def _row(model: str, attack: str, privacy: str, psnrs: list[float], seconds: float) -> list[object]:
    return [
        model, attack, privacy, len(psnrs),
        round(float(np.mean(psnrs)), 1), round(min(psnrs), 1), round(seconds, 1),
    ]  # fmt: skip


def run(quick: bool) -> Result:
    torch.manual_seed(0)
    data = load_dataset("mnist")
    first = [int(np.flatnonzero(data.test_labels == k)[0]) for k in range(10)]
    images, labels = data.test_images[first], data.test_labels[first].astype(np.int64)
    truths = images_to_tensor(images).numpy().reshape(10, -1).astype(np.float64)
    mean = images_to_tensor(data.train_images).numpy().reshape(-1, 784).mean(axis=0)
    n_mlp, n_cnn, steps = (3, 1, 150) if quick else (10, 3, 500)
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    results: dict[str, float] = {}

    def record(key: str, row: tuple[str, str, str], estimates: list[np.ndarray], t0: float) -> None:
        psnrs = [_psnr(e, truths[i]) for i, e in enumerate(estimates)]
        rows.append(_row(*row, psnrs, time.perf_counter() - t0))
        results[key] = float(np.mean(psnrs))

    for name, guess in (("mean digit", mean), ("blank", np.full(784, LOW))):
        record(name, ("-", f"guess: {name}", "-"), [guess] * n_mlp, time.perf_counter())
    for privacy in ("none", "DP-SGD", "update-level DP"):
        t0 = time.perf_counter()
        estimates = []
        for i in range(n_mlp):
            update = _update("mlp", images[i], int(labels[i]), DP if privacy == "DP-SGD" else None)
            if privacy == "update-level DP":
                update = _update_level(update, rng)
            estimates.append(_invert_mlp(update))
        record(f"mlp {privacy}", ("mlp", "first layer dW/db", privacy), estimates, t0)
    for privacy in ("none", "DP-SGD"):
        t0 = time.perf_counter()
        estimates = []
        for i in range(n_cnn):
            update = _update("cnn", images[i], int(labels[i]), DP if privacy == "DP-SGD" else None)
            label = int(np.argmax(update["fc2.bias"])) if privacy == "none" else int(labels[i])
            estimates.append(_idlg("cnn", update, label=label, steps=steps))
        record(f"cnn {privacy}", ("cnn", f"iDLG, Adam {steps} steps", privacy), estimates, t0)

    guess = max(results["mean digit"], results["blank"])
    targets = [
        Target("MLP exact inversion without DP", "> 60 dB", f"{results['mlp none']:.1f} dB",
               results["mlp none"] > 60),
        Target("MLP inversion with DP-SGD", f"<= best guess ({guess:.1f} dB)",
               f"{results['mlp DP-SGD']:.1f} dB", results["mlp DP-SGD"] <= guess),
        Target("CNN iDLG with DP-SGD", f"<= best guess ({guess:.1f} dB)",
               f"{results['cnn DP-SGD']:.1f} dB", results["cnn DP-SGD"] <= guess),
    ]  # fmt: skip
    notes = [
        "One SGD step on one digit (lr 0.05, batch 1), so the update is -lr times that "
        "digit's gradient: the worst case for the client. DP: max_grad_norm 1.0, noise "
        "multiplier 1.0 (the CLI's default clip; epsilon 4.7 at delta 1e-5 for this "
        "single full-batch step).",
        "Guesses: the PSNR, over the MLP rows' digits, of an image chosen without any update.",
        "The CNN's DP-SGD noise comes from os.urandom, so that row varies between runs.",
    ]
    return Result(
        name="privacy_attacks",
        title="Gradient inversion of single-example updates, with and without DP",
        columns=COLUMNS,
        rows=rows,
        targets=targets,
        notes=notes,
        data={"mean_psnr_db": results},
    )
