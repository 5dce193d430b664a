"""A clean stop: `labelprob serve` and SIGTERM print the server's own lines and nothing else.

The CPU build once carried the CUDA `triton` package (a dependency of xgrammar): torch imports
it when present, and at every exit its bindings printed hundreds of lines of a nanobind leak
report after the server's last line.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import ServerProcess, tiny_server_args

# A vLLM log record: "(EngineCore pid=123) INFO 11-29 15:37:53 [core.py:1454] ...".
VLLM_RECORD = re.compile(r"^\([\w-]+ pid=\d+\) (DEBUG|INFO|WARNING) \d\d-\d\d ")
# Python's multiprocessing reports shared memory of a worker vLLM had to kill (its timing).
RESOURCE_TRACKER = re.compile(r"resource_tracker|warnings\.warn\('resource_tracker")


def server_event(line: str) -> str | None:
    """The event of one of the server's own JSON log lines, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("event") if isinstance(record, dict) else None


@pytest.mark.skipif(torch.version.cuda is not None, reason="CUDA builds need triton")
def test_cpu_build_has_no_triton() -> None:
    # The source of the leak report: nothing in the CPU build may install it again.
    assert importlib.util.find_spec("triton") is None


@pytest.mark.engine
def test_sigterm_prints_only_the_servers_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = ServerProcess("clean-stop", tiny_server_args(tiny_model_dir), tmp_path / "serve.log")
    server.start()
    try:
        server.wait_serving()
    finally:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=120)
    assert code == 0
    lines = server.log_path.read_text(errors="replace").splitlines()
    events = [server_event(line) for line in lines]
    assert "draining" in events and "stopped" in events
    after_drain = lines[events.index("draining") :]
    foreign = [
        line
        for line in after_drain
        if server_event(line) is None
        and not VLLM_RECORD.match(line)
        and not RESOURCE_TRACKER.search(line)
    ]
    assert foreign == [], "\n".join(foreign[:20])
    # The server's "stopped" is the last line of its own.
    assert [e for e in events if e is not None][-1] == "stopped"
    text = "\n".join(lines)
    assert "nanobind" not in text and "libtriton" not in text and "Traceback" not in text
