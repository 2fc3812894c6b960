"""Server settings (server/config.py): flags > STATEWARD_* env > TOML file > defaults."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

import pytest

from stateward.server import config
from stateward.server.config import Settings
from stateward.server.main import loop_factory


def parse_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(list(argv))


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "stateward.toml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    settings = config.load(parse_flags(), environ={})
    assert settings == Settings()
    assert settings.listen == "127.0.0.1:50051"
    assert settings.data_dir == "./stateward-data"
    assert settings.migrate is True


def test_no_args_at_all_uses_the_given_environment() -> None:
    assert config.load(None, environ={"STATEWARD_LISTEN": "0.0.0.0:1"}).listen == "0.0.0.0:1"


def test_precedence_flags_then_env_then_file_then_defaults(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'listen = "file:1"\ndata_dir = "/file"\ngrace_period = 3\nlog_format = "json"\n',
    )
    environ = {"STATEWARD_LISTEN": "env:2", "STATEWARD_DATA_DIR": "/env"}
    settings = config.load(parse_flags("--config", path, "--listen", "flag:3"), environ=environ)
    assert settings.listen == "flag:3"  # flag beats env and file
    assert settings.data_dir == "/env"  # env beats file
    assert settings.grace_period == 3.0  # file beats default
    assert settings.log_format == "json"
    assert settings.log_level == "INFO"  # default


def test_the_file_can_come_from_the_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[stateward]\nread_threads = 7\n")
    settings = config.load(parse_flags(), environ={"STATEWARD_CONFIG": path})
    assert settings.read_threads == 7


def test_the_config_flag_beats_the_config_env(tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text("read_threads = 1\n")
    second = tmp_path / "b.toml"
    second.write_text("read_threads = 2\n")
    settings = config.load(
        parse_flags("--config", str(second)), environ={"STATEWARD_CONFIG": str(first)}
    )
    assert settings.read_threads == 2


def test_values_are_coerced_to_their_types(tmp_path: Path) -> None:
    environ = {
        "STATEWARD_GRACE_PERIOD": "2.5",
        "STATEWARD_READ_THREADS": "3",
        "STATEWARD_MIGRATE": "off",
    }
    settings = config.load(parse_flags("--max-message-bytes", "1024"), environ=environ)
    assert settings.grace_period == 2.5 and type(settings.grace_period) is float
    assert settings.read_threads == 3 and type(settings.read_threads) is int
    assert settings.max_message_bytes == 1024
    assert settings.migrate is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_spellings(text: str, expected: bool) -> None:
    assert config.load(parse_flags(), environ={"STATEWARD_MIGRATE": text}).migrate is expected


def test_boolean_flags() -> None:
    assert config.load(parse_flags("--no-migrate"), environ={}).migrate is False
    assert config.load(parse_flags("--migrate"), environ={"STATEWARD_MIGRATE": "0"}).migrate is True


def test_toml_booleans_and_numbers(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "migrate = false\ngrace_period = 4\nmax_message_bytes = 2048\n")
    settings = config.load(parse_flags("--config", path), environ={})
    assert settings.migrate is False
    assert settings.grace_period == 4.0
    assert settings.max_message_bytes == 2048


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("GRACE_PERIOD", "soon", "grace_period: expected float"),
        ("READ_THREADS", "4.5", "read_threads: expected int"),
        ("MAX_MESSAGE_BYTES", "8MiB", "max_message_bytes: expected int"),
        ("MIGRATE", "maybe", "migrate: expected true or false"),
        ("LOG_LEVEL", "LOUD", "log_level: must be one of DEBUG, INFO, WARNING, ERROR"),
        ("LOG_FORMAT", "xml", "log_format: must be one of text, json"),
        ("SQLITE_SYNCHRONOUS", "OFF", "sqlite_synchronous: must be one of FULL, NORMAL"),
    ],
)
def test_bad_environment_values_name_the_setting(name: str, value: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.load(parse_flags(), environ={f"STATEWARD_{name}": value})
    assert words in str(caught.value)


def test_bad_file_values_name_the_setting(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'read_threads = "many"\n')
    with pytest.raises(ValueError, match="read_threads: expected int"):
        config.load(parse_flags("--config", path), environ={})


def test_bad_flag_values_name_the_setting() -> None:
    with pytest.raises(ValueError, match="grace_period: expected float"):
        config.load(parse_flags("--grace-period", "later"), environ={})


def test_flag_choices_are_enforced_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_flags("--log-level", "LOUD")
    assert "--log-level" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["listen_addr = 'x'\n", "[stateward]\nlisten = 'x'\nbogus = 1\n"])
def test_unknown_file_keys_are_refused(tmp_path: Path, text: str) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        config.load(parse_flags("--config", path), environ={})
    message = str(caught.value)
    assert path in message and "unknown settings" in message
    assert ("listen_addr" in message) or ("bogus" in message)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        config.load(parse_flags("--config", str(tmp_path / "absent.toml")), environ={})


def test_malformed_toml_is_a_value_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "listen = \n")
    with pytest.raises(ValueError):
        config.load(parse_flags("--config", path), environ={})


def test_unrelated_environment_variables_are_ignored() -> None:
    assert (
        config.load(parse_flags(), environ={"STATEWARD_NOT_A_SETTING": "1", "PATH": "/x"})
        == Settings()
    )


def test_every_setting_has_a_flag_an_env_name_and_help() -> None:
    flags = parse_flags()
    for f in dataclasses.fields(Settings):
        assert hasattr(flags, f.name), f.name
        assert f.metadata.get("help"), f.name
        environ = {f"STATEWARD_{f.name.upper()}": str(f.default)}
        assert getattr(config.load(parse_flags(), environ=environ), f.name) == f.default


def test_resolved_urls_default_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'stateward.db'}"
    assert settings.resolved_blob_url == f"file://{tmp_path.resolve() / 'checkpoints'}"
    explicit = Settings(data_dir=str(tmp_path), database_url="postgresql+psycopg://x/y")
    assert explicit.resolved_database_url == "postgresql+psycopg://x/y"


def test_event_loop_asyncio_is_the_standard_loop() -> None:
    loop = loop_factory("asyncio")()
    try:
        assert type(loop).__module__.startswith("asyncio.")
    finally:
        loop.close()


def test_event_loop_uvloop_when_installed_else_a_clear_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uvloop = pytest.importorskip("uvloop")
    for choice in ("auto", "uvloop"):
        loop = loop_factory(choice)()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(config.ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")
