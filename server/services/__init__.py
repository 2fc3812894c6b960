"""The service layer: one function per use case, over the storage layer, no gRPC."""
