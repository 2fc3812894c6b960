"""How one method definition serves both clients.

Each RPC method is written once, in a mixin of ``BaseClient``, as a *builder*:
a plain method that takes the caller's arguments and returns a
:class:`Prepared` (the request message, how to convert the response, the
request_id, per-call timeout and metadata). Nothing is sent there.

The decorators below turn a builder into a descriptor. Looked up on a
``Client`` it becomes a method that sends the prepared call and returns the
converted result; on an ``AsyncClient``, a coroutine method doing the same
with ``await``. Only sending differs, and only the clients know how to send::

    class LifecycleCalls:
        @unary(LIFECYCLE, "GetAgent")
        def get_agent(self, agent_id: str, *, timeout=None, metadata=()) -> Prepared[Agent]:
            return Prepared(GetAgentRequest(agent_id=agent_id), _agent, ...)

    client.get_agent("a1")              # Client: Agent
    await async_client.get_agent("a1")  # AsyncClient: Agent

Type checkers see the builder's parameters on both, with the right return
type (``R``, a coroutine of ``R``, an iterator or an async iterator).

Methods made of several calls (``update_state``'s read-modify-write loop, a
tracked task's heartbeats) are written once too, as a *flow*: a generator that
yields :class:`Call` and :class:`Sleep` steps and receives each call's result
(or has its error thrown in). ``@flow`` binds it like ``@unary``; the sync
client drives it with blocking calls, the async one with ``await``::

    @flow
    def update_state(self, agent_id, fn) -> Flow[StateVersion]:
        current = yield StateCalls.get_state.step(self, agent_id)
        ...
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    NamedTuple,
    ParamSpec,
    Self,
    TypeVar,
    overload,
)

from ._options import MetadataLike
from .models import Page

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .sync import Client

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Rpc(NamedTuple):
    """One RPC: the ``Stubs`` attribute of its service and the method name."""

    service: str
    method: str


class Unset(Enum):
    """Type of :data:`UNSET`."""

    UNSET = "UNSET"


UNSET = Unset.UNSET
"""Default of parameters where None is a value: "leave this field alone"."""

LIFECYCLE = "lifecycle"
STATE = "state"
EXECUTION = "execution"
RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Prepared(Generic[R]):
    """A call ready to send: built once, sent as many times as retries need."""

    request: Any
    """The request message (with its request_id, for mutations)."""
    convert: Callable[[Any], R]
    """Turns the response message (or each streamed one) into what the caller gets."""
    request_id: str | None = None
    """The idempotency key inside ``request``, reported on errors."""
    timeout: float | None = None
    """Deadline of the whole call in seconds, retries included. None means the
    client's default for unary calls and no deadline for streams."""
    metadata: MetadataLike = ()
    """Metadata for this call, on top of the client's."""

    def with_page_token(self, token: str) -> Prepared[R]:
        """The same listing, continued from ``token``."""
        request = type(self.request)()
        request.CopyFrom(self.request)
        request.page_token = token
        return replace(self, request=request)


@dataclass(frozen=True, slots=True)
class Call:
    """A flow step: send one unary call. The flow receives the converted result,
    or the ``StatewardError`` it raised is thrown into the flow."""

    rpc: Rpc
    prepared: Prepared[Any]


@dataclass(frozen=True, slots=True)
class Sleep:
    """A flow step: wait ``seconds`` (a driver may wake it early, see ``_tracking``)."""

    seconds: float


Step = Call | Sleep
Flow = Generator[Step, Any, R]
"""A multi-call method written once: yields steps, returns the method's result."""


class _Described(Generic[P, R]):
    """Shared by the descriptors: the builder and its documentation."""

    def __init__(self, build: Callable[Concatenate[Any, P], Any]) -> None:
        self.build = build
        self.__module__ = build.__module__
        self.__name__ = build.__name__
        self.__qualname__ = build.__qualname__
        self.__doc__ = build.__doc__
        self.__wrapped__ = build
        params = list(inspect.signature(build).parameters.values())[1:]  # without self
        self.__signature__ = inspect.Signature(params)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.__name__ = name
        self.__qualname__ = f"{owner.__qualname__}.{name}"

    def describe(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """Give a bound method this operation's name, docs and signature (for help())."""
        method.__name__ = self.__name__
        method.__qualname__ = self.__qualname__
        method.__doc__ = self.__doc__
        method.__wrapped__ = self.build  # type: ignore[attr-defined]
        method.__signature__ = self.__signature__  # type: ignore[attr-defined]
        return method


class _Operation(_Described[P, R]):
    """A descriptor of one RPC: the builder and the RPC it prepares."""

    def __init__(self, rpc: Rpc, build: Callable[Concatenate[Any, P], Prepared[R]]) -> None:
        super().__init__(build)
        self.rpc = rpc
        self.build: Callable[Concatenate[Any, P], Prepared[R]] = build


class Unary(_Operation[P, R]):
    """A unary RPC: ``Client`` returns ``R``, ``AsyncClient`` a coroutine of ``R``."""

    def step(self, client: Any, /, *args: P.args, **kwargs: P.kwargs) -> Call:
        """This call as a flow step (its result comes back from the ``yield``)."""
        return Call(self.rpc, self.build(client, *args, **kwargs))

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: Client, owner: type[Any] | None = None) -> Callable[P, R]: ...
    @overload
    def __get__(
        self, obj: AsyncClient, owner: type[Any] | None = None
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return self if obj is None else obj._bind_unary(self)


class ServerStream(_Operation[P, R | None], Generic[P, R]):
    """A server-streaming RPC: an iterator (or async iterator) of converted items.

    The builder's ``convert`` returns None for messages the caller never sees
    (keepalives).
    """

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: Client, owner: type[Any] | None = None) -> Callable[P, Iterator[R]]: ...
    @overload
    def __get__(
        self, obj: AsyncClient, owner: type[Any] | None = None
    ) -> Callable[P, AsyncIterator[R]]: ...
    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return self if obj is None else obj._bind_stream(self)


class Pages(_Operation[P, Page[T]]):
    """Every item of a paged listing, fetching pages as the caller iterates."""

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: Client, owner: type[Any] | None = None) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(
        self, obj: AsyncClient, owner: type[Any] | None = None
    ) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return self if obj is None else obj._bind_pages(self)


class FlowMethod(_Described[P, R]):
    """Several calls written once as a :data:`Flow`: ``Client`` returns ``R``,
    ``AsyncClient`` a coroutine of ``R``."""

    build: Callable[Concatenate[Any, P], Flow[R]]

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: Client, owner: type[Any] | None = None) -> Callable[P, R]: ...
    @overload
    def __get__(
        self, obj: AsyncClient, owner: type[Any] | None = None
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return self if obj is None else obj._bind_flow(self)


def flow(build: Callable[Concatenate[Any, P], Flow[R]]) -> FlowMethod[P, R]:
    """Declare a generator method as a flow of calls (see the module docstring)."""
    return FlowMethod(build)


def unary(
    service: str, method: str
) -> Callable[[Callable[Concatenate[Any, P], Prepared[R]]], Unary[P, R]]:
    """Declare a builder method as the unary RPC ``service.method``."""

    def decorate(build: Callable[Concatenate[Any, P], Prepared[R]]) -> Unary[P, R]:
        return Unary(Rpc(service, method), build)

    return decorate


def server_stream(
    service: str, method: str
) -> Callable[[Callable[Concatenate[Any, P], Prepared[R | None]]], ServerStream[P, R]]:
    """Declare a builder method as the server-streaming RPC ``service.method``."""

    def decorate(build: Callable[Concatenate[Any, P], Prepared[R | None]]) -> ServerStream[P, R]:
        return ServerStream(Rpc(service, method), build)

    return decorate


def pages(listing: Unary[P, Page[T]], doc: str) -> Pages[P, T]:
    """An ``iter_*`` method over every page of the ``list_*`` method ``listing``."""
    iterate = Pages(listing.rpc, listing.build)
    iterate.__doc__ = doc
    return iterate
