"""Calibration, decisions, multi-label, completion scoring and streaming on the real server."""

from __future__ import annotations

import math

import grpc
import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.server.prompts import PLAIN_TEMPLATE, LabelSpec, render_prompt_parts
from labelprob.v1 import classifier_pb2 as pb
from tests import oracle

pytestmark = pytest.mark.engine

LABELS = ["positive", "negative", "neutral"]
TEXTS = ["The team won the final.", "Stocks fell sharply.", "Play some jazz.", "Set an alarm."]


def divided_by_mean(dist: list[float], dists: list[list[float]]) -> list[float]:
    """A distribution divided by the mean of others, renormalized: what contextual and
    batch calibration do."""
    prior = [sum(d[i] for d in dists) / len(dists) for i in range(len(dist))]
    ratios = [p / q for p, q in zip(dist, prior, strict=True)]
    return [r / sum(ratios) for r in ratios]


def options(**fields: object) -> pb.ScoringOptions:
    return pb.ScoringOptions(template="plain", **fields)


def raw_logprobs(client: Client, text: str) -> list[float]:
    params = ClassifyParams(LABELS, options=options(calibration=pb.CALIBRATION_NONE))
    return [lb.logprob for lb in client.classify(text, params).labels]


def test_contextual_calibration_divides_out_the_content_free_distribution(
    tiny_client: Client,
) -> None:
    text = "A dull, boring film."
    content_free = ["N/A", "[MASK]"]
    calibrated = tiny_client.classify(
        text,
        ClassifyParams(
            LABELS,
            options=options(
                calibration=pb.CALIBRATION_CONTEXTUAL, content_free_inputs=content_free
            ),
        ),
    )
    assert calibrated.calibration == pb.CALIBRATION_CONTEXTUAL
    # Expected from the raw label log-probs of the text and of the content-free inputs.
    rows = [oracle.softmax(raw_logprobs(tiny_client, t)) for t in content_free]
    text_dist = oracle.softmax(raw_logprobs(tiny_client, text))
    expected = divided_by_mean(text_dist, rows)
    assert [lb.probability for lb in calibrated.labels] == pytest.approx(expected, abs=1e-3)
    assert [lb.uncalibrated_probability for lb in calibrated.labels] == pytest.approx(
        text_dist, abs=1e-3
    )
    # The server default (contextual) applies when the request leaves calibration unset.
    default = tiny_client.classify(text, ClassifyParams(LABELS, options=options()))
    assert default.calibration == pb.CALIBRATION_CONTEXTUAL


def test_batch_calibration_uses_the_batch_statistics(tiny_client: Client) -> None:
    params = ClassifyParams(LABELS, options=options(calibration=pb.CALIBRATION_BATCH))
    batch = tiny_client.classify_batch(TEXTS, params)
    dists = [oracle.softmax([lb.logprob for lb in r.labels]) for r in batch.results]
    expected = [divided_by_mean(d, dists) for d in dists]
    for result, want in zip(batch.results, expected, strict=True):
        assert result.calibration == pb.CALIBRATION_BATCH
        assert [lb.probability for lb in result.labels] == pytest.approx(want, abs=1e-9)


def test_domain_pmi_subtracts_the_premise_log_probs(tiny_client: Client, tiny_reference) -> None:
    tokenizer, model = tiny_reference
    premise = "Finance news."
    opts = options(calibration=pb.CALIBRATION_DOMAIN_PMI, domain_premise=premise)
    result = tiny_client.classify("Stocks fell.", ClassifyParams(LABELS, options=opts))
    assert result.calibration == pb.CALIBRATION_DOMAIN_PMI
    # The premise prompt: the task with the premise as its instruction, and no text.
    parts = render_prompt_parts(PLAIN_TEMPLATE, premise, [LabelSpec(n) for n in LABELS], [], None)
    prompt = oracle.prompt_ids(
        tokenizer, parts.prefix, "", parts.suffix, bos=parts.add_special_tokens
    )
    for lb in result.labels:
        ids = oracle.tokens_after(tokenizer, parts.prefix + parts.suffix, " " + lb.name)
        premise_logprob = sum(oracle.label_logprobs(model, prompt, ids[: len(lb.tokens)]))
        assert lb.score == pytest.approx(lb.logprob - premise_logprob, abs=2e-3)
    expected = oracle.softmax([lb.score for lb in result.labels])
    assert [lb.probability for lb in result.labels] == pytest.approx(expected, abs=1e-9)


def test_combined_pools_the_direct_read_and_the_channel(
    tiny_client: Client, tiny_model_dir
) -> None:
    """COMBINED in one label order normalizes (direct + 2 / ln(n + 1) x channel) / 1.4 for a
    text of n tokens (README, "The pool"); two labels are read in both orders by default.
    Checked against the server's own direct and channel reads."""
    from transformers import AutoTokenizer

    labels, text = ["sports", "business"], "The team won the match in extra time."
    n = len(AutoTokenizer.from_pretrained(tiny_model_dir).encode(text, add_special_tokens=False))

    def read(method: int, names: list[str] = labels, orders: int = 1) -> list[pb.LabelScore]:
        ask = pb.ScoringOptions(method=method, calibration=pb.CALIBRATION_NONE, label_orders=orders)
        return list(tiny_client.classify(text, ClassifyParams(names, options=ask)).labels)

    direct, channel = read(pb.SCORING_METHOD_DIRECT), read(pb.SCORING_METHOD_CHANNEL)
    combined = read(pb.SCORING_METHOD_COMBINED)
    weight = 2 / math.log(n + 1)
    pairs = zip(direct, channel, strict=True)
    want = [(d.score + weight * c.channel_logprob) / 1.4 for d, c in pairs]
    assert [lb.score for lb in combined] == pytest.approx(want, abs=1e-3)
    assert [lb.probability for lb in combined] == pytest.approx(oracle.softmax(want), abs=1e-4)

    # Left to the server, two labels are read in both orders: the mean of the two label
    # log-distributions, pooled at 0.625 / ln(n + 1) and T 0.85 (README, "Two labels").
    backward = read(pb.SCORING_METHOD_DIRECT, labels[::-1])[::-1]
    both = read(pb.SCORING_METHOD_COMBINED, orders=0)

    def log_dist(scores: list[float]) -> list[float]:
        return [math.log(p) for p in oracle.softmax(scores)]

    forward_dist = log_dist([d.logprob for d in direct])
    backward_dist = log_dist([d.logprob for d in backward])
    weight = 0.625 / math.log(n + 1)
    want = [
        ((f + b) / 2 + weight * c.channel_logprob) / 0.85
        for f, b, c in zip(forward_dist, backward_dist, channel, strict=True)
    ]
    assert [lb.probability for lb in both] == pytest.approx(oracle.softmax(want), abs=1e-4)
    assert [lb.logprob for lb in both] == pytest.approx([d.logprob for d in direct], abs=1e-4)


HAM_SPAM = ["ham", "spam"]
HAM_SPAM_TEXTS = ["Are we still on for lunch tomorrow?", "WIN a FREE prize now, text 80080!"]


def answers_without_and_with(
    client: Client, options: pb.ScoringOptions
) -> list[tuple[pb.Classification, pb.Classification]]:
    """Each ham/spam text's answer under the defaults and under ``options``, as single
    Classify calls and as one ClassifyBatch each."""
    plain, changed = ClassifyParams(HAM_SPAM), ClassifyParams(HAM_SPAM, options=options)
    singles = [(client.classify(t, plain), client.classify(t, changed)) for t in HAM_SPAM_TEXTS]
    batches = zip(
        client.classify_batch(HAM_SPAM_TEXTS, plain).results,
        client.classify_batch(HAM_SPAM_TEXTS, changed).results,
        strict=True,
    )
    return [*singles, *batches]


def assert_reads_unchanged(before: pb.Classification, after: pb.Classification) -> None:
    assert [lb.logprob for lb in after.labels] == pytest.approx(
        [lb.logprob for lb in before.labels], abs=1e-4
    )


def test_a_label_prior_reweights_the_server_defaults_by_bayes_rule(tiny_client: Client) -> None:
    """The defaults with ``label_prior`` (0.87 / 0.13, as for ham and spam): each label's
    probability is the one the same request gets without a prior times its share,
    renormalized; the label's own reads are unchanged. A batch takes it per text."""
    shares = [0.87, 0.13]
    options = pb.ScoringOptions(label_prior=shares)
    for before, after in answers_without_and_with(tiny_client, options):
        weighted = [lb.probability * s for lb, s in zip(before.labels, shares, strict=True)]
        want = [w / sum(weighted) for w in weighted]
        assert [lb.probability for lb in after.labels] == pytest.approx(want, abs=1e-4)
        assert_reads_unchanged(before, after)
        assert after.top_label == HAM_SPAM[max(range(2), key=want.__getitem__)]


def test_a_temperature_tempers_the_server_defaults(tiny_client: Client) -> None:
    """The defaults at ``temperature`` 2.5: each label's probability is the one the same
    request gets without it raised to 1 / 2.5 and renormalized; the reads are unchanged.
    A batch takes it per text."""
    temperature = 2.5
    options = pb.ScoringOptions(temperature=temperature)
    for before, after in answers_without_and_with(tiny_client, options):
        powered = [lb.probability ** (1 / temperature) for lb in before.labels]
        want = [w / sum(powered) for w in powered]
        assert [lb.probability for lb in after.labels] == pytest.approx(want, abs=1e-4)
        assert_reads_unchanged(before, after)
        assert after.top_label == before.top_label


def test_a_label_prior_of_the_wrong_length_names_its_field(tiny_client: Client) -> None:
    params = ClassifyParams(LABELS, options=pb.ScoringOptions(label_prior=[0.5, 0.5]))
    with pytest.raises(grpc.RpcError) as err:
        tiny_client.classify("Anything.", params)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "options.label_prior" in err.value.details()
    assert tiny_client.classify("Anything.", ClassifyParams(LABELS)).top_label in LABELS


def test_a_channel_shortlist_reads_the_channel_of_the_best_direct_labels(
    tiny_client: Client, tiny_model_dir
) -> None:
    """COMBINED with ``channel_shortlist: 2`` reads the channel for the two labels of best
    calibrated direct score; the others get the lower of those two channel log-probs.
    Expected from the server's own direct and channel reads, pooled here."""
    from transformers import AutoTokenizer

    labels = ["sports", "business", "politics", "weather", "music"]
    text = "The team won the match in extra time."
    n = len(AutoTokenizer.from_pretrained(tiny_model_dir).encode(text, add_special_tokens=False))

    def read(method: int, **extra: object) -> pb.Classification:
        ask = pb.ScoringOptions(
            method=method,
            calibration=pb.CALIBRATION_CONTEXTUAL,
            content_free_inputs=["N/A"],
            **extra,
        )
        return tiny_client.classify(text, ClassifyParams(labels, options=ask))

    direct = [lb.score for lb in read(pb.SCORING_METHOD_DIRECT).labels]
    channel = [lb.channel_logprob for lb in read(pb.SCORING_METHOD_CHANNEL).labels]
    result = read(pb.SCORING_METHOD_COMBINED, channel_shortlist=2)
    best = sorted(range(len(labels)), key=lambda i: direct[i], reverse=True)[:2]
    floor = min(channel[i] for i in best)
    want_channel = [channel[i] if i in best else floor for i in range(len(labels))]
    assert [lb.channel_logprob for lb in result.labels] == pytest.approx(want_channel, abs=1e-3)
    assert [lb.channel_estimated for lb in result.labels] == [i not in best for i in range(5)]
    weight = 2 / math.log(n + 1)
    want = [(d + weight * c) / 1.4 for d, c in zip(direct, want_channel, strict=True)]
    assert [lb.probability for lb in result.labels] == pytest.approx(oracle.softmax(want), abs=1e-4)
    full = read(pb.SCORING_METHOD_COMBINED)
    assert result.usage.engine_reads == full.usage.engine_reads - (len(labels) - 2)


def test_online_calibration_learns_the_task_prior_from_the_texts_it_scores(
    tiny_client: Client,
) -> None:
    """Each text is calibrated against the prior of the texts of its task and scope scored
    before it: (1 - w) x contextual + w x (log P(label | text) - their mean log P), with
    w = n / (n + 1) after n texts. Expected from the server's raw reads, computed here."""
    content_free = ["N/A"]
    cf = oracle.softmax(raw_logprobs(tiny_client, content_free[0]))

    def online(text: str, scope: str) -> pb.Classification:
        ask = options(
            calibration=pb.CALIBRATION_ONLINE,
            method=pb.SCORING_METHOD_DIRECT,
            content_free_inputs=content_free,
            prior_scope=scope,
        )
        return tiny_client.classify(text, ClassifyParams(LABELS, options=ask))

    seen: list[list[float]] = []
    for text in TEXTS:
        result = online(text, "online-test")
        assert result.calibration == pb.CALIBRATION_ONLINE
        own = [math.log(p) for p in oracle.softmax(raw_logprobs(tiny_client, text))]
        contextual = [o - math.log(q) for o, q in zip(own, cf, strict=True)]
        want = contextual
        if seen:
            w = len(seen) / (len(seen) + 1)
            prior = [sum(row[i] for row in seen) / len(seen) for i in range(len(LABELS))]
            pairs = zip(contextual, own, prior, strict=True)
            want = [(1 - w) * c + w * (o - p) for c, o, p in pairs]
        assert [lb.probability for lb in result.labels] == pytest.approx(
            oracle.softmax(want), abs=1e-3
        )
        seen.append(own)
    # Another scope learns on its own: its first text gets contextual calibration alone.
    fresh = online(TEXTS[-1], "another-scope")
    assert [lb.probability for lb in fresh.labels] == pytest.approx(
        oracle.softmax(contextual), abs=1e-3
    )


def test_auto_calibration_with_the_channel_is_online_from_three_labels(
    tiny_client: Client,
) -> None:
    def calibration(labels: list[str]) -> int:
        ask = pb.ScoringOptions(method=pb.SCORING_METHOD_COMBINED, prior_scope="auto-test")
        return tiny_client.classify(TEXTS[0], ClassifyParams(labels, options=ask)).calibration

    assert calibration(LABELS) == pb.CALIBRATION_ONLINE
    assert calibration(LABELS[:2]) == pb.CALIBRATION_CONTEXTUAL


def test_decision_thresholds(tiny_client: Client) -> None:
    base = {"calibration": pb.CALIBRATION_NONE}
    low = pb.DecisionThresholds(min_top_probability=0.01)
    high = pb.DecisionThresholds(min_top_probability=0.999, min_margin=0.99)
    a = tiny_client.classify("x", ClassifyParams(LABELS, options=options(thresholds=low, **base)))
    b = tiny_client.classify("x", ClassifyParams(LABELS, options=options(thresholds=high, **base)))
    c = tiny_client.classify("x", ClassifyParams(LABELS, options=options(**base)))
    assert a.decision == pb.DECISION_ACCEPT
    assert b.decision == pb.DECISION_ABSTAIN
    assert c.decision == pb.DECISION_UNSPECIFIED


def test_multi_label_gives_independent_yes_no_probabilities(tiny_client: Client) -> None:
    labels = ["sports", "business", "music", "weather"]
    opts = options(calibration=pb.CALIBRATION_NONE, multi_label=True, multi_label_threshold=0.3)
    result = tiny_client.classify("The team won the final.", ClassifyParams(labels, options=opts))
    probs = [lb.probability for lb in result.labels]
    assert all(0.0 < p < 1.0 for p in probs)
    # Independent: nothing forces them to sum to 1.
    assert sum(probs) != pytest.approx(1.0, abs=1e-6)
    for lb in result.labels:
        # P(label) = sigmoid(log P(yes) - log P(no)), uncalibrated here.
        assert lb.probability == pytest.approx(1 / (1 + math.exp(-lb.score)), abs=1e-9)
        assert lb.uncalibrated_probability == pytest.approx(lb.probability, abs=1e-9)
    assert list(result.selected_labels) == [
        lb.name for lb in result.labels if lb.probability >= 0.3
    ]
    assert result.top_label == labels[probs.index(max(probs))]
    # The same reads for every label, the text first: later reads reuse its blocks.
    assert result.usage.engine_reads % len(labels) == 0
    assert result.usage.cached_prompt_tokens > 0


def test_multi_label_allows_a_single_label(tiny_client: Client) -> None:
    opts = options(calibration=pb.CALIBRATION_CONTEXTUAL, multi_label=True)
    result = tiny_client.classify("Play some jazz.", ClassifyParams(["music"], options=opts))
    assert len(result.labels) == 1
    assert result.calibration == pb.CALIBRATION_CONTEXTUAL
    assert 0.0 < result.labels[0].probability < 1.0


def test_score_completion_matches_transformers(tiny_client: Client, tiny_reference) -> None:
    tokenizer, model = tiny_reference
    prompt, completion = "Set an alarm for seven", " in the morning."
    reply = tiny_client.stub.ScoreCompletion(
        pb.ScoreCompletionRequest(prompt=prompt, completion=completion, top_alternatives=3),
        timeout=60,
    )
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
    # The completion is tokenized as the continuation of the raw prompt.
    completion_ids = oracle.tokens_after(tokenizer, prompt, completion)
    expected = oracle.label_logprobs(model, prompt_ids, completion_ids)
    assert [t.token.token_id for t in reply.tokens] == completion_ids
    for scored, want in zip(reply.tokens, expected, strict=True):
        assert scored.token.logprob == pytest.approx(want, abs=1e-3)
        alts = [a.logprob for a in scored.alternatives]
        assert len(alts) == 3 and alts == sorted(alts, reverse=True)
        assert alts[0] >= scored.token.logprob - 1e-6
    assert reply.sum_logprob == pytest.approx(sum(expected), abs=1e-3)
    assert reply.mean_logprob == pytest.approx(sum(expected) / len(expected), abs=1e-3)
    assert reply.usage.prompt_tokens == len(prompt_ids) + len(completion_ids)


def test_classify_stream_matches_results_to_ids(tiny_client: Client) -> None:
    params = ClassifyParams(LABELS, options=options(calibration=pb.CALIBRATION_NONE))
    items = [
        pb.ClassifyStreamRequest(id=f"item-{i}", request=params.request(t))
        for i, t in enumerate(TEXTS * 5)
    ]
    bad = pb.ClassifyStreamRequest(id="bad", request=pb.ClassifyRequest(text="", labels=[]))
    replies = list(tiny_client.stub.ClassifyStream(iter([*items, bad]), timeout=120))
    by_id = {r.id: r for r in replies}
    assert set(by_id) == {i.id for i in items} | {"bad"}
    assert by_id["bad"].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "text" in by_id["bad"].error_message
    for i, text in enumerate(TEXTS * 5):
        reply = by_id[f"item-{i}"]
        assert reply.status_code == 0
        single = tiny_client.classify(text, params)
        assert [lb.logprob for lb in reply.result.labels] == pytest.approx(
            [lb.logprob for lb in single.labels], abs=1e-3
        )


def test_label_log_probabilities_are_finite_and_not_positive(tiny_client: Client) -> None:
    result = tiny_client.classify("x", ClassifyParams(LABELS, options=options()))
    assert all(math.isfinite(lb.logprob) and lb.logprob <= 0.0 for lb in result.labels)


def test_auto_calibration_uses_the_batch_when_it_is_large_enough(tiny_client: Client) -> None:
    params = ClassifyParams(LABELS, options=options())  # calibration unset: the server's AUTO
    large = tiny_client.classify_batch(TEXTS * 2, params)  # 8 texts
    small = tiny_client.classify_batch(TEXTS, params)  # 4 texts
    assert {r.calibration for r in large.results} == {pb.CALIBRATION_BATCH}
    assert {r.calibration for r in small.results} == {pb.CALIBRATION_CONTEXTUAL}


# Labels sharing first tokens, so that PRUNED has branches to leave unread.
BRANCHING_LABELS = ["alarm_set", "alarm_query", "alarm_remove", "calendar_set", "play_music"]


@pytest.mark.parametrize(
    "calibration", [pb.CALIBRATION_CONTEXTUAL, pb.CALIBRATION_DOMAIN_PMI, pb.CALIBRATION_NONE]
)
@pytest.mark.parametrize("norm", [pb.LENGTH_NORMALIZATION_SUM, pb.LENGTH_NORMALIZATION_MEAN])
def test_pruned_mode_ranks_the_top_label_as_full_does(
    tiny_client: Client, calibration: int, norm: int
) -> None:
    """Branch and bound uses the request's own ranking: calibration and length normalization.

    A random model spreads its mass thinly, so here most trie nodes tend to be read; the
    embedded model's test (test_embedded.py) shows nodes left unread."""

    def classify(text: str, mode: int) -> pb.Classification:
        opts = options(mode=mode, calibration=calibration, length_normalization=norm)
        return tiny_client.classify(text, ClassifyParams(BRANCHING_LABELS, options=opts))

    for text in TEXTS:
        full, pruned = classify(text, pb.SCORING_MODE_FULL), classify(text, pb.SCORING_MODE_PRUNED)
        assert pruned.top_label == full.top_label
        assert pruned.calibration == full.calibration
        top = {lb.name: lb for lb in pruned.labels}[pruned.top_label]
        want = {lb.name: lb for lb in full.labels}[full.top_label]
        assert not top.estimated
        assert top.logprob == pytest.approx(want.logprob, abs=1e-4)
        assert [t.token_id for t in top.tokens] == [t.token_id for t in want.tokens]
        assert sum(lb.probability for lb in pruned.labels) == pytest.approx(1.0, abs=1e-9)
        assert pruned.usage.engine_reads <= full.usage.engine_reads
