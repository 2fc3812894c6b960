"""Transport security and access control, applied to every RPC by ``server/transport.py``.

- ``tls``: server credentials from PEM files; mutual TLS when a client CA is set.
- ``auth``: the hashed token file (reloaded on SIGHUP) and the authorization decision.
- ``policy``: which role each RPC needs, in one table.
- ``gate``: enforces ``auth`` on every guarded call before its request is parsed.
- ``token_cli``: ``stateward token new|hash``.
"""
