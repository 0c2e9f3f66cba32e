"""``--download-codec`` on ``fedlearn coordinator`` and ``fedlearn run``: deterministic codecs
go through under their canonical name, stochastic ones are a usage error (exit 2)."""

import pytest
from cli_fakes import coordinator_settings, flat, run_plan


def _forwarded(plan) -> str | None:
    args = [str(a) for a in plan.coordinator_args]
    return args[args.index("--download-codec") + 1] if "--download-codec" in args else None


@pytest.mark.parametrize("codec", ["int8:round=stochastic", "topk:0.1+int8:round=stochastic"])
def test_coordinator_refuses_a_stochastic_download_codec_as_a_usage_error(
    monkeypatch, capsys, codec
):
    code, err, seen = coordinator_settings(monkeypatch, capsys, "--download-codec", codec)

    assert code == 2
    assert seen == []
    assert "--download-codec" in flat(err) and "stochastically" in flat(err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (None, None),
        ("raw", None),
        ("int8:round=nearest", "int8"),
        ("topk:1e-1+int8", "topk:0.1+int8"),
    ],
)
def test_coordinator_takes_the_canonical_download_codec(monkeypatch, capsys, given, canonical):
    args = () if given is None else ("--download-codec", given)

    code, _, seen = coordinator_settings(monkeypatch, capsys, *args)

    assert code is None
    assert seen[0].run.download_codec == canonical


def test_run_refuses_a_stochastic_download_codec_before_starting_anything(
    monkeypatch, capsys, tmp_path
):
    code, err, plans = run_plan(
        monkeypatch, capsys, tmp_path, "--download-codec", "int8:round=stochastic"
    )

    assert code == 2
    assert plans == []
    assert "--download-codec" in flat(err), err


@pytest.mark.parametrize(
    ("given", "forwarded"), [(None, None), ("raw", None), ("int8:block=0", "int8")]
)
def test_run_forwards_the_canonical_download_codec_to_its_coordinator(
    monkeypatch, capsys, tmp_path, given, forwarded
):
    args = () if given is None else ("--download-codec", given)

    code, _, plans = run_plan(monkeypatch, capsys, tmp_path, *args)

    assert code is None
    assert _forwarded(plans[0]) == forwarded
