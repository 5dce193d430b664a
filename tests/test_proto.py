"""The API contract: stubs regenerate to what is committed, and buf lints the proto clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROTO = Path(__file__).resolve().parent.parent / "proto"
BUF = PROTO / "node_modules" / ".bin" / "buf"


def test_committed_stubs_are_fresh() -> None:
    run = subprocess.run(
        [sys.executable, str(PROTO / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "up to date" in run.stdout


def buf_lint(root: Path) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), "buf is missing: `make install` runs `npm ci --prefix proto`"
    return subprocess.run([str(BUF), "lint"], cwd=root, capture_output=True, text=True)


def test_buf_lint_is_clean() -> None:
    run = buf_lint(PROTO)
    assert run.returncode == 0, run.stdout + run.stderr


def test_buf_lint_catches_style_errors(tmp_path: Path) -> None:
    # The same module with an enum lacking its _UNSPECIFIED zero value must fail.
    shutil.copy(PROTO / "buf.yaml", tmp_path / "buf.yaml")
    target = tmp_path / "labelprob" / "v1"
    target.mkdir(parents=True)
    source = (PROTO / "labelprob" / "v1" / "classifier.proto").read_text()
    broken = source.replace("SCORING_MODE_UNSPECIFIED = 0;", "SCORING_MODE_NONE = 0;")
    assert broken != source
    (target / "classifier.proto").write_text(broken)
    run = buf_lint(tmp_path)
    assert run.returncode != 0
    assert "SCORING_MODE_NONE" in run.stdout + run.stderr


@pytest.mark.parametrize("stub", ["classifier_pb2.py", "classifier_pb2_grpc.py"])
def test_stubs_import_under_the_namespaced_package(stub: str) -> None:
    module = "labelprob.v1." + stub.removesuffix(".py")
    __import__(module)
    assert module in sys.modules
