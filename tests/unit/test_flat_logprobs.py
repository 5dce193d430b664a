"""The engine reads vLLM's FlatLogprobs from its lists: the same (token, logprob) pairs as
vLLM's own per-position dict view, position by position, empty positions included."""

from __future__ import annotations

import pytest
from vllm.logprobs import FlatLogprobs, Logprob

from labelprob.server.engine import flat_position

pytestmark = pytest.mark.unit


def test_flat_position_matches_vllms_dict_view() -> None:
    positions = [
        None,  # the first prompt token has no logprob
        {7: Logprob(-0.5, rank=1), 3: Logprob(-2.25, rank=4)},
        {11: Logprob(float("-inf"), rank=None)},
        {5: Logprob(-1.0), 9: Logprob(-0.125), 2: Logprob(-3.0)},
    ]
    flat = FlatLogprobs()
    flat.extend(positions)
    for i, position in enumerate(positions):
        expected = [(tid, lp.logprob) for tid, lp in (position or {}).items()]
        assert flat_position(flat, i) == expected
        assert dict(flat_position(flat, i)) == {t: lp.logprob for t, lp in flat[i].items()}
