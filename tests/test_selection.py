"""The leave-one-dataset-out scan that chose the default pool (on rows written by hand), and
the collection of its rows from a real server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from labelprob.server import scoring
from labelprob.tools.evaluation import collect, selection, two_labels
from labelprob.tools.evaluation.collect import Row
from labelprob.tools.evaluation.configs import PEER
from labelprob.tools.evaluation.selection import Pool
from tests.oracle import softmax

RIGHT, WRONG = [0.0, -1.0], [-1.0, 0.0]  # scores of labels x and y; x is the truth


def row(dataset: str, direct: list[float], channel: list[float], peer: list[float] = RIGHT) -> Row:
    """A text whose calibrated direct read is its raw one."""
    return Row(dataset, "text", "x", ["x", "y"], 4, peer, direct, direct, channel)


def test_a_pool_adds_the_weighted_channel_to_the_direct_read() -> None:
    r = Row("a", "text", "x", ["x", "y"], 9, [0.0, 0.0], [-1.0, -2.0], [-0.5, -0.1], [-6.0, -3.0])
    assert selection.pooled(r, Pool("raw", "sum", 2.0)) == [-13.0, -8.0]
    assert selection.pooled(r, Pool("raw", "sqrt", 2.0)) == [-5.0, -4.0]
    assert selection.pooled(r, Pool("calibrated", "mean", 3.0)) == pytest.approx([-2.5, -1.1])
    by_log = 2.0 / math.log(9 + 1)  # the channel divided by ln(tokens + 1)
    assert selection.pooled(r, Pool("raw", "log", 2.0)) == pytest.approx(
        [-1.0 - 6.0 * by_log, -2.0 - 3.0 * by_log]
    )
    assert selection.pooled(r, Pool("raw", "sum", 2.0), temperature=2.0) == [-6.5, -4.0]


def test_online_calibration_follows_the_rows_before_each_one_from_three_labels() -> None:
    labels = ["x", "y", "z"]
    first, second = [math.log(0.5), math.log(0.3), math.log(0.2)], [0.0, 0.0, math.log(2)]
    cal1, cal2 = [0.1, 0.2, 0.3], [0.3, -0.2, 0.1]
    rows = [
        Row("s", "a", "x", labels, 4, first, first, cal1, [0.0] * 3),
        Row("s", "b", "y", labels, 4, second, second, cal2, [0.0] * 3),
        Row("s", "c", "x", ["x", "y"], 4, RIGHT, RIGHT, [0.5, 0.0], [0.0] * 2),
    ]
    one, two, binary = selection.online_calibrated(rows)
    assert one.online == cal1  # nothing seen yet: contextual alone
    # One row seen: half contextual, half the row's log-distribution minus the first's.
    own = [math.log(0.25), math.log(0.25), math.log(0.5)]
    want = [0.5 * c + 0.5 * (o - f) for c, o, f in zip(cal2, own, first, strict=True)]
    assert two.online == pytest.approx(want)
    assert binary.online == [0.5, 0.0]  # two labels: contextual, as the server's AUTO


def test_the_mean_of_two_label_orders_averages_their_label_distributions() -> None:
    # Two reads over 2 labels: probabilities (0.8, 0.2) and (0.5, 0.5), unnormalized.
    forward = [math.log(0.8) + 3.0, math.log(0.2) + 3.0]
    backward = [math.log(0.5) - 1.0, math.log(0.5) - 1.0]
    assert scoring.mean_of_orders(forward, backward) == pytest.approx(
        [(math.log(0.8) + math.log(0.5)) / 2, (math.log(0.2) + math.log(0.5)) / 2]
    )


def test_the_held_out_set_gets_the_pool_the_others_prefer() -> None:
    # On "a" the direct read is right and the channel wrong; on "b" and "c" the reverse,
    # so both prefer a heavy channel, which costs "a" every text.
    by_set = {
        "a": [row("a", RIGHT, [-3.0, 0.0])] * 2,
        "b": [row("b", WRONG, [0.0, -3.0])] * 2,
        "c": [row("c", WRONG, [0.0, -3.0])] * 3,
    }
    held_a = selection.leave_one_out(by_set, by="mean")[0]
    assert held_a[0] == "a" and (held_a[3], held_a[5]) == ("0.0", "100.0")
    assert "channel" in held_a[1]
    weight = float(held_a[1].split(" + ")[1].split(" x ")[0])
    assert weight * 3 > 1  # the channel outweighs the direct read's margin of 1 on b and c


def test_by_margin_the_pool_must_gain_on_every_training_set() -> None:
    # A heavy channel gains 100 points on "b" (where the peer is wrong) and loses 50 on "c"
    # (where the peer is right): best by mean accuracy, but not by the smallest gain.
    heavy, light = [0.0, -3.0], [-3.0, 0.0]  # a channel right and one wrong, by 3
    by_set = {
        "a": [row("a", WRONG, heavy)],
        "b": [row("b", WRONG, heavy, peer=WRONG)],
        "c": [row("c", RIGHT, light), row("c", RIGHT, heavy)],
    }

    def held_a(by: str) -> tuple[str, float]:
        _, pool, _, accuracy, _, peer = selection.leave_one_out(by_set, by)[0]
        assert peer == "100.0"
        return accuracy, float(pool.split(" + ")[1].split(" x ")[0])

    accuracy, weight = held_a("margin")
    assert accuracy == "0.0" and weight * 3 < 1
    accuracy, weight = held_a("mean")
    assert accuracy == "100.0" and weight * 3 > 1


def test_by_log_loss_the_temperature_follows_how_often_the_training_sets_are_wrong() -> None:
    # No channel evidence (equal per label): every pool scores the direct read's margin of 1.
    flat = [-2.0, -2.0]

    def held_a(b_and_c: list[list[float]]) -> list[str]:
        by_set = {
            "a": [row("a", RIGHT, flat)] * 2,
            "b": [row("b", d, flat) for d in b_and_c],
            "c": [row("c", d, flat) for d in b_and_c],
        }
        return selection.leave_one_out(by_set, by="nll")[0]

    # Always right on the others: as sharp as allowed.
    assert held_a([RIGHT, RIGHT])[2] == str(min(selection.TEMPERATURES)).removesuffix(".0")
    # Right half the time: as soft as allowed; the held-out set, always right by a margin of
    # 1, is then underconfident: P(x) = sigmoid(1 / 4), its ECE 1 - that.
    soft = held_a([RIGHT, WRONG])
    assert soft[2] == "4" and soft[3] == "100.0"
    assert float(soft[4]) == pytest.approx(1 - 1 / (1 + math.exp(-0.25)), abs=1e-3)


def test_scan_reads_collected_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [row(name, RIGHT, WRONG) for name in ("mr", "news", "intents")]
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(vars(r)) + "\n" for r in rows))
    assert selection.main(["scan", str(path)]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["mr", "news", "intents"]
    # Per direct kind: no channel, or each norm at each non-zero weight.
    norms = len(selection.CHANNEL_NORMS)
    assert len(selection.POOLS) == 3 * (1 + norms * (len(selection.WEIGHTS) - 1))


def test_layout_table_pools_each_layout_with_the_channel() -> None:
    # Layout "a" reads x by 1 (calibrated) and y by 2 (raw); the channel prefers y by 3 on
    # the first text and by 0.5 on the second: pooled, y wins the first and x the second.
    def with_layout(channel: list[float]) -> Row:
        layout = {"a": {"calibrated": [0.0, -1.0], "raw": [-2.0, 0.0]}}
        return Row("s", "text", "x", ["x", "y"], 4, WRONG, RIGHT, RIGHT, channel, layout)

    by_set = {"s": [with_layout([-3.0, 0.0]), with_layout([-0.5, 0.0])]}
    assert selection.layout_table(by_set) == [
        ["peer", "0.0"],
        ["a: the server's pool", "50.0"],
        ["a: raw direct", "0.0"],
    ]


def test_scan_of_one_set_prints_its_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = {"a": {"calibrated": [0.0, -1.0], "raw": [0.0, -1.0]}}
    r = Row("only", "text", "x", ["x", "y"], 4, WRONG, RIGHT, RIGHT, WRONG, layout)
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps(vars(r)) + "\n")
    assert selection.main(["scan", str(path)]) == 0  # no fold to hold out: layouts only
    out = capsys.readouterr().out
    assert "held out" not in out
    assert "a: raw direct" in out and "100.0" in out


def test_the_compared_layouts_load_and_each_names_its_base() -> None:
    import tomllib

    from labelprob.server.prompts import BUILTIN_TEMPLATES, load_templates

    path = Path(selection.__file__).with_name("layouts.toml")
    tables = tomllib.loads(path.read_text())
    # A table without "extends" would start from whatever the server's default is.
    assert all("extends" in table for table in tables.values())
    templates = load_templates(path)
    assert set(templates) == set(BUILTIN_TEMPLATES) | set(tables)
    assert templates["own_system_inline_answer"].label_separator == ", "  # via its base
    assert templates["own_system_inline_answer"].answer_prefix == "Answer:"


@pytest.mark.engine
def test_collect_reads_each_score_from_the_real_server(
    tiny_server, tiny_client, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from labelprob.client import ClassifyParams
    from labelprob.v1 import classifier_pb2 as pb

    data = tmp_path / "topics.jsonl"
    examples = [("The team won the match.", "sports"), ("Stocks fell today.", "business")]
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in examples))
    out = tmp_path / "scores.jsonl"
    args = ["collect", str(data), "--out", str(out), "--target", tiny_server.target,
            "--tokenizer", str(tiny_model_dir), "--skip", "0", "--limit", "2",
            "--layouts", "plain", "--reversed"]  # fmt: skip
    assert selection.main(args) == 0
    assert list(collect.read_rows(out)) == ["topics"]  # each row keeps its data set's name
    (rows,) = collect.read_rows(out).values()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert sorted(r.truth for r in rows) == ["business", "sports"]
    labels = rows[0].labels
    assert sorted(labels) == ["business", "sports"]

    def scores(text: str, field: str, labels: list[str] = labels, **options: object) -> list[float]:
        params = ClassifyParams(labels, options=pb.ScoringOptions(**options))
        result = tiny_client.classify(text, params)
        return [getattr(lb, field) for lb in result.labels]

    for r in rows:
        assert r.tokens == len(tokenizer.encode(r.text, add_special_tokens=False))
        direct = pb.SCORING_METHOD_DIRECT
        none, contextual = pb.CALIBRATION_NONE, pb.CALIBRATION_CONTEXTUAL
        want = {
            "peer": scores(r.text, "logprob", **vars_of(PEER.options())),
            "direct": scores(r.text, "logprob", method=direct, calibration=none),
            "calibrated": scores(r.text, "score", method=direct, calibration=contextual),
            "channel": scores(
                r.text, "channel_logprob", method=pb.SCORING_METHOD_CHANNEL, calibration=none
            ),
        }
        for field, values in want.items():
            assert getattr(r, field) == pytest.approx(values, abs=1e-3), field
        plain = {"method": direct, "calibration": contextual, "template": "plain"}
        assert r.layouts["plain"]["raw"] == pytest.approx(
            scores(r.text, "logprob", **plain), abs=1e-3
        )
        assert r.layouts["plain"]["calibrated"] == pytest.approx(
            scores(r.text, "score", **plain), abs=1e-3
        )
        assert r.layouts["plain"]["raw"] != pytest.approx(r.direct, abs=1e-3)  # another prompt
        # The labels listed in reverse: another prompt, scores kept in the row's label order.
        reversed_labels = labels[::-1]
        reversed_read = scores(
            r.text, "score", labels=reversed_labels, method=direct, calibration=contextual
        )
        backward = dict(zip(reversed_labels, reversed_read, strict=True))
        assert r.layouts[collect.REVERSED]["calibrated"] == pytest.approx(
            [backward[name] for name in labels], abs=1e-3
        )
        raw_read = scores(
            r.text, "logprob", labels=reversed_labels, method=direct, calibration=none
        )
        raw_backward = dict(zip(reversed_labels, raw_read, strict=True))
        assert r.layouts[collect.REVERSED]["raw"] == pytest.approx(
            [raw_backward[name] for name in labels], abs=1e-3
        )
        both = r.layouts[collect.BOTH_ORDERS]["calibrated"]
        forward_p = softmax(r.calibrated)
        backward_p = softmax([backward[name] for name in labels])
        assert both == pytest.approx(
            [(math.log(f) + math.log(b)) / 2 for f, b in zip(forward_p, backward_p, strict=True)],
            abs=1e-3,
        )


def vars_of(options: object) -> dict[str, object]:
    """A ScoringOptions message's set fields, as keyword arguments."""
    return {f.name: v for f, v in options.ListFields()}  # type: ignore[attr-defined]


def test_the_two_label_scan_holds_each_set_out_and_prefers_the_orders_that_are_right() -> None:
    """Rows whose labels-as-sent read is wrong and whose two-order mean is right: every
    held-out set gets the two-order pool, chosen on the others, and is all right under it."""

    def two_order_row(dataset: str) -> Row:
        forward, both = [-2.0, -0.2], [-0.1, -2.5]  # x is the truth
        layouts = {collect.BOTH_ORDERS: {"raw": both, "calibrated": both}}
        return Row(dataset, "t", "x", ["x", "y"], 5, WRONG, forward, forward, [-3.0, -3.0],
                   layouts)  # fmt: skip

    by_set = {name: [two_order_row(name)] * 3 for name in ("a", "b", "c")}
    table = two_labels.held_out_table(by_set)
    assert [row[0] for row in table] == ["a", "b", "c", "(all sets)"]
    for held, best, right, _ece, one_order, peer in table[:3]:
        assert best.startswith("both orders"), held
        assert (right, one_order, peer) == ("100.0", "0.0", "0.0")
