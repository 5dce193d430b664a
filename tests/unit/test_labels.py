"""Label tokens in context, the label trie and the read plan (no engine)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from labelprob.server.labels import (
    MAX_CANDIDATES_PER_READ,
    Mode,
    Read,
    block_padding,
    continuation_ids,
    estimated_logprobs,
    known_chain,
    label_token_logprobs,
    merge_reads,
    node_reads,
    nodes_to_read,
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
    with pytest.raises(ValueError, match="auto"):
        plan_reads([(1,)], Mode.AUTO)
    with pytest.raises(ValueError, match="pruned"):  # chosen per text, from the root read
        plan_reads([(1,)], Mode.PRUNED)


def test_block_padding_ends_prompts_on_a_block_boundary() -> None:
    assert block_padding(100, 32) == 28
    assert block_padding(128, 32) == 0
    assert block_padding(129, 32) == 31
    assert block_padding(77, 0) == 0  # alignment off


# A trie of three branches: token 1 -> {1,2 | 1,3}, token 4 -> {4,5,6}, token 7 (one token).
PRUNE_LABELS = [(1, 2), (1, 3), (4, 5, 6), (7,)]


def by_logprob(i: int, logprob: float) -> float:
    return logprob


def test_node_reads_group_full_reads_by_trie_node() -> None:
    nodes = node_reads(plan_reads(PRUNE_LABELS, Mode.FULL))
    assert set(nodes) == {(1,), (4,), (4, 5)}  # label (7,) is read whole by the root
    assert [r.candidates for r in nodes[(1,)]] == [(2, 3)]
    assert [r.candidates for r in nodes[(4, 5)]] == [(6,)]


def test_branch_and_bound_reads_only_nodes_that_could_win() -> None:
    root = {1: math.log(0.5), 4: math.log(0.1), 7: math.log(0.4)}
    reads = {(): root}
    unread = node_reads(plan_reads(PRUNE_LABELS, Mode.FULL))
    # Nothing read yet but the root: label (7,) is exact at 0.4; node (1,) could beat it.
    assert nodes_to_read(PRUNE_LABELS, reads, unread, by_logprob) == [(1,)]
    # Node (1,) read: its best label has 0.3 < 0.4, and node (4,) is bounded by 0.1.
    reads[(1,)] = {2: math.log(0.6), 3: math.log(0.4)}
    del unread[(1,)]
    assert nodes_to_read(PRUNE_LABELS, reads, unread, by_logprob) == []
    tokens, estimates = estimated_logprobs(PRUNE_LABELS, reads)
    assert tokens[0] == pytest.approx([math.log(0.5), math.log(0.6)])
    assert tokens[2] == pytest.approx([math.log(0.1)])  # the first token only
    assert estimates == {2: pytest.approx(math.log(0.1))}  # alone under its node: all of it


def test_a_deeper_node_is_bounded_by_the_tokens_read_above_it() -> None:
    """Reading (4,) tightens the bound of label (4, 5, 6) from 0.9 to 0.9 * 0.3; below the
    exact 0.4 of label (7,), node (4, 5) is left unread though its branch was entered."""
    reads = {(): {1: math.log(0.05), 4: math.log(0.9), 7: math.log(0.4)}}
    unread = node_reads(plan_reads(PRUNE_LABELS, Mode.FULL))
    assert nodes_to_read(PRUNE_LABELS, reads, unread, by_logprob) == [(4,)]  # (1,): 0.05
    reads[(4,)] = {5: math.log(0.3)}
    del unread[(4,)]
    assert nodes_to_read(PRUNE_LABELS, reads, unread, by_logprob) == []
    tokens, estimates = estimated_logprobs(PRUNE_LABELS, reads)
    assert tokens[2] == pytest.approx([math.log(0.9), math.log(0.3)])
    assert estimates[2] == pytest.approx(math.log(0.9 * 0.3))
    # Node (1,)'s two labels share its 0.05.
    assert estimates[0] == estimates[1] == pytest.approx(math.log(0.025))


def test_node_bounds_follow_the_ranking_function() -> None:
    root = {1: math.log(0.2), 4: math.log(0.3), 7: math.log(0.5)}
    reads = {(): root}
    unread = node_reads(plan_reads(PRUNE_LABELS, Mode.FULL))
    assert nodes_to_read(PRUNE_LABELS, reads, unread, by_logprob) == []
    # A calibration offset that penalizes label (7,) lets both branches outscore it.
    offsets = [0.0, 0.0, 0.0, 5.0]
    ranked = nodes_to_read(PRUNE_LABELS, reads, unread, lambda i, lp: lp - offsets[i])
    assert ranked == [(4,), (1,)]  # best bound first


def test_unread_labels_share_the_probability_of_their_node() -> None:
    reads = {(): {1: math.log(0.5), 4: math.log(0.1), 7: math.log(0.4)}}
    tokens, estimates = estimated_logprobs(PRUNE_LABELS, reads)
    assert estimates[0] == pytest.approx(math.log(0.25))
    assert estimates[1] == pytest.approx(math.log(0.25))
    assert 3 not in estimates and tokens[3] == pytest.approx([math.log(0.4)])
    assert known_chain((7,), reads) == pytest.approx([math.log(0.4)])  # read whole
    assert known_chain((1, 2), reads) == pytest.approx([math.log(0.5)])  # node (1,) unread


def test_continuation_depends_on_its_anchor() -> None:
    """A tokenizer that marks the start of a string ("▁" as SentencePiece's dummy prefix)
    tokenizes a word differently alone than after other text: the label's tokens must be
    the ones after the anchor."""
    vocab: dict[str, int] = {}

    def encode(s: str) -> list[int]:
        pieces = re.findall(r" ?[^ ]+", s)
        if pieces:
            pieces[0] = "\u2581" + pieces[0].strip()
        return [vocab.setdefault(p, len(vocab)) for p in pieces]

    in_context = continuation_ids(encode, "Label:", " yes")
    assert in_context == (vocab[" yes"],)
    assert in_context != tuple(encode(" yes"))  # alone: "▁yes"
    assert continuation_ids(encode, "Answer:", " yes") == in_context


def test_a_node_whose_bound_ties_the_best_label_is_read() -> None:
    """Left unread, label (4, 5, 6) would be estimated at its bound, tie the exact (7,) and
    could be ranked first; read, it is 0.4 * 0.5 * 0.5, below. (bf16 log-probs are coarse:
    a first token and a whole label often have the same one.)"""
    reads = {(): {1: math.log(0.01), 4: math.log(0.4), 7: math.log(0.4)}}
    unread = node_reads(plan_reads(PRUNE_LABELS, Mode.FULL))
    assert nodes_to_read(PRUNE_LABELS, reads, unread, by_logprob) == [(4,)]
