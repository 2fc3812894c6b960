"""Client options: where to connect, how to secure it, how patiently to retry."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from .errors import UsageError

MetadataLike = Sequence[tuple[str, str | bytes]] | Mapping[str, str | bytes]
"""gRPC metadata: ``(key, value)`` pairs or a mapping. Binary values need a ``-bin`` key."""

DEFAULT_TARGET = "127.0.0.1:50051"
NAMESPACE_KEY = "x-stateward-namespace"
"""Request metadata key selecting the namespace."""
AUTHORIZATION_KEY = "authorization"
"""Request metadata key carrying ``Bearer <token>`` when the client has a token."""
REQUEST_ID_KEY = "x-request-id"
"""Request metadata key with the call's id; the server logs it and returns it on errors."""
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for the channel; with ``cert_file`` and ``key_file`` also mutual TLS."""

    ca_file: str | os.PathLike[str] | None = None
    """PEM root certificates that sign the server's certificate; None uses the system roots."""
    cert_file: str | os.PathLike[str] | None = None
    """PEM client certificate chain, for mutual TLS (requires ``key_file``)."""
    key_file: str | os.PathLike[str] | None = None
    """PEM private key of ``cert_file``."""
    server_name: str | None = None
    """Expected name in the server's certificate, when it differs from the target host."""

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files into channel credentials; UsageError names a bad file."""
        if (self.cert_file is None) != (self.key_file is None):
            raise UsageError("mutual TLS needs both cert_file and key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA"),
            private_key=_read(self.key_file, "key"),
            certificate_chain=_read(self.cert_file, "certificate"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def _printable_token(token: str) -> bool:
    return bool(token) and all("!" <= char <= "~" for char in token)


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the TLS {what} file {str(path)!r}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries with exponential backoff and jitter.

    Every call is safe to retry: reads trivially, mutations because each call
    sends one ``request_id`` with every attempt, and the server answers a
    repeated id with the original result. The call's timeout bounds all
    attempts and waits together.
    """

    max_attempts: int = 4
    """Attempts in total, the first included; 1 disables retries."""
    initial_backoff: float = 0.1
    """Seconds to wait after the first failed attempt, before jitter."""
    max_backoff: float = 5.0
    """Upper bound of any one wait, in seconds."""
    multiplier: float = 2.0
    """Growth of the wait from one attempt to the next."""
    jitter: float = 0.5
    """Fraction of each wait that is randomized: 0 is none, 1 is "full jitter"."""
    retry_on: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )
    """Status codes worth another attempt."""

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries."""
        return cls(max_attempts=1)

    def should_retry(self, code: grpc.StatusCode, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (from 1), failed with ``code``, gets a successor."""
        return attempt < self.max_attempts and code in self.retry_on

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return ceiling * (1.0 - self.jitter * rand())


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between repeated attempts of a client-side loop: exponential, with jitter.

    Used by ``update_state`` between compare-and-set attempts and by ``subscribe``
    between reconnections. Full jitter (the default) spreads competing writers
    apart, which is what ends a run of conflicts quickly.
    """

    initial: float = 0.01
    """Seconds to wait after the first failed attempt, before jitter."""
    maximum: float = 2.0
    """Upper bound of any one wait, in seconds."""
    multiplier: float = 2.0
    """Growth of the wait from one attempt to the next."""
    jitter: float = 1.0
    """Fraction of each wait that is randomized: 0 is none, 1 is "full jitter"."""

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** max(attempt - 1, 0))
        return ceiling * (1.0 - self.jitter * rand())


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Everything ``Client.connect`` and ``AsyncClient.connect`` accept."""

    target: str = DEFAULT_TARGET
    """``host:port`` of a Stateward server (any gRPC target string works)."""
    timeout: float | None = 10.0
    """Default deadline of a call in seconds, retries included; None waits forever.
    Streaming calls (``subscribe_events``) have no default deadline."""
    metadata: MetadataLike = ()
    """Metadata sent with every call, e.g. ``[("authorization", "Bearer ...")]``."""
    namespace: str = "default"
    """Namespace of every call, sent as the ``x-stateward-namespace`` metadata."""
    tls: TLSConfig | None = None
    """TLS settings; None connects in plaintext."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """When and how to retry failed calls."""
    channel_options: Sequence[tuple[str, Any]] = ()
    """Extra gRPC channel arguments; they override the client's defaults."""
    token: str | None = field(default=None, repr=False)
    """Bearer token sent as ``authorization: Bearer <token>`` with every call (streams
    included) when the server has auth on; None sends none. Never shown in reprs or errors."""

    def __post_init__(self) -> None:
        if self.token is not None and not _printable_token(self.token):
            # The value itself is never repeated: it is a secret.
            raise UsageError("the token must be non-empty printable ASCII without spaces")

    def auth_metadata(self) -> list[tuple[str, str]]:
        """``[("authorization", "Bearer <token>")]``, or nothing without a token."""
        return [] if self.token is None else [(AUTHORIZATION_KEY, f"Bearer {self.token}")]

    def grpc_channel_options(self) -> list[tuple[str, Any]]:
        """The channel arguments: generous message limits, TLS name, then the caller's."""
        merged = {
            "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
            "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        }
        if self.tls is not None:
            merged.update(self.tls.channel_options())
        merged.update(dict(self.channel_options))
        return list(merged.items())
