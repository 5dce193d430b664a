"""Scoring methods over a fake engine: the noisy channel (the text scored after a request for
each label) and COMBINED (the pool of the direct calibrated scores and the channel
log-probabilities, the channel weighted 2 / ln(n + 1) for a text of n tokens, at temperature
1.4), through the classify path and the real servicer in process.

Expected values are computed here by hand from the scripted probabilities."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import grpc
import pytest

from labelprob.server.classify import Options
from labelprob.server.config import ClassifySettings
from labelprob.server.scoring import Calibration, Method
from labelprob.v1 import classifier_pb2 as pb
from tests.bad_requests import violations
from tests.unit.fake_engine import UNLIKELY, FakeEngine, Script, answer_table
from tests.unit.harness import TEST_SETTINGS, classifier_for, run, serving
from tests.unit.paths import classify, classify_one, probabilities, task

log = math.log
REQUEST = "Write a text that is "
TEXT = "goal scored"  # the fake tokenizer's pieces: "goal", " scored"
# The pool, as README "The pool" specifies it, for TEXT's 2 tokens.
CHANNEL_WEIGHT = 2 / log(2 + 1)
TEMPERATURE = 1.4
NAMES = ("sports", "world_news", "tech")
# log P(piece | request for the label), by the label as the request words it.
CHANNEL = {
    "sports": {"goal": log(0.1), " scored": log(0.3)},
    "world news": {"goal": log(0.01), " scored": log(0.2)},
    "tech": {"goal": log(0.001), " scored": log(0.05)},
}
# Direct first-token probabilities (the labels' first pieces are unique: one read).
DIRECT = {"": {" sports": log(0.2), " world": log(0.5), " tech": log(0.1)}}
DIRECT_BY_NAME = {"sports": 0.2, "world_news": 0.5, "tech": 0.1}
WORDED = {"sports": "sports", "world_news": "world news", "tech": "tech"}
# A server started with --default-method combined (the fast layer's own default is DIRECT).
SERVER_DEFAULTS = dataclasses.replace(
    TEST_SETTINGS, classify=ClassifySettings(default_method=Method.COMBINED)
)


def channel_sum(name: str) -> float:
    row = CHANNEL[WORDED[name]]
    return row["goal"] + row[" scored"]


def softmax(scores: dict[str, float]) -> dict[str, float]:
    z = sum(math.exp(v) for v in scores.values())
    return {k: math.exp(v) / z for k, v in scores.items()}


def pooled(direct: dict[str, float]) -> dict[str, float]:
    """COMBINED's scores from direct log-scores and the channel, by hand."""
    return {n: (direct[n] + CHANNEL_WEIGHT * channel_sum(n)) / TEMPERATURE for n in NAMES}


def combined(direct: dict[str, float]) -> dict[str, float]:
    """COMBINED's distribution."""
    return softmax(pooled(direct))


DIRECT_LOGS = {n: log(p) for n, p in DIRECT_BY_NAME.items()}


def scripted(direct: Script) -> Script:
    """Channel reads (after a request for a label) by CHANNEL, the rest by ``direct``."""

    def script(context: str, token: str) -> float:
        _, found, rest = context.partition(REQUEST)
        if not found:
            return direct(context, token)
        label, _, _ = rest.partition(".\n")
        return CHANNEL[label].get(token, UNLIKELY)

    return script


def engine() -> FakeEngine:
    return FakeEngine(scripted(answer_table(DIRECT)))


def channel_calls(fake: FakeEngine) -> list[str]:
    return sorted(c.prompt for c in fake.calls if c.prompt.startswith(REQUEST))


def test_channel_probabilities_are_the_softmax_of_the_summed_text_logprobs() -> None:
    fake = engine()
    options = Options(calibration=Calibration.NONE, method=Method.CHANNEL)
    result = classify_one(fake, task(*NAMES), TEXT, options=options)
    expected = {n: channel_sum(n) for n in NAMES}
    assert probabilities(result) == pytest.approx(softmax(expected))
    assert [lb.channel_logprob for lb in result.labels] == pytest.approx(list(expected.values()))
    assert result.top_label == "sports"
    assert result.method is Method.CHANNEL
    # One prompt-scoring read per label, each the label's request (worded) and the text.
    assert channel_calls(fake) == sorted(f"{REQUEST}{WORDED[n]}.\n{TEXT}" for n in NAMES)
    assert len(fake.calls) == result.usage.reads == len(NAMES)
    assert result.usage.prompt_tokens == sum(c.prompt_len for c in fake.calls)
    # No direct read: nothing is known of the mass on the labels, nothing was calibrated.
    assert result.label_mass == 0.0
    assert result.calibration is Calibration.NONE


def test_combined_pools_the_direct_and_channel_distributions() -> None:
    fake = engine()
    options = Options(calibration=Calibration.NONE, method=Method.COMBINED)
    result = classify_one(fake, task(*NAMES), TEXT, options=options)
    assert probabilities(result) == pytest.approx(combined(DIRECT_LOGS))
    # The score normalized is the pool of the two log-scores.
    assert [lb.score for lb in result.labels] == pytest.approx(list(pooled(DIRECT_LOGS).values()))
    assert [lb.channel_logprob for lb in result.labels] == pytest.approx(
        [channel_sum(n) for n in NAMES]
    )
    assert [lb.logprob for lb in result.labels] == pytest.approx(
        [log(DIRECT_BY_NAME[n]) for n in NAMES]
    )
    # Direct alone would pick world_news; the channel's evidence turns it to sports.
    assert max(DIRECT_BY_NAME, key=DIRECT_BY_NAME.__getitem__) == "world_news"
    assert result.top_label == "sports"
    assert result.method is Method.COMBINED
    # The direct read (first tokens), then one channel read per label.
    assert result.usage.reads == len(fake.calls) == 1 + len(NAMES)
    assert len(channel_calls(fake)) == len(NAMES)
    assert result.usage.prompt_tokens == sum(c.prompt_len for c in fake.calls)
    assert result.label_mass == pytest.approx(sum(DIRECT_BY_NAME.values()))


def test_combined_calibrates_the_direct_part_only() -> None:
    """Contextual calibration divides the direct distribution by the content-free one; the
    channel log-probabilities are added as they are."""
    content_free = answer_table({"": {" sports": log(0.6), " world": log(0.3), " tech": log(0.1)}})
    text = answer_table(DIRECT)
    fake = FakeEngine(scripted(lambda c, t: (content_free if "Text: N/A\n" in c else text)(c, t)))
    options = Options(
        calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",), method=Method.COMBINED
    )
    result = classify_one(fake, task(*NAMES), TEXT, options=options)
    direct_total = sum(DIRECT_BY_NAME.values())
    prior = {"sports": 0.6, "world_news": 0.3, "tech": 0.1}  # already sums to 1
    calibrated = {n: log(DIRECT_BY_NAME[n] / direct_total) - log(prior[n]) for n in NAMES}
    assert probabilities(result) == pytest.approx(combined(calibrated))
    assert [lb.score for lb in result.labels] == pytest.approx(list(pooled(calibrated).values()))
    assert [lb.uncalibrated_probability for lb in result.labels] == pytest.approx(
        list(combined(DIRECT_LOGS).values())
    )
    assert result.calibration is Calibration.CONTEXTUAL
    # The content-free input is read directly only: no channel read of "N/A".
    assert not any(c.prompt.startswith(REQUEST) and "N/A" in c.prompt for c in fake.calls)


def test_a_server_started_with_combined_uses_it_for_unset_requests() -> None:
    """The default calibration (AUTO) with the channel pooled in and three labels is online:
    the first text of a task gets contextual calibration alone; later ones, alone or in a
    batch of 8 (where a direct read alone would get batch calibration), move towards the
    prior of the texts scored before them."""
    content_free = answer_table({"": {" sports": log(0.6), " world": log(0.3), " tech": log(0.1)}})
    text = answer_table(DIRECT)
    fake = FakeEngine(scripted(lambda c, t: (text if TEXT in c else content_free)(c, t)))
    classifier = classifier_for(fake, SERVER_DEFAULTS)
    unset = Options()  # method and calibration left to the server
    (result,) = classify(fake, task(*NAMES), [TEXT], unset, classifier=classifier)
    assert result.method is Method.COMBINED
    assert result.calibration is Calibration.ONLINE
    direct_total = sum(DIRECT_BY_NAME.values())
    prior = {"sports": 0.6, "world_news": 0.3, "tech": 0.1}
    calibrated = {n: log(DIRECT_BY_NAME[n] / direct_total) - log(prior[n]) for n in NAMES}
    assert probabilities(result) == pytest.approx(combined(calibrated))
    # One text seen (this very text): weight 1 / 2 on its own scores minus the task's prior,
    # which are zero, and 1 / 2 on the contextually calibrated scores.
    halfway = {n: calibrated[n] / 2 for n in NAMES}
    batch = classify(fake, task(*NAMES), [TEXT] * 8, unset, classifier=classifier)
    assert {r.calibration for r in batch} == {Calibration.ONLINE}
    assert all(probabilities(r) == pytest.approx(combined(halfway)) for r in batch)
    # Nine texts seen: weight 9 / 10.
    (later,) = classify(fake, task(*NAMES), [TEXT], unset, classifier=classifier)
    assert probabilities(later) == pytest.approx(combined({n: calibrated[n] / 10 for n in NAMES}))


def test_a_batch_reads_the_channel_once_per_label_and_text() -> None:
    fake = engine()
    options = Options(calibration=Calibration.NONE, method=Method.CHANNEL)
    results = classify(fake, task(*NAMES), [TEXT, TEXT + " again"], options)
    assert [r.usage.reads for r in results] == [len(NAMES), len(NAMES)]
    assert len(fake.calls) == 2 * len(NAMES)
    # " again" is unlikely under every label alike: the distribution does not move.
    assert [lb.probability for lb in results[1].labels] == pytest.approx(
        [lb.probability for lb in results[0].labels]
    )


def test_a_channel_shortlist_reads_the_channel_for_the_best_direct_labels_only() -> None:
    """With a shortlist of 2, the channel is read for the direct read's two best labels
    (world_news 0.5, sports 0.2); tech is given the lower of their two channel log-probs."""
    fake = engine()
    options = Options(calibration=Calibration.NONE, method=Method.COMBINED, channel_shortlist=2)
    result = classify_one(fake, task(*NAMES), TEXT, options=options)
    assert channel_calls(fake) == sorted(
        f"{REQUEST}{WORDED[n]}.\n{TEXT}" for n in ("world_news", "sports")
    )
    floor = min(channel_sum("world_news"), channel_sum("sports"))
    channel = {"sports": channel_sum("sports"), "world_news": channel_sum("world_news"),
               "tech": floor}  # fmt: skip
    want = {n: (DIRECT_LOGS[n] + CHANNEL_WEIGHT * channel[n]) / TEMPERATURE for n in NAMES}
    assert probabilities(result) == pytest.approx(softmax(want))
    assert [lb.channel_logprob for lb in result.labels] == pytest.approx(list(channel.values()))
    assert [lb.channel_estimated for lb in result.labels] == [False, False, True]
    assert result.usage.reads == len(fake.calls) == 1 + 2
    # A shortlist as long as the labels reads every label's channel, none estimated.
    fake = engine()
    everything = dataclasses.replace(options, channel_shortlist=len(NAMES))
    result = classify_one(fake, task(*NAMES), TEXT, options=everything)
    assert probabilities(result) == pytest.approx(combined(DIRECT_LOGS))
    assert not any(lb.channel_estimated for lb in result.labels)
    assert len(channel_calls(fake)) == len(NAMES)


def test_a_server_started_with_a_shortlist_uses_it_for_unset_requests() -> None:
    fake = engine()
    settings = dataclasses.replace(
        TEST_SETTINGS,
        classify=ClassifySettings(default_method=Method.COMBINED, channel_shortlist=1),
    )
    options = Options(calibration=Calibration.NONE)
    (result,) = classify(
        fake, task(*NAMES), [TEXT], options, classifier=classifier_for(fake, settings)
    )
    # One label read (world_news, the direct read's best): every label gets its channel, so
    # the channel moves nothing and the direct read decides.
    assert channel_calls(fake) == [f"{REQUEST}world news.\n{TEXT}"]
    assert probabilities(result) == pytest.approx(
        softmax({n: DIRECT_LOGS[n] / TEMPERATURE for n in NAMES})
    )
    assert result.top_label == "world_news"


# Two labels whose direct read leans on the order they are listed in.
PAIR = ("sports", "tech")
AS_SENT = {"": {" sports": log(0.6), " tech": log(0.2)}}
REVERSED = {"": {" sports": log(0.3), " tech": log(0.5)}}


def order_engine() -> FakeEngine:
    """Direct reads by AS_SENT when the prompt lists sports first, else by REVERSED."""
    as_sent, reversed_ = answer_table(AS_SENT), answer_table(REVERSED)

    def direct(context: str, token: str) -> float:
        first = as_sent if context.index("sports") < context.index("tech") else reversed_
        return first(context, token)

    return FakeEngine(scripted(direct))


def test_combined_reads_two_labels_in_both_orders_with_their_own_pool() -> None:
    """COMBINED with two labels reads them as sent and reversed, averages the two label
    log-distributions and pools them with the channel at weight 0.625 / ln(n + 1), T 0.85
    (README, "Two labels")."""
    fake = order_engine()
    options = Options(calibration=Calibration.NONE, method=Method.COMBINED)
    result = classify_one(fake, task(*PAIR), TEXT, options=options)
    as_sent = {"sports": log(0.6 / 0.8), "tech": log(0.2 / 0.8)}
    reversed_ = {"sports": log(0.3 / 0.8), "tech": log(0.5 / 0.8)}
    weight = 0.625 / log(2 + 1)
    want = {n: ((as_sent[n] + reversed_[n]) / 2 + weight * channel_sum(n)) / 0.85 for n in PAIR}
    assert probabilities(result) == pytest.approx(softmax(want))
    # Two direct prompts, one each order; a channel read per label.
    direct = [c.prompt for c in fake.calls if not c.prompt.startswith(REQUEST)]
    assert sorted(p.index("sports") < p.index("tech") for p in direct) == [False, True]
    assert result.usage.reads == len(fake.calls) == 2 + 2
    # The reads reported are those of the labels as sent.
    assert [lb.logprob for lb in result.labels] == pytest.approx([log(0.6), log(0.2)])


def test_both_orders_read_their_content_free_inputs_at_once() -> None:
    """A two-label task's first request calibrates each label order against its own
    content-free read; the two reads are in flight together, not one after the other."""

    async def scenario() -> list[bool]:
        fake = order_engine()
        fake.gates["Text: N/A\n"] = asyncio.Event()
        classifier = classifier_for(fake)
        options = Options(
            calibration=Calibration.CONTEXTUAL, method=Method.COMBINED, content_free_inputs=("N/A",)
        )
        work = asyncio.ensure_future(classifier.classify(task(*PAIR), [TEXT], options))
        held = []
        for _ in range(1000):  # both held at the gate, or the test fails below
            held = [c.prompt for c in fake.calls if "Text: N/A\n" in c.prompt]
            if len(held) == 2:
                break
            await asyncio.sleep(0.001)
        fake.gates["Text: N/A\n"].set()
        await work
        return sorted(p.index("sports") < p.index("tech") for p in held)

    assert run(scenario) == [False, True]


def test_one_label_order_keeps_the_one_order_pool() -> None:
    fake = order_engine()
    options = Options(calibration=Calibration.NONE, method=Method.COMBINED, label_orders=1)
    result = classify_one(fake, task(*PAIR), TEXT, options=options)
    as_sent = {"sports": log(0.6), "tech": log(0.2)}
    want = {n: (as_sent[n] + CHANNEL_WEIGHT * channel_sum(n)) / TEMPERATURE for n in PAIR}
    assert probabilities(result) == pytest.approx(softmax(want))
    assert result.usage.reads == len(fake.calls) == 1 + 2
    # DIRECT reads one order unless asked for two.
    direct = classify_one(order_engine(), task(*PAIR), TEXT, options=Options(
        calibration=Calibration.NONE, method=Method.DIRECT))  # fmt: skip
    assert probabilities(direct) == pytest.approx({"sports": 0.75, "tech": 0.25})


# -- the real servicer in process ----------------------------------------------------------

LABELS = [pb.Label(name=n) for n in NAMES]


def request(method: int = pb.SCORING_METHOD_UNSPECIFIED, **options: object) -> pb.ClassifyRequest:
    opts = pb.ScoringOptions(
        template="plain", calibration=pb.CALIBRATION_NONE, method=method, **options
    )
    return pb.ClassifyRequest(text=TEXT, labels=LABELS, options=opts)


def test_the_servicer_returns_channel_scores() -> None:
    async def scenario() -> pb.ClassifyResponse:
        async with serving(engine()) as server:
            return await server.stub.Classify(request(pb.SCORING_METHOD_CHANNEL))

    result = run(scenario).result
    expected = {n: channel_sum(n) for n in NAMES}
    assert [lb.name for lb in result.labels] == list(NAMES)
    assert [lb.probability for lb in result.labels] == pytest.approx(
        list(softmax(expected).values())
    )
    assert [lb.channel_logprob for lb in result.labels] == pytest.approx(list(expected.values()))
    assert result.method == pb.SCORING_METHOD_CHANNEL
    assert result.usage.engine_reads == len(NAMES)


def test_the_servicer_resolves_an_unset_method_to_the_server_default() -> None:
    async def scenario() -> tuple[pb.Classification, pb.GetModelInfoResponse]:
        async with serving(engine(), SERVER_DEFAULTS) as server:
            reply = await server.stub.Classify(request())
            return reply.result, await server.stub.GetModelInfo(pb.GetModelInfoRequest())

    result, info = run(scenario)
    assert info.default_method == pb.SCORING_METHOD_COMBINED
    assert result.method == pb.SCORING_METHOD_COMBINED
    assert [lb.probability for lb in result.labels] == pytest.approx(
        list(combined(DIRECT_LOGS).values())
    )
    assert result.usage.engine_reads == 1 + len(NAMES)


@pytest.mark.parametrize(
    ("method", "expected"),
    [(Method.DIRECT, pb.SCORING_METHOD_DIRECT), (Method.CHANNEL, pb.SCORING_METHOD_CHANNEL)],
)
def test_model_info_reports_the_configured_default_method(method: Method, expected: int) -> None:
    settings = dataclasses.replace(TEST_SETTINGS, classify=ClassifySettings(default_method=method))

    async def scenario() -> tuple[pb.GetModelInfoResponse, pb.Classification]:
        async with serving(engine(), settings) as server:
            info = await server.stub.GetModelInfo(pb.GetModelInfoRequest())
            return info, (await server.stub.Classify(request())).result

    info, result = run(scenario)
    assert info.default_method == expected
    assert result.method == expected


@pytest.mark.parametrize(
    "options",
    [
        {"method": pb.SCORING_METHOD_CHANNEL, "multi_label": True},
        {"method": pb.SCORING_METHOD_DIRECT, "multi_label": True},
        {"method": 42},
    ],
    ids=["channel-multi-label", "direct-multi-label", "unknown"],
)
def test_a_bad_method_names_options_method_and_the_server_keeps_serving(options) -> None:
    async def scenario() -> tuple[grpc.aio.AioRpcError, pb.ClassifyResponse]:
        async with serving(engine()) as server:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await server.stub.Classify(request(**options))
            return err.value, await server.stub.Classify(request(pb.SCORING_METHOD_DIRECT))

    err, after = run(scenario)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == ["options.method"]
    assert after.result.method == pb.SCORING_METHOD_DIRECT
