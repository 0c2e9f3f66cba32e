"""``--update-codec`` on ``fedlearn coordinator`` and ``fedlearn run``: canonical names
go through, anything else is a usage error (exit 2) before anything starts."""

import pytest
from cli_fakes import coordinator_settings, flat, run_plan


def _forwarded_codec(plan) -> str:
    args = [str(a) for a in plan.coordinator_args]
    return args[args.index("--update-codec") + 1]


def test_coordinator_takes_the_canonical_name_of_the_update_codec(monkeypatch, capsys):
    code, _, seen = coordinator_settings(
        monkeypatch, capsys, "--update-codec", "topk:1e-2+int8:block=0"
    )

    assert code is None
    assert seen[0].run.round_config.codec == "topk:0.01+int8"


def test_coordinator_update_codec_defaults_to_raw(monkeypatch, capsys):
    _, _, seen = coordinator_settings(monkeypatch, capsys)

    assert seen[0].run.round_config.codec == "raw"


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("bogus", "unknown codec 'bogus'"),
        ("topk:2", "topk fraction must be in (0, 1]"),
        ("int8+topk:0.1", "at most one 'topk' or 'lowrank' first"),
        ("int8:block=x", "int8 block must be a whole number"),
    ],
)
def test_coordinator_refuses_a_bad_update_codec_as_a_usage_error(
    monkeypatch, capsys, codec, message
):
    code, err, seen = coordinator_settings(monkeypatch, capsys, "--update-codec", codec)

    assert code == 2
    assert seen == []
    assert "--update-codec" in flat(err) and flat(message) in flat(err), err
    assert "Traceback" not in err


def test_run_forwards_the_canonical_update_codec_to_its_coordinator(monkeypatch, capsys, tmp_path):
    code, _, plans = run_plan(monkeypatch, capsys, tmp_path, "--update-codec", "topk:1e-2+int8")

    assert code is None
    assert _forwarded_codec(plans[0]) == "topk:0.01+int8"


@pytest.mark.parametrize(
    ("codec", "message"),
    [("topk:2", "topk fraction must be in (0, 1]"), ("bogus", "unknown codec 'bogus'")],
)
def test_run_refuses_a_bad_update_codec_before_starting_anything(
    monkeypatch, capsys, tmp_path, codec, message
):
    code, err, plans = run_plan(monkeypatch, capsys, tmp_path, "--update-codec", codec)

    assert code == 2
    assert plans == []
    assert "--update-codec" in flat(err) and flat(message) in flat(err), err
    assert "Traceback" not in err
