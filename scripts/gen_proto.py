"""Regenerate the committed protobuf/gRPC code from proto/fedlearn/v1/*.proto.

Usage: python scripts/gen_proto.py [OUT_DIR]   (default: src/fedlearn/transport/pb)

The generated modules import each other as ``fedlearn.v1``; they are rewritten
to live under ``fedlearn.transport.pb`` so that only the transport layer owns them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "src" / "fedlearn" / "transport" / "pb"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.rglob("*_pb2*.py*"):
        text = path.read_text()
        fixed = text.replace(
            "from fedlearn.v1 import", "from fedlearn.transport.pb.fedlearn.v1 import"
        )
        path.write_text(fixed)
    for folder in [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
