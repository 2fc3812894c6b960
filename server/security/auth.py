"""Bearer tokens: the hashed token file, and who may call what in which namespace.

The token file is TOML and holds hashes only (``stateward token hash`` makes one)::

    [[tokens]]
    name = "billing-agents"          # shown in logs and errors; never the token
    hash = "hmac-sha256:<salt>:<digest>"
    role = "writer"                  # reader | writer | admin
    namespaces = ["billing"]         # or "*" for every namespace

A hash is HMAC-SHA256 keyed with a random per-token salt. Tokens are 256-bit random
strings, so a fast keyed hash is enough (no password-style stretching is needed, and
none is paid per call); a leaked file reveals no token and no two files share
digests. Checking a token costs one HMAC per entry; tokens already seen are then
found by their SHA-256 in a small in-memory map, so steady traffic pays one hash.

The file is read at start (an unusable file stops the server) and again on SIGHUP;
a reload that fails keeps the tokens in force and logs why.

Decisions are made before any handler runs, from the method name and the request
metadata only: a token not granted namespace B gets PERMISSION_DENIED for every call
addressed to B, whether or not the record it names exists, so probing B tells nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import signal
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stateward.server.config import ConfigError
from stateward.server.domain.validation import NAMESPACE_PATTERN
from stateward.server.rpc.context import DEFAULT_NAMESPACE, NAMESPACE_KEY
from stateward.server.security.policy import Role, rule_for

log = logging.getLogger(__name__)

SCHEME = "hmac-sha256"
TOKEN_PREFIX = "swt_"
MIN_TOKEN_LENGTH = 24
AUTHORIZATION_KEY = "authorization"
_ROLES = {role.label: role for role in Role}
_ENTRY_KEYS = {"name", "hash", "role", "namespaces"}
_SEEN_LIMIT = 4096


class TokenFileError(ConfigError):
    """The token file cannot be used; the message names the file and the entry."""


def generate_token() -> str:
    """A new random bearer token (256 bits, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The string to store in the token file for ``token``: ``hmac-sha256:<salt>:<digest>``."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"a token must have at least {MIN_TOKEN_LENGTH} characters; "
            "use `stateward token new` for a random one"
        )
    salt = secrets.token_bytes(16)
    digest = hmac.new(salt, token.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME}:{salt.hex()}:{digest}"


def _parse_hash(stored: str) -> tuple[bytes, bytes]:
    scheme, _, rest = stored.partition(":")
    salt_hex, _, digest_hex = rest.partition(":")
    try:
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        salt = digest = b""
    if scheme != SCHEME or len(salt) < 16 or len(digest) != 32:
        raise ValueError(
            f"must look like {SCHEME}:<salt hex>:<digest hex>, as printed by "
            "`stateward token hash` (the file stores hashes, never tokens)"
        )
    return salt, digest


def verify_token(token: str, stored: str) -> bool:
    salt, digest = _parse_hash(stored)
    return hmac.compare_digest(hmac.new(salt, token.encode(), hashlib.sha256).digest(), digest)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    namespaces: frozenset[str] | None  # None: every namespace
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def matches(self, token: bytes) -> bool:
        return hmac.compare_digest(hmac.new(self.salt, token, hashlib.sha256).digest(), self.digest)

    def grants(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


class TokenTable:
    """The tokens of one version of the file; replaced whole on reload."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self.entries = entries
        self._seen: dict[bytes, TokenEntry] = {}  # sha256(token) -> entry, for tokens that matched

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, token: str) -> TokenEntry | None:
        raw = token.encode()
        key = hashlib.sha256(raw).digest()
        entry = self._seen.get(key)
        if entry is not None:
            return entry
        for candidate in self.entries:  # first match wins
            if candidate.matches(raw):
                if len(self._seen) >= _SEEN_LIMIT:
                    self._seen.clear()
                self._seen[key] = candidate
                return candidate
        return None


def _entry(where: str, raw: Any) -> TokenEntry:
    if not isinstance(raw, dict):
        raise TokenFileError(f"{where}: expected a table with name, hash, role and namespaces")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise TokenFileError(f"{where}: unknown keys {', '.join(unknown)}")
    missing = sorted(_ENTRY_KEYS - set(raw))
    if missing:
        raise TokenFileError(f"{where}: missing {', '.join(missing)}")
    name, stored, role, namespaces = raw["name"], raw["hash"], raw["role"], raw["namespaces"]
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable():
        raise TokenFileError(f"{where}: name must be 1 to 64 printable characters")
    try:
        salt, digest = _parse_hash(stored if isinstance(stored, str) else "")
    except ValueError as error:
        raise TokenFileError(f"{where} ({name}): hash {error}") from None
    if role not in _ROLES:
        raise TokenFileError(f"{where} ({name}): role must be one of {', '.join(_ROLES)}")
    granted: frozenset[str] | None
    if namespaces == "*" or namespaces == ["*"]:
        granted = None
    elif (
        isinstance(namespaces, list) and namespaces and all(isinstance(n, str) for n in namespaces)
    ):
        bad = [n for n in namespaces if not NAMESPACE_PATTERN.fullmatch(n)]
        if bad:
            raise TokenFileError(
                f"{where} ({name}): not a namespace name: {', '.join(map(repr, bad))}"
            )
        granted = frozenset(namespaces)
    else:
        raise TokenFileError(
            f'{where} ({name}): namespaces must be "*" or a non-empty list of names'
        )
    return TokenEntry(name, _ROLES[role], granted, salt, digest)


def load_tokens(path: str) -> TokenTable:
    """Read and check the token file; raises TokenFileError naming the problem."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise TokenFileError(
            f"{path}: cannot read the token file: {error.strerror or error}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise TokenFileError(f"{path}: not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"tokens"})
    if unknown:
        raise TokenFileError(
            f"{path}: unknown keys {', '.join(unknown)} (expected [[tokens]] tables)"
        )
    raw_entries = document.get("tokens", [])
    if not isinstance(raw_entries, list):
        raise TokenFileError(f"{path}: tokens must be an array of tables ([[tokens]])")
    entries = [_entry(f"{path}: tokens[{i}]", raw) for i, raw in enumerate(raw_entries)]
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TokenFileError(f"{path}: duplicate token names {', '.join(duplicates)}")
    return TokenTable(entries)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one call. ``code`` is OK, UNAUTHENTICATED or PERMISSION_DENIED."""

    code: str
    reason: str = ""
    message: str = ""
    principal: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.code == "OK"


def _unauthenticated(reason: str, message: str) -> Decision:
    return Decision("UNAUTHENTICATED", reason, message)


def _denied(entry: TokenEntry, reason: str, message: str, **metadata: str) -> Decision:
    return Decision("PERMISSION_DENIED", reason, message, entry.name, metadata)


class Authorizer:
    """Authenticates bearer tokens and checks role and namespace grants."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.table = load_tokens(path)
        log.info("auth tokens loaded", extra={"tokens": len(self.table), "path": path})

    def reload(self) -> bool:
        """Re-read the file; on failure keep the tokens in force. Returns whether it worked."""
        try:
            table = load_tokens(self.path)
        except TokenFileError as error:
            log.error("auth tokens NOT reloaded; the previous tokens stay in force: %s", error)
            return False
        self.table = table  # one reference swap: calls see the old or the new table, whole
        log.info("auth tokens reloaded", extra={"tokens": len(table), "path": self.path})
        return True

    def authorize(self, full_method: str, metadata: Iterable[tuple[str, Any]] | None) -> Decision:
        credentials: list[Any] = []
        namespaces: list[Any] = []
        for key, value in metadata or ():
            if key == AUTHORIZATION_KEY:
                credentials.append(value)
            elif key == NAMESPACE_KEY:
                namespaces.append(value)
        if not credentials:
            return _unauthenticated(
                "TOKEN_MISSING",
                "this server requires a token: send `authorization: Bearer <token>` metadata",
            )
        scheme, _, token = str(credentials[0]).partition(" ")
        if len(credentials) > 1 or scheme.lower() != "bearer" or not token.strip():
            return _unauthenticated(
                "TOKEN_MALFORMED", "send exactly one `authorization: Bearer <token>` metadata entry"
            )
        entry = self.table.lookup(token.strip())
        if entry is None:
            return _unauthenticated(
                "TOKEN_INVALID", "the bearer token is not valid (unknown or revoked)"
            )
        rule = rule_for(full_method)
        method = full_method.rpartition("/")[2]
        if entry.role < rule.role:
            return _denied(
                entry,
                "ROLE_NOT_GRANTED",
                f"token {entry.name!r} has role {entry.role.label}; "
                f"{method} needs {rule.role.label}",
                required_role=rule.role.label,
                role=entry.role.label,
            )
        if rule.every_namespace and entry.namespaces is not None:
            return _denied(
                entry,
                "NAMESPACE_NOT_GRANTED",
                f'{method} acts on every namespace: it needs a token granted all namespaces ("*")',
            )
        if not rule.namespaced:
            return Decision("OK", principal=entry.name)
        # Every namespace value must be granted, so whichever one a handler reads is covered.
        for namespace in namespaces or [DEFAULT_NAMESPACE]:
            if not isinstance(namespace, str) or not entry.grants(namespace):
                shown = namespace if isinstance(namespace, str) else "<binary>"
                return _denied(
                    entry,
                    "NAMESPACE_NOT_GRANTED",
                    f"token {entry.name!r} is not granted namespace {shown[:63]!r}",
                    namespace=shown[:63],
                )
        return Decision("OK", principal=entry.name)


def install_sighup(loop: asyncio.AbstractEventLoop, authorizer: Authorizer) -> None:
    """Reload the token file on SIGHUP (main thread only, like every signal handler)."""
    loop.add_signal_handler(signal.SIGHUP, authorizer.reload)
