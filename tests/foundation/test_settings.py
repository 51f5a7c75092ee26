from dataclasses import fields
from pathlib import Path

import pytest

from crivline.errors import ConfigError
from crivline.settings import Secret, Settings, configuration_table, redact_url


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert (s.proxy_port, s.control_port, s.syncd_port) == (8080, 8081, 8082)
    assert s.database_url is None
    assert s.reconcile_interval == 5.0
    assert s.data_dir == Path(".crivline")


def test_environment_is_read_and_flags_override() -> None:
    env = {"CRIVLINE_PROXY_PORT": "9000", "CRIVLINE_RECONCILE_INTERVAL": "0.5"}
    s = Settings.from_env(env, proxy_port=9100)
    assert s.proxy_port == 9100
    assert s.reconcile_interval == 0.5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CRIVLINE_PROXY_PORT": "http"}, "CRIVLINE_PROXY_PORT"),
        ({"CRIVLINE_CONTROL_PORT": "70000"}, "CRIVLINE_CONTROL_PORT"),
        ({"CRIVLINE_DATABASE_URL": "mysql://x"}, "CRIVLINE_DATABASE_URL"),
        ({"CRIVLINE_REDIS_URL": "localhost:6379"}, "CRIVLINE_REDIS_URL"),
        ({"CRIVLINE_RECONCILE_INTERVAL": "-1"}, "CRIVLINE_RECONCILE_INTERVAL"),
        ({"CRIVLINE_RECONCILE_INTERVAL": "nan"}, "CRIVLINE_RECONCILE_INTERVAL"),
        ({"CRIVLINE_LOG_LEVEL": "loud"}, "CRIVLINE_LOG_LEVEL"),
        ({"CRIVLINE_PROXY_WORKERS": "0"}, "CRIVLINE_PROXY_WORKERS"),
        ({"CRIVLINE_PROXY_PORT": "8081"}, "CRIVLINE_PROXY_PORT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_secrets_never_show() -> None:
    url = "postgresql://app:hunter2@db.internal:5432/crivline"
    s = Settings.from_env({"CRIVLINE_DATABASE_URL": url, "CRIVLINE_TICKET_SECRET": "s3cr3t-value"})
    assert "hunter2" not in repr(s)
    assert "s3cr3t-value" not in repr(s)
    assert "s3cr3t-value" not in str(s.ticket_secret)
    assert s.require_database() == url
    assert redact_url(url) == "postgresql://app:***@db.internal:5432/crivline"


def test_bad_url_error_does_not_echo_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CRIVLINE_DATABASE_URL": "mysql://root:topsecret@h/db"})
    assert "topsecret" not in str(info.value)


def test_settings_are_frozen_and_round_trip_to_child_env() -> None:
    s = Settings.from_env({"CRIVLINE_REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(AttributeError):
        s.proxy_port = 1  # type: ignore[misc]
    again = Settings.from_env(s.environ())
    assert again == s
    assert isinstance(again.redis_url, Secret)


def test_the_readme_configuration_table_is_the_settings_definition() -> None:
    """Regenerate with `python -m crivline.settings` when this fails."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = configuration_table()
    assert table in readme, "README.md's configuration table drifted from crivline/settings.py"
    documented = {line.split("`")[1] for line in table.splitlines()[2:]}
    assert documented == {f.metadata["env"] for f in fields(Settings)}
    assert {"CRIVLINE_DATA_DIR", "CRIVLINE_HEARTBEAT_TTL", "CRIVLINE_MAX_STREAMS"} <= documented
