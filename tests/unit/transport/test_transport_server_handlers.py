"""The server registers its own handlers (to send pre-serialized model chunks):
every RPC of the proto must be among them."""

from __future__ import annotations

from fedlearn.transport import server
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb


class _RecordingServer:
    def __init__(self) -> None:
        self.methods: set[str] = set()

    def add_generic_rpc_handlers(self, handlers) -> None:
        for handler in handlers:
            for name in pb.DESCRIPTOR.services_by_name["FederatedLearning"].methods_by_name:
                details = _CallDetails(f"/{server.SERVICE_NAME}/{name}")
                if handler.service(details) is not None:
                    self.methods.add(name)


class _CallDetails:
    def __init__(self, method: str) -> None:
        self.method = method


def test_every_rpc_of_the_proto_has_a_handler():
    recording = _RecordingServer()
    server._add_servicer(object.__new__(server._Servicer), recording)
    proto_methods = set(pb.DESCRIPTOR.services_by_name["FederatedLearning"].methods_by_name)
    assert proto_methods == recording.methods
    assert "Rollback" in proto_methods
