"""Central DP (DP-FedAvg, user-level) on the coordinator: who is sampled, how the
aggregate is noised, and the run's user-level epsilon, persisted round by round.

The math is in :mod:`fedlearn.core.central_dp`; this module is the bookkeeping:

- **Selection.** Under central DP a round's clients are drawn from the noise source
  (:func:`~fedlearn.core.central_dp.secret_sample`), not from the run's public seed:
  the privacy amplification by sampling the accountant claims needs a selection the
  adversary cannot predict.
- **Admission.** Before a round opens, :meth:`CentralPrivacy.admit` computes the
  epsilon the run would have spent once that round is charged; past the target, the
  round is not opened and the run finishes (``exhausted``). Otherwise the round number
  and its sample rate (``selected / eligible``) are persisted as *pending*.
- **Charging.** :meth:`CentralPrivacy.charge` records the round in the accountant and
  persists the state *before* the noise is drawn and long before the round row says
  ``completed`` (when the new model is published). A crash in between leaves a round
  that is charged but still open: the restart redoes its close and does not charge it
  again (``last_round``), and since the first attempt's model was never published, one
  round number is one release. A close that fails after the charge keeps the spend:
  over-counting is the safe side. A round charged and later rolled back is not refunded
  either: its noised model was released to the clients.

Noise comes in through the :class:`~fedlearn.core.central_dp.NoiseSource` port (an
OS-entropy source in production, a seeded generator in tests): the service never reads
entropy itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace

from fedlearn.core.aggregation import Axpy, StreamingFedAvg
from fedlearn.core.central_dp import (
    CentralDpConfig,
    DpFedAvg,
    NoiseSource,
    projected_epsilon,
    sample_rate,
    secret_sample,
    user_level_epsilon,
)
from fedlearn.core.privacy import RdpAccountant
from fedlearn.core.types import CentralPrivacyState
from fedlearn.service.messages import CentralPrivacyStatus
from fedlearn.service.ports import RunStore

__all__ = ["CentralPrivacy"]

logger = logging.getLogger(__name__)

_SLACK = 1e-9
"""Relative tolerance when comparing epsilon with the target."""


class CentralPrivacy:
    """The run's user-level accountant, cached in memory and written through."""

    def __init__(
        self, run_id: str, config: CentralDpConfig, runs: RunStore, *, noise: NoiseSource
    ) -> None:
        self.config = config
        self._runs = runs
        self._noise = noise
        self._lock = threading.Lock()
        self._accountant = RdpAccountant()
        self._exhausted = False
        stored = runs.get_central_privacy(run_id)
        self._state = stored or CentralPrivacyState(run_id, delta=config.delta)
        if stored is not None:
            self._accountant.load_state_dict(dict(stored.accountant))
            self._state = replace(stored, epsilon_spent=self._epsilon(), delta=config.delta)
            logger.info(
                "central DP: resumed at epsilon %.4f after %d charged rounds",
                self.epsilon(),
                self.rounds_charged,
            )

    # -- rounds -------------------------------------------------------------------

    def aggregator(self, size: int, *, axpy: Axpy | None = None) -> DpFedAvg:
        """A running mean that clips every update and noises the aggregate."""
        return DpFedAvg(
            StreamingFedAvg(size, axpy=axpy),
            clip_norm=self.config.clip_norm,
            noise_multiplier=self.config.noise_multiplier,
            noise=self._noise,
        )

    def select(self, candidates: Sequence[str], k: int) -> tuple[str, ...]:
        """``k`` of ``candidates``, drawn from the (secret) noise source."""
        return secret_sample(candidates, k, source=self._noise)

    def admit(self, round_number: int, *, selected: int, eligible: int, now: float) -> bool:
        """Whether round ``round_number`` may open; if so it is persisted as pending."""
        q = sample_rate(selected, eligible)
        with self._lock:
            target = self.config.target_epsilon
            if target is not None:
                after = projected_epsilon(
                    self._accountant.history,
                    noise_multiplier=self.config.noise_multiplier,
                    sample_rate=q,
                    delta=self.config.delta,
                )
                if after > target * (1 + _SLACK):
                    if not self._exhausted:
                        logger.warning(
                            "central DP budget reached: round %d would bring user-level "
                            "epsilon from %.4f to %.4f, over the target %.4f; the run ends",
                            round_number,
                            self._state.epsilon_spent,
                            after,
                            target,
                        )
                    self._exhausted = True
                    return False
            self._save(replace(self._state, pending_round=round_number, pending_sample_rate=q), now)
        return True

    def charge(self, round_number: int, *, now: float) -> None:
        """Account the release of round ``round_number``'s noised aggregate (once)."""
        with self._lock:
            state = self._state
            if round_number <= state.last_round:
                return  # charged before a restart: the close is being redone
            q = state.pending_sample_rate if state.pending_round == round_number else 1.0
            if state.pending_round != round_number:
                logger.warning(
                    "central DP: no sample rate stored for round %d; charged at q = 1",
                    round_number,
                )
            self._accountant.step(noise_multiplier=self.config.noise_multiplier, sample_rate=q)
            self._save(replace(state, last_round=round_number), now)
            logger.info(
                "central DP: round %d charged (q = %.4f); user-level epsilon %.4f at delta %g",
                round_number,
                q,
                self._state.epsilon_spent,
                self.config.delta,
            )

    # -- reading ------------------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        """True once a round was refused because it would exceed the target."""
        with self._lock:
            return self._exhausted

    @property
    def rounds_charged(self) -> int:
        return sum(steps for _, _, steps in self._accountant.history)

    def epsilon(self) -> float:
        with self._lock:
            return self._state.epsilon_spent

    def status(self) -> CentralPrivacyStatus:
        cfg = self.config
        with self._lock:
            return CentralPrivacyStatus(
                epsilon_spent=self._state.epsilon_spent,
                target_epsilon=cfg.target_epsilon,
                delta=cfg.delta,
                noise_multiplier=cfg.noise_multiplier,
                clip_norm=cfg.clip_norm,
                rounds_charged=self.rounds_charged,
                exhausted=self._exhausted,
            )

    def _epsilon(self) -> float:
        return user_level_epsilon(self._accountant.history, delta=self.config.delta)

    def _save(self, state: CentralPrivacyState, now: float) -> None:
        state = replace(
            state,
            accountant=self._accountant.state_dict(),
            epsilon_spent=self._epsilon(),
            delta=self.config.delta,
            updated_at=now,
        )
        self._runs.save_central_privacy(state)
        self._state = state
