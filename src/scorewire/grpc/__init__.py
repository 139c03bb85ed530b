"""The gRPC edge: the only part of scorewire that imports grpc or protobuf stubs."""
