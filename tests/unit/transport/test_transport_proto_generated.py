"""The committed protobuf code is exactly what ``scripts/gen_proto.py`` generates.

Fails when ``proto/fedlearn/v1/*.proto`` changed without regenerating (or when
someone edited the generated files by hand).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "gen_proto.py"
COMMITTED = ROOT / "src" / "fedlearn" / "transport" / "pb"


def _load_gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_fedlearn_gen_proto", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(spec.name, None)
    spec.loader.exec_module(module)
    return module


def _files(folder: Path) -> set[str]:
    """Generated sources below ``folder`` (bytecode caches are not generated)."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


COMMITTED_FILES = sorted(_files(COMMITTED))


@pytest.fixture(scope="module")
def gen_proto() -> ModuleType:
    return _load_gen_proto()


@pytest.fixture(scope="module")
def regenerated(gen_proto: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    gen_proto.generate(out)
    return out


def test_committed_protobuf_code_exists():
    assert "fedlearn/v1/fedlearn_pb2.py" in COMMITTED_FILES
    assert "fedlearn/v1/fedlearn_pb2.pyi" in COMMITTED_FILES
    assert "fedlearn/v1/fedlearn_pb2_grpc.py" in COMMITTED_FILES


def test_regenerating_produces_the_same_set_of_files(regenerated):
    assert _files(regenerated) == set(COMMITTED_FILES)


@pytest.mark.parametrize("name", COMMITTED_FILES)
def test_regenerated_file_is_byte_identical_to_committed(regenerated, name):
    fresh = regenerated / name
    assert fresh.is_file(), f"{name} is committed but no longer generated"
    assert fresh.read_bytes() == (COMMITTED / name).read_bytes(), (
        f"{name} is stale: run `python scripts/gen_proto.py` and commit the result"
    )


def test_a_changed_proto_would_be_detected(gen_proto, tmp_path, monkeypatch):
    """The check above can fail: an edited .proto yields different generated code."""
    protos = tmp_path / "proto"
    shutil.copytree(gen_proto.PROTO_DIR, protos)
    source = protos / "fedlearn" / "v1" / "fedlearn.proto"
    source.write_text(source.read_text() + "\nmessage AddedForTheTest { string x = 1; }\n")
    monkeypatch.setattr(gen_proto, "PROTO_DIR", protos)
    out = tmp_path / "pb"
    gen_proto.generate(out)
    name = "fedlearn/v1/fedlearn_pb2.py"
    assert (out / name).read_bytes() != (COMMITTED / name).read_bytes()


def test_generated_modules_import_each_other_under_the_transport_package(regenerated):
    grpc_module = (regenerated / "fedlearn" / "v1" / "fedlearn_pb2_grpc.py").read_text()
    assert "from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2" in grpc_module
    assert "from fedlearn.v1 import" not in grpc_module
