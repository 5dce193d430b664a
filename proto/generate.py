"""Generates the Python stubs of proto/labelprob/v1 in place; `--check` fails when they are stale.

Run with the project's venv: `python proto/generate.py [--check]` (or `make stubs`).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "labelprob" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Runs protoc on every .proto of the package, writing stubs under out_root."""
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    for proto in protos:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    out_pkg = out_root / "labelprob" / "v1"
    return sorted(p for p in out_pkg.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            p.name
            for p in fresh
            if not (PACKAGE_DIR / p.name).exists() or not filecmp.cmp(p, PACKAGE_DIR / p.name)
        ]
        if check:
            if stale:
                print(f"stale stubs: {', '.join(stale)}; run `make stubs`", file=sys.stderr)
                return 1
            print(f"stubs are up to date ({len(fresh)} files)")
            return 0
        for p in fresh:
            shutil.copyfile(p, PACKAGE_DIR / p.name)
        print(f"wrote {len(fresh)} files to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
