"""The image's start path as an operator runs it: the model is converted as root at build time
and served by an unprivileged user (the image's uid 10001, the chart's runAsUser).

Tests run as root, which reads anything; these tests switch to another uid to see what the
pod sees.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.server import model_source
from tests.conftest import ServerProcess

# The image's runtime user (docker/Dockerfile.*, the chart's runAsUser).
RUNTIME_UID = 10001

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def run_as(uid: int, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, user=uid, group=uid, extra_groups=[], capture_output=True, text=True, **kwargs
    )


def runs_as(uid: int, python: Path, version: str) -> bool:
    """Whether the user can execute this interpreter, and it is the given X.Y version."""
    probe = "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"
    try:
        return run_as(uid, [str(python), "-c", probe]).stdout.strip() == version
    except OSError:  # not executable by that user
        return False


def python_for(uid: int, folder: Path) -> Path:
    """A Python the user can run that sees this interpreter's packages.

    A venv made from the first base interpreter the user can execute (ours when it is
    readable, else the system's of the same version), with a .pth that adds our site-packages.
    """
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys._base_executable).resolve()]  # type: ignore[attr-defined]
    candidates += [Path(f"{root}/bin/python{ours}") for root in ("/usr/local", "/usr")]
    base = next((c for c in candidates if runs_as(uid, c, ours)), None)
    if base is None:
        pytest.fail(f"no Python {ours} that uid {uid} can execute among {candidates}")
    venv = folder / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = sysconfig.get_paths()["purelib"]
    (venv_site := next(venv.glob("lib/python*/site-packages"))).mkdir(exist_ok=True)
    # addsitedir (not a bare path) also runs the .pth files there: the editable install's finder.
    (venv_site / "labelprob-test.pth").write_text(
        f"import site; site.addsitedir({site_packages!r})\n"
    )
    return venv / "bin" / "python"


def user_neutral_environment() -> dict[str, str]:
    """This environment without the names of the user running the tests.

    Libraries derive per-user paths from them (torch: /tmp/torchinductor_$USER), which would
    point the other user at root's folders.
    """
    return {k: v for k, v in os.environ.items() if k not in {"USER", "LOGNAME", "USERNAME"}}


class UnprivilegedServer(ServerProcess):
    """`labelprob serve` started as another user with a given interpreter."""

    uid: int = RUNTIME_UID
    python: Path = Path(sys.executable)

    def start(self) -> None:
        command = [
            str(self.python), "-m", "labelprob.server.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-port", str(self.metrics_port), *self.args,
        ]  # fmt: skip
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**user_neutral_environment(), **self.env},
            user=self.uid,
            group=self.uid,
            extra_groups=[],
        )


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A temporary folder other users can enter (pytest's own tmp folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="labelprob-unprivileged-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_converted_model_is_world_readable(tmp_path: Path, monkeypatch) -> None:
    """Fast check of the staging step, with a converter that writes private files."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"")

    def private_converter(_source: Path, out_dir: Path) -> None:
        (out_dir / "tokenizer").mkdir(mode=0o700)
        for name in ("config.json", "model.safetensors", "tokenizer/vocab.json"):
            (out_dir / name).write_text("{}")
            (out_dir / name).chmod(0o600)

    monkeypatch.setattr(model_source, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(model_source, "convert_gguf_to_safetensors", private_converter)
    target = model_source.ensure_embedded_model(tmp_path / "cache")
    modes = {
        str(p.relative_to(target)): stat.S_IMODE(p.stat().st_mode)
        for p in (target, *target.rglob("*"))
    }
    assert modes == {
        ".": 0o755,
        "tokenizer": 0o755,
        "config.json": 0o644,
        "model.safetensors": 0o644,
        "tokenizer/vocab.json": 0o644,
    }


@needs_root
@pytest.mark.embedded
def test_image_start_path_serves_as_unprivileged_user(shared_folder: Path) -> None:
    models, home = shared_folder / "models", shared_folder / "home"
    # Build time, as root: what the Dockerfiles' `RUN labelprob prepare-model` does.
    build_env = {
        **os.environ,
        "LABELPROB_CACHE_DIR": str(models),
        "HF_HOME": str(shared_folder / "build-hf-home"),
    }
    prepared = subprocess.run(
        [sys.executable, "-m", "labelprob.server.cli", "prepare-model"],
        env=build_env,
        capture_output=True,
        text=True,
        check=True,
    )
    model_dir = Path(prepared.stdout.strip().splitlines()[-1])
    assert model_dir.parent == models and (model_dir / "model.safetensors").is_file()
    # Run time, as the image's user: a writable home of its own, the model read-only.
    home.mkdir()
    os.chown(home, RUNTIME_UID, RUNTIME_UID)
    server = UnprivilegedServer(
        "unprivileged",
        ["--enforce-eager", "--kv-cache-gib", "1"],
        shared_folder / "server.log",
        env={
            "LABELPROB_CACHE_DIR": str(models),
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home),
            "HF_HOME": str(home / "huggingface"),
            "VLLM_CACHE_ROOT": str(home / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(home / "torchinductor"),
            "HF_HUB_OFFLINE": "1",
        },
    )
    server.python = python_for(RUNTIME_UID, shared_folder)
    server.start()
    try:
        server.wait_serving()
        assert server.process is not None
        owner = subprocess.run(
            ["ps", "-o", "uid=", "-p", str(server.process.pid)], capture_output=True, text=True
        )
        assert int(owner.stdout) == RUNTIME_UID
        labels = ["positive", "negative"]
        with Client(server.target, timeout=120) as client:
            result = client.classify("I love this film", ClassifyParams(labels))
        assert result.top_label in labels
        assert sum(label.probability for label in result.labels) == pytest.approx(1.0, abs=1e-5)
    finally:
        server.stop()
