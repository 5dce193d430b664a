"""`labelprob classify`'s flags become the request's scoring options."""

from __future__ import annotations

import pytest

from labelprob.tools import classify


def test_prior_scope_and_channel_shortlist_reach_the_options() -> None:
    args = classify.build_parser().parse_args(
        ["a text", "--labels", "x", "y", "z", "--prior-scope", "s1", "--channel-shortlist", "2"]
    )
    options = classify.params_from_args(args).options
    assert (options.prior_scope, options.channel_shortlist) == ("s1", 2)


def test_a_negative_channel_shortlist_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        classify.build_parser().parse_args(["t", "--labels", "x", "y", "--channel-shortlist", "-1"])
    assert exc.value.code == 2
    assert "--channel-shortlist: must be >= 0" in capsys.readouterr().err


def test_a_label_prior_reaches_the_options_in_label_order() -> None:
    args = classify.build_parser().parse_args(
        ["a text", "--labels", "ham", "spam", "--label-prior", "0.87,0.13"]
    )
    assert list(classify.params_from_args(args).options.label_prior) == [0.87, 0.13]
    unset = classify.build_parser().parse_args(["a text", "--labels", "ham", "spam"])
    assert list(classify.params_from_args(unset).options.label_prior) == []


@pytest.mark.parametrize("shares", ["0.5,0", "0.5,-1", "a,b", "nan,1"])
def test_a_bad_label_prior_is_a_usage_error(
    shares: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        classify.build_parser().parse_args(["t", "--labels", "x", "y", "--label-prior", shares])
    assert "--label-prior" in capsys.readouterr().err


def test_a_temperature_reaches_the_options_and_is_unset_without_one() -> None:
    args = classify.build_parser().parse_args(["t", "--labels", "x", "y", "--temperature", "1.8"])
    options = classify.params_from_args(args).options
    assert options.HasField("temperature") and options.temperature == 1.8
    unset = classify.build_parser().parse_args(["t", "--labels", "x", "y"])
    assert not classify.params_from_args(unset).options.HasField("temperature")


@pytest.mark.parametrize("temperature", ["0", "-1", "nan", "inf", "warm"])
def test_a_bad_temperature_is_a_usage_error(
    temperature: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        classify.build_parser().parse_args(["t", "--labels", "x", "--temperature", temperature])
    assert "--temperature" in capsys.readouterr().err
