"""The ``--central-dp-*`` options of ``fedlearn coordinator`` and what they build."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from fedlearn.core.central_dp import CentralDpConfig, noise_multiplier_for
from fedlearn.core.sampling import sample_size
from fedlearn.errors import ConfigError

__all__ = [
    "CentralDpClipOpt",
    "CentralDpDeltaOpt",
    "CentralDpEpsilonOpt",
    "CentralDpExpectedClientsOpt",
    "CentralDpNoiseOpt",
    "central_dp_config",
]

logger = logging.getLogger(__name__)

CentralDpClipOpt = Annotated[
    float | None,
    typer.Option(
        "--central-dp-clip",
        help="Central DP (DP-FedAvg, user-level): clip each client's update to this L2 norm "
        "and add Gaussian noise to each round's aggregate. Turns central DP on "
        "[default: off].",
    ),
]
CentralDpNoiseOpt = Annotated[
    float | None,
    typer.Option(
        "--central-dp-noise",
        help="Central DP noise multiplier z: the noise std of the sum of clipped updates is "
        "z * clip [default: derived from --central-dp-epsilon and --rounds].",
    ),
]
CentralDpEpsilonOpt = Annotated[
    float | None,
    typer.Option(
        "--central-dp-epsilon",
        help="Central DP target: user-level epsilon (at --central-dp-delta) the run may spend; "
        "the run finishes before a round that would pass it [default: no target].",
    ),
]
CentralDpDeltaOpt = Annotated[
    float,
    typer.Option("--central-dp-delta", help="Central DP delta of the user-level epsilon."),
]
CentralDpExpectedClientsOpt = Annotated[
    int | None,
    typer.Option(
        "--central-dp-expected-clients",
        help="Clients expected to register: sets the sample rate (--clients-per-round of them) "
        "used to derive --central-dp-noise from the target [default: every client every "
        "round, the largest noise].",
    ),
]


def central_dp_config(
    *,
    clip: float | None,
    noise: float | None,
    epsilon: float | None,
    delta: float,
    rounds: int,
    min_clients: int,
    clients_per_round: int | None,
    fraction: float | None,
    expected_clients: int | None,
) -> CentralDpConfig | None:
    """The run's central DP from the ``--central-dp-*`` flags (``None``: off).

    ``ConfigError`` when the flags do not make sense together.
    """
    if clip is None:
        if noise is not None or epsilon is not None or expected_clients is not None:
            raise ConfigError("central DP needs --central-dp-clip (the clip norm) to turn it on")
        return None
    if noise is None and epsilon is None:
        raise ConfigError("central DP needs --central-dp-noise, --central-dp-epsilon, or both")
    if noise is None:
        assert epsilon is not None
        q = _planned_sample_rate(
            expected_clients,
            min_clients=min_clients,
            clients_per_round=clients_per_round,
            fraction=fraction,
        )
        if not 0 < delta < 1:
            raise ConfigError(f"--central-dp-delta must be in (0, 1), got {delta}")
        if not epsilon > 0:
            raise ConfigError(f"--central-dp-epsilon must be > 0, got {epsilon}")
        noise = noise_multiplier_for(
            target_epsilon=epsilon, delta=delta, rounds=rounds, sample_rate=q
        )
        logger.info(
            "central DP: noise multiplier %.4f for epsilon %g over %d rounds at q = %.4f",
            noise,
            epsilon,
            rounds,
            q,
        )
    return CentralDpConfig(
        clip_norm=clip, noise_multiplier=noise, delta=delta, target_epsilon=epsilon
    )


def _planned_sample_rate(
    expected_clients: int | None,
    *,
    min_clients: int,
    clients_per_round: int | None,
    fraction: float | None,
) -> float:
    """The per-round sample rate to plan the noise for: that of ``expected_clients``
    registered clients, or ``fraction`` (1 if neither is known). Should more rounds
    sample at a higher rate, the target stops the run earlier; it is never passed."""
    if expected_clients is None:
        return fraction if fraction is not None else 1.0
    if expected_clients < 1:
        raise ConfigError(f"--central-dp-expected-clients must be >= 1, got {expected_clients}")
    k = sample_size(
        expected_clients,
        min_clients=min_clients,
        clients_per_round=clients_per_round,
        fraction=fraction,
    )
    return k / expected_clients
