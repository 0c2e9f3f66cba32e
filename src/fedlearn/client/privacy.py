"""A client's privacy budget: Opacus's RDP accountant, kept in the client's state folder.

The client's :class:`~fedlearn.core.types.PrivacyConfig` says what it may spend:

* ``epsilon`` > 0: the budget for the whole run at ``delta``. A round that would take the
  spent epsilon past it is refused (:class:`~fedlearn.errors.PrivacyBudgetExhaustedError`)
  before any training happens.
* ``noise_multiplier`` > 0: the DP-SGD noise, relative to ``max_grad_norm``. Given 0 with a
  budget, it is derived once with Opacus's ``get_noise_multiplier`` so that
  ``planned_rounds`` rounds like the first one spend at most the budget, and then kept
  (in the state file too, so a restart does not derive another).

The ledger charges the steps of an epoch *before* the epoch runs and writes itself to disk
at once (atomically): a client killed mid-epoch has paid for it, never the other way round.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedlearn.client.files import write_atomic
from fedlearn.core.types import PrivacyConfig
from fedlearn.errors import ConfigError, PrivacyBudgetExhaustedError

if TYPE_CHECKING:
    from opacus.accountants import RDPAccountant

__all__ = ["LEDGER_FILE", "DpOptions", "PrivacyLedger", "dp_sample_rate"]

logger = logging.getLogger(__name__)

LEDGER_FILE = "privacy.json"


@dataclass(frozen=True, slots=True)
class DpOptions:
    """Example-level DP-SGD settings of one client."""

    config: PrivacyConfig
    planned_rounds: int = 0
    """Rounds the budget should last; needed to derive the noise multiplier."""
    ledger_path: Path | None = None
    """Where the spent budget is kept; ``None``: in memory only (lost on restart)."""

    def __post_init__(self) -> None:
        c = self.config
        if not 0.0 < c.delta < 1.0:
            raise ConfigError(f"DP delta must be in (0, 1), got {c.delta}")
        if not (math.isfinite(c.max_grad_norm) and c.max_grad_norm > 0):
            raise ConfigError(f"DP max_grad_norm must be positive, got {c.max_grad_norm}")
        if c.epsilon < 0 or c.noise_multiplier < 0:
            raise ConfigError("DP epsilon and noise_multiplier must be >= 0")
        if c.epsilon == 0 and c.noise_multiplier == 0:
            raise ConfigError("DP needs an epsilon budget or a noise multiplier")
        if c.noise_multiplier == 0 and self.planned_rounds < 1:
            raise ConfigError(
                "deriving the noise multiplier from epsilon needs the planned number of rounds"
            )


def dp_sample_rate(samples: int, batch_size: int) -> tuple[float, int]:
    """Poisson sample rate and steps of one epoch, as Opacus's ``DPDataLoader`` sets them:
    ``ceil(samples / batch_size)`` steps with rate ``1 / steps``."""
    steps = max(1, math.ceil(samples / batch_size))
    return 1.0 / steps, steps


class PrivacyLedger:
    """The epsilon a client has spent, and the noise multiplier it trains with."""

    def __init__(self, options: DpOptions) -> None:
        self.options = options
        self.accountant: RDPAccountant = _rdp_accountant()
        self._noise_multiplier = options.config.noise_multiplier
        path = options.ledger_path
        if path is not None and path.exists():
            self._load(path)

    @property
    def noise_multiplier(self) -> float:
        """The multiplier in use; 0 until derived at the first round."""
        return self._noise_multiplier

    @property
    def max_grad_norm(self) -> float:
        return self.options.config.max_grad_norm

    def epsilon(self) -> float:
        """Epsilon spent so far at the configured delta."""
        return _epsilon(self.accountant.history, self.options.config.delta)

    def before_round(self, *, sample_rate: float, steps: int) -> None:
        """Fix the noise multiplier if needed, then refuse a round that would exceed the
        budget (``steps`` of Poisson rate ``sample_rate``)."""
        config = self.options.config
        if self._noise_multiplier == 0:
            self._noise_multiplier = _derive(
                config, sample_rate, steps * self.options.planned_rounds
            )
            logger.info(
                "DP-SGD noise multiplier %.4f: epsilon %.3g at delta %.3g over %d rounds",
                self._noise_multiplier,
                config.epsilon,
                config.delta,
                self.options.planned_rounds,
            )
            self._save()
        if config.epsilon <= 0:
            return
        after = [*self.accountant.history, (self._noise_multiplier, sample_rate, steps)]
        would_spend = _epsilon(after, config.delta)
        if would_spend > config.epsilon:
            error = PrivacyBudgetExhaustedError(
                spent=self.epsilon(), would_spend=would_spend, budget=config.epsilon
            )
            logger.error("refusing to train: %s", error)
            raise error

    def charge(self, *, sample_rate: float, steps: int) -> None:
        """Record ``steps`` DP-SGD steps and persist the ledger (before they run)."""
        for _ in range(steps):
            self.accountant.step(noise_multiplier=self._noise_multiplier, sample_rate=sample_rate)
        self._save()

    def state_dict(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self._noise_multiplier,
            "accountant": {
                "mechanism": self.accountant.mechanism(),
                "history": [list(h) for h in self.accountant.history],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["accountant"]
        if saved.get("mechanism") != self.accountant.mechanism():
            raise ConfigError(f"privacy ledger of another accountant: {saved.get('mechanism')}")
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in saved["history"]]
        if self.options.config.noise_multiplier == 0:  # derived: keep the saved one
            self._noise_multiplier = float(state["noise_multiplier"])

    def _save(self) -> None:
        path = self.options.ledger_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(self.state_dict(), indent=1).encode())

    def _load(self, path: Path) -> None:
        try:
            self.load_state_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Never start from zero silently: that would forget spent budget.
            raise ConfigError(f"unreadable privacy ledger {path}: {exc}") from exc
        logger.info("privacy ledger %s: epsilon %.4f spent", path, self.epsilon())


def _rdp_accountant() -> RDPAccountant:
    # Opacus (and the scipy it loads) costs a client ~110 MB of memory: imported only
    # once DP is asked for, so that clients training without DP never load it.
    from opacus.accountants import RDPAccountant  # noqa: PLC0415

    return RDPAccountant()


def _derive(config: PrivacyConfig, sample_rate: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier  # noqa: PLC0415 - see above

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return float(
                get_noise_multiplier(
                    target_epsilon=config.epsilon,
                    target_delta=config.delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant="rdp",
                )
            )
    except ValueError as exc:
        raise ConfigError(f"cannot reach epsilon {config.epsilon}: {exc}") from exc


def _epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    if not history:
        return 0.0
    accountant = _rdp_accountant()
    accountant.history = list(history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": still a bound
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta))
