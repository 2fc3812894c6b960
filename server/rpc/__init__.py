"""gRPC transport helpers: status mapping, conversions, request context."""
