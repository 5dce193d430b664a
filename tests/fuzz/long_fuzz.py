"""A long property-based fuzz of Classify against a real tiny-model server (not part of CI).

    python -m tests.fuzz.long_fuzz --examples 10000

Every request must get OK (a distribution over its labels) or INVALID_ARGUMENT naming a
field; anything else, a crash or a hang (60 s deadline) fails the run.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings

from labelprob.client import Client
from tests.conftest import ServerProcess, tiny_server_args
from tests.test_errors import check_fuzz_request, fuzz_requests
from tests.tiny_model import build_tiny_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="labelprob-fuzz-"))
    server = ServerProcess(
        "fuzz", tiny_server_args(build_tiny_model(folder / "model")), folder / "server.log"
    )
    server.start()
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        server.wait_serving()
        with Client(server.target, timeout=60) as client:

            @settings(
                max_examples=args.examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(request=fuzz_requests)
            def run(request) -> None:
                try:
                    client.stub.Classify(request, timeout=60)
                    outcomes["OK"] += 1
                except grpc.RpcError as err:
                    outcomes[err.code().name] += 1
                check_fuzz_request(client, request)

            started = time.monotonic()
            run()
            elapsed = time.monotonic() - started
        assert server.process is not None and server.process.poll() is None, "server died"
        total = sum(outcomes.values())
        print(f"{total} requests in {elapsed:.0f} s: {dict(outcomes)}; server still up")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
