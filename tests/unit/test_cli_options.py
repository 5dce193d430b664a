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
