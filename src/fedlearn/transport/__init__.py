"""gRPC adapters: the coordinator's server and the clients' connection."""

__all__: list[str] = []
