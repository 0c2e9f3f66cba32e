"""Codec names: the registry and the parser of composed names.

A codec name is an optional sparsifier followed by an optional value codec, joined
by ``+``; parameters follow a colon as ``key=value`` pairs separated by commas
(``topk`` also takes its fraction bare)::

    raw                       float values as they are (lossless; the default)
    float16                   values rounded to float16
    int8                      symmetric int8, one scale per vector
    int8:block=256,round=stochastic
    sign:block=4096           one bit per value, mean magnitude per block
    topk:0.01                 the 1% largest magnitudes, values raw
    topk:0.01+int8            ... values int8 (>100x smaller than float32)
    topk:0.01+sign            sparse ternary compression (STC)
    lowrank:4+int8:block=256  every matrix as rank-4 factors, int8 per 256 values
                              (PowerSGD; >300x smaller for the CNN)

``topk`` or ``lowrank`` may come first, not both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedlearn.core.codecs.base import ValueCodec
from fedlearn.core.codecs.lowrank import LowRank
from fedlearn.core.codecs.quantize import Float16Values, Int8Values, RawValues
from fedlearn.core.codecs.sparse import TopK
from fedlearn.core.codecs.ternary import SignValues
from fedlearn.errors import ConfigError

__all__ = ["VALUE_CODECS", "CodecSpec", "available_codecs", "parse_codec"]

VALUE_CODECS: Mapping[str, type[ValueCodec]] = {
    cls.name: cls for cls in (RawValues, Float16Values, Int8Values, SignValues)
}
"""Value codecs by name; ``topk`` is the one sparsifier and may precede any of them."""

_MAX_NAME = 256
_BARE = {"topk": "fraction", "lowrank": "rank"}
"""Stages whose one parameter may be given without its key (``topk:0.01``, ``lowrank:4``)."""
_STAGE = re.compile(r"([a-z0-9]+)(?::([A-Za-z0-9_.=,-]+))?")


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """A parsed codec name: an optional top-k or low-rank step, then a value codec."""

    values: ValueCodec = field(default_factory=RawValues)
    sparsify: TopK | None = None
    factorize: LowRank | None = None

    def __post_init__(self) -> None:
        if self.sparsify is not None and self.factorize is not None:
            raise ConfigError("a codec may sparsify (topk) or factorize (lowrank), not both")

    @property
    def structured(self) -> bool:
        """Whether the payload has a structure section (indices or a layout)."""
        return self.sparsify is not None or self.factorize is not None

    @property
    def name(self) -> str:
        """The canonical name, which :func:`parse_codec` reads back into an equal spec."""
        stages = [] if self.sparsify is None else [f"topk:{self.sparsify.fraction!r}"]
        if self.factorize is not None:
            stages.append(f"lowrank:{self.factorize.rank}")
        if not self.structured or not isinstance(self.values, RawValues):
            params = ",".join(f"{k}={v}" for k, v in self.values.params().items())
            stages.append(f"{self.values.name}:{params}" if params else self.values.name)
        return "+".join(stages)

    def __str__(self) -> str:
        return self.name


def available_codecs() -> tuple[str, ...]:
    """Every stage name a codec name may use."""
    return ("topk", "lowrank", *VALUE_CODECS)


def _params(stage: str, text: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(",") if text else []:
        key, eq, value = item.partition("=")
        if not eq:
            if params or stage not in _BARE:
                raise ConfigError(f"parameter {item!r} of {stage!r} needs the form key=value")
            key, value = _BARE[stage], item
        if not key or not value or key in params:
            raise ConfigError(f"bad or repeated parameter {item!r} in codec stage {stage!r}")
        params[key] = value
    return params


def _topk(params: Mapping[str, str]) -> TopK:
    if set(params) != {"fraction"}:
        raise ConfigError(f"topk takes exactly one parameter, its fraction; got {dict(params)}")
    try:
        fraction = float(params["fraction"])
    except ValueError as exc:
        raise ConfigError(f"topk fraction is not a number: {params['fraction']!r}") from exc
    return TopK(fraction)


def _lowrank(params: Mapping[str, str]) -> LowRank:
    if set(params) != {"rank"}:
        raise ConfigError(f"lowrank takes exactly one parameter, its rank; got {dict(params)}")
    try:
        return LowRank(int(params["rank"]))
    except ValueError as exc:
        raise ConfigError(f"lowrank rank is not an integer: {params['rank']!r}") from exc


def parse_codec(text: str) -> CodecSpec:
    """Parse a codec name such as ``"topk:0.01+int8"``; raise ``ConfigError`` if invalid."""
    if not text or len(text) > _MAX_NAME or not text.isascii():
        raise ConfigError(f"codec name must be 1-{_MAX_NAME} ASCII characters, got {text[:80]!r}")
    sparsify: TopK | None = None
    factorize: LowRank | None = None
    values: ValueCodec | None = None
    for position, stage_text in enumerate(text.split("+")):
        match = _STAGE.fullmatch(stage_text)
        if match is None:
            raise ConfigError(f"cannot parse codec stage {stage_text!r} in {text!r}")
        stage, params = match.group(1), _params(match.group(1), match.group(2))
        if stage == "topk" and position == 0:
            sparsify = _topk(params)
        elif stage == "lowrank" and position == 0:
            factorize = _lowrank(params)
        elif stage in VALUE_CODECS and values is None:
            values = VALUE_CODECS[stage].from_params(params)
        elif stage in VALUE_CODECS or stage in _BARE:
            raise ConfigError(
                f"codec {text!r}: at most one 'topk' or 'lowrank' first, "
                "then at most one value codec"
            )
        else:
            raise ConfigError(
                f"unknown codec {stage!r} in {text!r}; known: {', '.join(available_codecs())}"
            )
    return CodecSpec(values=values or RawValues(), sparsify=sparsify, factorize=factorize)
