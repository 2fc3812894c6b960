"""Business rules as plain Python: no gRPC, no SQLAlchemy."""
