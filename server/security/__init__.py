"""Transport security and access control, applied to every RPC by interceptors.

- ``tls``: server credentials from PEM files; mutual TLS when a client CA is set.
- ``auth``: the hashed token file (reloaded on SIGHUP) and the authorization decision.
- ``policy``: which role each RPC needs, in one table.
- ``interceptor``: the gRPC interceptor that enforces ``auth`` before any handler runs.
- ``token_cli``: ``stateward token new|hash``.
"""
