"""The client library and the CLI against a server with auth on: ``token=`` (sync and
async, unary calls and streams) and ``--token`` / ``STATEWARD_TOKEN``. SQLite only: auth
is decided from metadata before any handler touches the database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stateward.client import AsyncClient, Client
from stateward.client.cli import main
from stateward.client.errors import PermissionDenied, Unauthenticated, UsageError
from stateward.server.config import Settings
from stateward.server.security.auth import generate_token, hash_token
from tests.support.server import ServerThread

NAMESPACE = "team-a"


@pytest.fixture(scope="module")
def token() -> str:
    return generate_token()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, token: str) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("auth")
    tokens = root / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nname = "writer-a"\nhash = "{hash_token(token)}"\n'
        f'role = "writer"\nnamespaces = ["{NAMESPACE}"]\n'
    )
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(root / "data"),
        database_url=f"sqlite:///{root / 'stateward.db'}",
        grace_period=0.2,
        log_level="WARNING",
        auth_tokens_file=str(tokens),
    )
    server = ServerThread(settings)
    yield server.start()
    server.close()


def test_sync_client_sends_its_token_on_calls_and_streams(
    guarded: ServerThread, token: str
) -> None:
    with Client.connect(guarded.target, namespace=NAMESPACE, token=token) as client:
        client.create_agent("sync-1", "planner")
        assert client.get_agent("sync-1").agent_id == "sync-1"
        stream = client.subscribe_events(agent_id="sync-1", timeout=10)
        try:
            first = next(iter(stream))
        finally:
            stream.close()
        assert first.type == "agent.created"
    assert token not in repr(client) and token not in repr(client.options)


def test_sync_client_without_or_with_a_wrong_token_is_refused(
    guarded: ServerThread, token: str
) -> None:
    with Client.connect(guarded.target, namespace=NAMESPACE) as anonymous:
        with pytest.raises(Unauthenticated):
            anonymous.list_agents()
    wrong = generate_token()
    with Client.connect(guarded.target, namespace=NAMESPACE, token=wrong) as client:
        with pytest.raises(Unauthenticated) as refused:
            client.list_agents()
    assert wrong not in str(refused.value)
    with Client.connect(guarded.target, namespace="team-b", token=token) as client:
        with pytest.raises(PermissionDenied):
            client.list_agents()


def test_a_token_that_cannot_be_sent_is_refused_without_echoing_it() -> None:
    with pytest.raises(UsageError) as refused:
        Client.connect("127.0.0.1:1", token="secret with spaces")
    assert "secret" not in str(refused.value)


async def test_async_client_sends_its_token_on_calls_and_streams(
    guarded: ServerThread, token: str
) -> None:
    async with AsyncClient.connect(guarded.target, namespace=NAMESPACE, token=token) as client:
        await client.create_agent("async-1", "planner")
        assert (await client.get_agent("async-1")).agent_id == "async-1"
        async for event in client.subscribe_events(agent_id="async-1", timeout=10):
            assert event.type == "agent.created"
            break
    async with AsyncClient.connect(guarded.target, namespace=NAMESPACE) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.list_agents()


def test_cli_takes_the_token_from_the_environment_and_never_prints_it(
    guarded: ServerThread,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--target", guarded.target, "--namespace", NAMESPACE, "--timeout", "5"]
    monkeypatch.setenv("STATEWARD_TOKEN", token)
    assert main([*base, "agents", "create", "cli-1", "--type", "planner"]) == 0
    assert main([*base, "--json", "agents", "get", "cli-1"]) == 0
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert '"cli-1"' in out and token not in out + err

    wrong = generate_token()
    monkeypatch.setenv("STATEWARD_TOKEN", wrong)
    assert main([*base, "agents", "list"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and wrong not in out + err

    monkeypatch.delenv("STATEWARD_TOKEN")
    assert main([*base, "--token", token, "agents", "list"]) == 0
    assert "cli-1" in capsys.readouterr().out
