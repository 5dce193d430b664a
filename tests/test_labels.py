"""Label tokens in context, the label trie and the read plan (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelprob.server.labels import (
    MAX_CANDIDATES_PER_READ,
    Mode,
    Read,
    block_padding,
    continuation_ids,
    label_token_logprobs,
    merge_reads,
    plan_reads,
    resolve_mode,
)
from tests.tiny_model import build_tokenizer


@pytest.fixture(scope="module")
def encode(tmp_path_factory: pytest.TempPathFactory):
    tokenizer = build_tokenizer(Path(tmp_path_factory.mktemp("tok")))
    return lambda s: tokenizer.encode(s, add_special_tokens=False)


def test_label_is_tokenized_as_continuation_not_alone(encode) -> None:
    in_context = continuation_ids(encode, "Label:", " positive")
    alone = tuple(encode("positive"))
    assert in_context == tuple(encode("Label: positive"))[len(encode("Label:")) :]
    # With a leading space the byte-level BPE picks different tokens than for the bare word.
    assert in_context != alone


def test_continuation_keeps_prompt_tokens_when_boundary_merges() -> None:
    # A toy tokenizer that merges "ab" into one token: the anchor "a" would change.
    vocab = {"a": 1, "b": 2, "ab": 3, "c": 4}

    def encode(s: str) -> list[int]:
        out, i = [], 0
        while i < len(s):
            if s[i : i + 2] == "ab":
                out.append(3)
                i += 2
            else:
                out.append(vocab[s[i]])
                i += 1
        return out

    assert continuation_ids(encode, "a", "bc") == (2, 4)  # tokenized alone: anchor stays [1]
    assert continuation_ids(encode, "c", "ab") == (3,)


def test_first_token_plan_is_one_read_of_unique_first_tokens() -> None:
    labels = [(5, 6), (5, 7), (8,)]
    assert plan_reads(labels, Mode.FIRST_TOKEN) == [Read((), (5, 8))]


def test_full_plan_reads_every_internal_node_of_the_trie() -> None:
    labels = [(5, 6, 9), (5, 7), (8,), (5, 6, 10)]
    reads = plan_reads(labels, Mode.FULL)
    assert reads == [Read((), (5, 8)), Read((5,), (6, 7)), Read((5, 6), (9, 10))]


def test_label_that_prefixes_another_is_scored_at_its_own_depth() -> None:
    labels = [(5,), (5, 6)]
    reads = plan_reads(labels, Mode.FULL)
    assert reads == [Read((), (5,)), Read((5,), (6,))]
    results = merge_reads([(reads[0], {5: -1.0}), (reads[1], {6: -0.5})])
    assert label_token_logprobs(labels, Mode.FULL, results) == [[-1.0], [-1.0, -0.5]]


def test_more_candidates_than_the_engine_limit_are_split() -> None:
    labels = [(i,) for i in range(300)]
    reads = plan_reads(labels, Mode.FIRST_TOKEN)
    assert [len(r.candidates) for r in reads] == [128, 128, 44]
    assert all(len(r.candidates) <= MAX_CANDIDATES_PER_READ for r in reads)
    merged = merge_reads([(r, {t: -float(t) for t in r.candidates}) for r in reads])
    assert label_token_logprobs(labels, Mode.FIRST_TOKEN, merged)[299] == [-299.0]


def test_auto_mode_resolution() -> None:
    assert resolve_mode(Mode.AUTO, [(1, 2), (3,)]) is Mode.FIRST_TOKEN
    assert resolve_mode(Mode.AUTO, [(1, 2), (1, 3)]) is Mode.FULL
    assert resolve_mode(Mode.FULL, [(1,), (2,)]) is Mode.FULL
    with pytest.raises(ValueError, match="AUTO"):
        plan_reads([(1,)], Mode.AUTO)


def test_block_padding_ends_prompts_on_a_block_boundary() -> None:
    assert block_padding(100, 32) == 28
    assert block_padding(128, 32) == 0
    assert block_padding(129, 32) == 31
    assert block_padding(77, 0) == 0  # alignment off
