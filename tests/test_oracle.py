"""The correctness oracle: the service's log-probs equal a direct transformers forward pass.

The oracle (tests/oracle.py) builds the prompt and label token ids from the tokenizer
alone; the expected value is ``log_softmax`` at the answer position, chained over each
label's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.server.prompts import PLAIN_TEMPLATE, LabelSpec, render_prompt_parts
from labelprob.v1 import classifier_pb2 as pb
from tests import oracle
from tests.conftest import ServerProcess, tiny_server_args

pytestmark = pytest.mark.engine

TOLERANCE = 1e-3
BLOCK_SIZE = 32
# Multi-token labels that share first tokens, and one that is a prefix of another.
LABELS = [
    "alarm_set",
    "alarm_query",
    "alarm_remove",
    "calendar_set",
    "calendar_query",
    "play_music",
]
TEXTS = [
    "Set an alarm for seven in the morning.",
    "Remove the meeting from my calendar on Friday.",
    "Play some jazz music in the kitchen.",
]


@pytest.fixture
def reference(tiny_reference: tuple[object, object]) -> tuple[object, object]:
    return tiny_reference


def expected_label_logprobs(
    tokenizer, model, text: str, aligned: bool = False
) -> dict[str, list[tuple[int, float]]]:
    """Per-token (id, logprob) of each label after the plain-template prompt, by transformers.

    FULL-mode prompts are padded to the server's KV-block size (32 on CPU).
    """
    parts = render_prompt_parts(PLAIN_TEMPLATE, "", [LabelSpec(words(n)) for n in LABELS], [], None)
    prompt = oracle.prompt_ids(
        tokenizer,
        parts.prefix,
        text,
        parts.suffix,
        bos=parts.add_special_tokens,
        block=BLOCK_SIZE if aligned else 0,
    )
    out = {}
    for name in LABELS:
        ids = oracle.tokens_after(tokenizer, parts.prefix + text + parts.suffix, " " + words(name))
        out[name] = list(zip(ids, oracle.label_logprobs(model, prompt, ids), strict=True))
    return out


def words(name: str) -> str:
    """How the built-in templates show a snake_case label (written out here, not imported)."""
    return name.replace("_", " ")


def classify(
    client: Client,
    text: str,
    mode: int,
    labels: list[str] = LABELS,
    method: int = pb.SCORING_METHOD_DIRECT,
) -> pb.Classification:
    params = ClassifyParams(
        labels=labels,
        options=pb.ScoringOptions(
            mode=mode, template="plain", calibration=pb.CALIBRATION_NONE, method=method
        ),
    )
    return client.classify(text, params)


@pytest.mark.parametrize("text", TEXTS)
def test_full_mode_matches_transformers(tiny_client: Client, reference, text: str) -> None:
    tokenizer, model = reference
    expected = expected_label_logprobs(tokenizer, model, text, aligned=True)
    result = classify(tiny_client, text, pb.SCORING_MODE_FULL)
    assert result.mode == pb.SCORING_MODE_FULL
    assert any(len(ids) > 1 for ids in expected.values()), "labels must be multi-token"
    for label in result.labels:
        want = expected[label.name]
        assert [t.token_id for t in label.tokens] == [t for t, _ in want]
        for got, (_, lp) in zip(label.tokens, want, strict=True):
            assert got.logprob == pytest.approx(lp, abs=TOLERANCE)
        assert label.logprob == pytest.approx(sum(lp for _, lp in want), abs=TOLERANCE)
    assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("text", TEXTS)
def test_first_token_mode_matches_transformers(tiny_client: Client, reference, text: str) -> None:
    tokenizer, model = reference
    expected = expected_label_logprobs(tokenizer, model, text)
    result = classify(tiny_client, text, pb.SCORING_MODE_FIRST_TOKEN)
    assert result.mode == pb.SCORING_MODE_FIRST_TOKEN
    for label in result.labels:
        first_id, first_lp = expected[label.name][0]
        assert [t.token_id for t in label.tokens] == [first_id]
        assert label.logprob == pytest.approx(first_lp, abs=TOLERANCE)


def test_shared_first_tokens_make_auto_read_full(tiny_client: Client, reference) -> None:
    tokenizer, model = reference
    expected = expected_label_logprobs(tokenizer, model, TEXTS[0])
    first_tokens = [ids[0][0] for ids in expected.values()]
    assert len(set(first_tokens)) < len(first_tokens), "labels must share a first token"
    result = classify(tiny_client, TEXTS[0], pb.SCORING_MODE_AUTO)
    assert result.mode == pb.SCORING_MODE_FULL
    # FULL reads every internal node of the label trie: more than one read.
    assert result.usage.engine_reads > 1


@pytest.mark.parametrize("text", TEXTS)
def test_pruned_mode_keeps_the_full_top_label_exact(
    tiny_client: Client, reference, text: str
) -> None:
    tokenizer, model = reference
    expected = expected_label_logprobs(tokenizer, model, text, aligned=True)
    exact = {name: sum(lp for _, lp in want) for name, want in expected.items()}
    result = classify(tiny_client, text, pb.SCORING_MODE_PRUNED)
    full = classify(tiny_client, text, pb.SCORING_MODE_FULL)
    assert result.mode == pb.SCORING_MODE_PRUNED
    assert result.top_label == max(exact, key=exact.__getitem__) == full.top_label
    sharing: dict[int, int] = {}
    for want in expected.values():
        sharing[want[0][0]] = sharing.get(want[0][0], 0) + 1
    for label in result.labels:
        want = expected[label.name]
        if label.estimated:
            # Unread branch: the first token's probability shared by the labels it starts.
            assert label.name != result.top_label
            assert [t.token_id for t in label.tokens] == [want[0][0]]
            share = want[0][1] - math.log(sharing[want[0][0]])
            assert label.logprob == pytest.approx(share, abs=TOLERANCE)
        else:
            assert [t.token_id for t in label.tokens] == [t for t, _ in want]
            assert label.logprob == pytest.approx(exact[label.name], abs=TOLERANCE)
    assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-9)
    assert result.usage.engine_reads <= full.usage.engine_reads


def test_a_label_that_begins_another_is_read_as_a_complete_answer(
    tiny_client: Client, reference
) -> None:
    """With labels alarm, alarm_set and weather, P(alarm) is P(" alarm") times the
    probability that the answer ends there (the plain template's answers end with a
    newline), read in the same read as " set"."""
    tokenizer, model = reference
    labels = ["alarm", "alarm_set", "weather"]
    text = TEXTS[0]
    parts = render_prompt_parts(PLAIN_TEMPLATE, "", [LabelSpec(words(n)) for n in labels], [], None)
    prompt = oracle.prompt_ids(
        tokenizer, parts.prefix, text, parts.suffix, bos=parts.add_special_tokens, block=BLOCK_SIZE
    )
    answer = parts.prefix + text + parts.suffix
    alarm = oracle.tokens_after(tokenizer, answer, " alarm")
    alarm_set = oracle.tokens_after(tokenizer, answer, " alarm set")
    assert alarm_set[: len(alarm)] == alarm and len(alarm_set) > len(alarm)
    end = oracle.tokens_after(tokenizer, answer + " alarm", "\n")[:1]
    want = {
        "alarm": alarm + end,
        "alarm_set": alarm_set,
        "weather": oracle.tokens_after(tokenizer, answer, " weather"),
    }
    result = classify(tiny_client, text, pb.SCORING_MODE_FULL, labels)
    for label in result.labels:
        ids = want[label.name]
        expected = oracle.label_logprobs(model, prompt, ids)
        assert [t.token_id for t in label.tokens] == ids
        assert label.logprob == pytest.approx(sum(expected), abs=TOLERANCE)
    # The end token rides on the read of " alarm"'s children: no read of its own, the root
    # and one read per trie node of " alarm set" (two label paths would take as many).
    trie_nodes = {tuple(ids[:i]) for ids in want.values() for i in range(1, len(ids))}
    assert result.usage.engine_reads == 1 + len(trie_nodes) == len(alarm_set)


@pytest.fixture(scope="module")
def paths_client(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    """A tiny-model server that reads FULL by label paths (--full-reads paths)."""
    server = ServerProcess(
        "paths",
        tiny_server_args(tiny_model_dir, "--full-reads", "paths"),
        tmp_path_factory.mktemp("paths-logs") / "paths.log",
    )
    server.start()
    try:
        server.wait_serving()
        with Client(server.target, timeout=120) as client:
            yield client
    finally:
        server.stop()


def test_long_labels_read_by_paths_give_the_chain_rule_numbers(
    paths_client: Client, reference
) -> None:
    """Long labels that share little, read by paths: one request per label (its prompt
    log-probs), fewer than the trie's nodes, and the chain rule's numbers, the end of the
    answer included for the label that begins another."""
    tokenizer, model = reference
    labels = [
        "set an alarm",
        "set an alarm for seven in the morning",
        "play some jazz music in the kitchen",
        "remove the meeting from my calendar",
    ]
    text = "Wake me up early tomorrow."
    parts = render_prompt_parts(PLAIN_TEMPLATE, "", [LabelSpec(n) for n in labels], [], None)
    prompt = oracle.prompt_ids(
        tokenizer, parts.prefix, text, parts.suffix, bos=parts.add_special_tokens, block=BLOCK_SIZE
    )
    answer = parts.prefix + text + parts.suffix
    want = {name: oracle.tokens_after(tokenizer, answer, " " + name) for name in labels}
    want["set an alarm"] += oracle.tokens_after(tokenizer, answer + " set an alarm", "\n")[:1]
    trie_nodes = {tuple(ids[:i]) for ids in want.values() for i in range(1, len(ids))}
    result = classify(paths_client, text, pb.SCORING_MODE_FULL, labels)
    # The root read, then one request per label (none is covered by a longer one).
    assert result.usage.engine_reads == 1 + len(labels) < 1 + len(trie_nodes)
    for label in result.labels:
        ids = want[label.name]
        expected = oracle.label_logprobs(model, prompt, ids)
        assert [t.token_id for t in label.tokens] == ids
        for got, lp in zip(label.tokens, expected, strict=True):
            assert got.logprob == pytest.approx(lp, abs=TOLERANCE)
    assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-9)


def channel_head(tokenizer, name: str) -> list[int]:
    """The plain template's request for a text of ``name``, as the channel reads it."""
    return oracle.encode(tokenizer, f"Write a text that is {words(name)}.\n", bos=True)


def channel(client: Client, text: str, labels: list[str]) -> pb.Classification:
    return classify(client, text, pb.SCORING_MODE_UNSPECIFIED, labels, pb.SCORING_METHOD_CHANNEL)


def test_the_channel_reads_log_p_text_given_label(tiny_client: Client, reference) -> None:
    """Each label's channel log-probability is the text's tokens summed after its head."""
    tokenizer, model = reference
    text_ids = oracle.encode(tokenizer, TEXTS[1])
    result = channel(tiny_client, TEXTS[1], LABELS)
    for label in result.labels:
        head = channel_head(tokenizer, label.name)
        want = sum(oracle.label_logprobs(model, head, text_ids))
        assert label.channel_logprob == pytest.approx(want, abs=TOLERANCE)


def test_a_new_text_reads_the_channel_heads_from_the_prefix_cache(
    tiny_client: Client, reference
) -> None:
    """The heads are shared by every text of a task: once cached, a new text computes each
    head's last partial block (the cache keeps whole 32-token blocks) and its own tokens."""
    tokenizer, _ = reference
    labels = ["weather query", "music play", "alarm set"]
    channel(tiny_client, TEXTS[0], labels)  # caches the heads
    text = "Is it going to rain in Lisbon this weekend?"
    result = channel(tiny_client, text, labels)
    text_tokens = len(oracle.encode(tokenizer, text))
    partial_blocks = [len(channel_head(tokenizer, name)) % BLOCK_SIZE for name in labels]
    computed = result.usage.prompt_tokens - result.usage.cached_prompt_tokens
    assert computed == sum(partial_blocks) + len(labels) * text_tokens
