"""Server TLS credentials from PEM files; mutual TLS when a client CA bundle is given.

Files are checked at start with the standard library's ``ssl`` module (which
verifies that the key belongs to the certificate), so a wrong path, a swapped file
or a key for another certificate stops the server with a message naming the
setting, instead of failing every handshake later.
"""

from __future__ import annotations

import ssl

import grpc

from stateward.server.config import ConfigError, Settings


class TLSConfigError(ConfigError):
    pass


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise TLSConfigError(f"{setting}: cannot read {path}: {error.strerror or error}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for ``add_secure_port``, or None when TLS is off (no cert configured)."""
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if not cert and not key:
        if client_ca:
            raise TLSConfigError(
                "tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS first"
            )
        return None
    if not cert or not key:
        raise TLSConfigError("tls_cert and tls_key go together: set both, or neither for plaintext")
    chain, private_key = _read(cert, "tls_cert"), _read(key, "tls_key")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise TLSConfigError(
            f"tls_cert {cert} and tls_key {key} are not a matching PEM certificate and key: {error}"
        ) from None
    roots = None
    if client_ca:
        roots = _read(client_ca, "tls_client_ca")
        try:
            ssl.create_default_context(cafile=client_ca)
        except ssl.SSLError as error:
            raise TLSConfigError(
                f"tls_client_ca {client_ca}: not a PEM CA bundle: {error}"
            ) from None
    return grpc.ssl_server_credentials(
        [(private_key, chain)], root_certificates=roots, require_client_auth=roots is not None
    )
