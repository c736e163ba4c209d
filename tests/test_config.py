"""Settings: defaults, validation (one line naming the variable), credentials."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.ops.config import (
    OPTIONS,
    OPTIONS_BY_ENV,
    ConfigError,
    ListenAddress,
    Settings,
    parse_listen,
)
from gateway.ops.credentials import RECHECK_SECONDS, Credential

BASE = {"CHERT_SIGNING_SECRET": "s3cret"}


def test_defaults_match_the_spec() -> None:
    settings = Settings.from_env(BASE)
    assert str(settings.chert_api_url) == "https://console.trychert.com"
    assert settings.listen == ListenAddress(host="127.0.0.1", port=8790)
    assert settings.ops_listen == ListenAddress(host="0.0.0.0", port=9102)
    assert settings.max_upload_bytes == 104857600
    assert settings.max_in_flight == 64
    assert settings.spool_max_bytes == 1024**3
    assert settings.client_timeout == 30
    assert settings.drain_seconds == 25
    assert settings.client_tokens is None
    assert settings.event_loop == "asyncio"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GATEWAY_MAX_IN_FLIGHT": "lots"}, "GATEWAY_MAX_IN_FLIGHT"),
        ({"GATEWAY_MAX_IN_FLIGHT": "0"}, "GATEWAY_MAX_IN_FLIGHT"),
        ({"GATEWAY_MAX_UPLOAD_BYTES": "104857601"}, "GATEWAY_MAX_UPLOAD_BYTES"),
        ({"GATEWAY_CLIENT_TIMEOUT": "-1"}, "GATEWAY_CLIENT_TIMEOUT"),
        ({"GATEWAY_DRAIN_SECONDS": "nan"}, "GATEWAY_DRAIN_SECONDS"),
        ({"GATEWAY_LISTEN": "8080"}, "GATEWAY_LISTEN"),
        ({"GATEWAY_LISTEN": "unix:relative.sock"}, "GATEWAY_LISTEN"),
        ({"GATEWAY_OPS_LISTEN": "host:99999"}, "GATEWAY_OPS_LISTEN"),
        ({"CHERT_API_URL": "ftp://x"}, "CHERT_API_URL"),
        ({"CHERT_API_URL": "https://user:pw@x"}, "CHERT_API_URL"),
        ({"GATEWAY_SPOOL_DIR": "/no/such/dir"}, "GATEWAY_SPOOL_DIR"),
        ({"CHERT_SIGNING_SECRET_FILE": "/no/such/file"}, "CHERT_SIGNING_SECRET"),
        ({"CHERT_SIGNING_SECRET": ""}, "CHERT_SIGNING_SECRET"),
        ({"GATEWAY_EVENT_LOOP": "auto"}, "GATEWAY_EVENT_LOOP"),
        ({"GATEWAY_SHA256_THREADS": "many"}, "GATEWAY_SHA256_THREADS"),
        ({"GATEWAY_SHA256_THREADS": "65"}, "GATEWAY_SHA256_THREADS"),
        ({"GATEWAY_SHA256_THREADS": "-1"}, "GATEWAY_SHA256_THREADS"),
        ({"GATEWAY_IDEMPOTENCY_URL": "http://redis:6379"}, "GATEWAY_IDEMPOTENCY_URL"),
        ({"GATEWAY_IDEMPOTENCY_URL": "redis://"}, "GATEWAY_IDEMPOTENCY_URL"),
        ({"GATEWAY_IDEMPOTENCY_URL": "redis://redis/cache"}, "GATEWAY_IDEMPOTENCY_URL"),
        ({"GATEWAY_IDEMPOTENCY_URL": "redis://redis:99999"}, "GATEWAY_IDEMPOTENCY_URL"),
        ({"GATEWAY_IDEMPOTENCY_URL": "redis://redis?db=x"}, "GATEWAY_IDEMPOTENCY_URL"),
        (
            {"GATEWAY_IDEMPOTENCY_URL": "rediss://redis?ssl_cert_reqs=none"},
            "GATEWAY_IDEMPOTENCY_URL",
        ),
        (
            {"GATEWAY_IDEMPOTENCY_URL": "rediss://redis?ssl_check_hostname=false"},
            "GATEWAY_IDEMPOTENCY_URL",
        ),
        ({"GATEWAY_IDEMPOTENCY_TTL": "0"}, "GATEWAY_IDEMPOTENCY_TTL"),
        ({"GATEWAY_IDEMPOTENCY_TTL": "1e12"}, "GATEWAY_IDEMPOTENCY_TTL"),
        ({"GATEWAY_DEPLOYMENT": "a:b"}, "GATEWAY_DEPLOYMENT"),
    ],
)
def test_a_bad_value_names_its_variable_in_one_line(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, **env})
    message = str(caught.value)
    assert message.startswith(variable + ":")
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pa55word@redis.internal:6380/3",
        "rediss://default:pa55word@redis.internal/0?ssl_ca_certs=/etc/ca.pem",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_redis_urls_redis_py_reads_are_kept(url: str) -> None:
    settings = Settings.from_env({**BASE, "GATEWAY_IDEMPOTENCY_URL": url})
    assert settings.idempotency_url == url
    assert settings.idempotency_ttl == 24 * 3600
    assert settings.deployment == "chert-gateway"


def test_the_redis_url_never_shows_in_the_settings_repr() -> None:
    url = "redis://:pa55word@redis:6379/0"
    assert "pa55word" not in repr(Settings.from_env({**BASE, "GATEWAY_IDEMPOTENCY_URL": url}))


def test_a_bad_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "GATEWAY_IDEMPOTENCY_URL": "redis://:pa55word@redis:99999"})
    assert "pa55word" not in str(caught.value)


def test_the_secret_is_required_unless_simulating() -> None:
    with pytest.raises(ConfigError, match="CHERT_SIGNING_SECRET: required"):
        Settings.from_env({})
    assert Settings.from_env({}, simulate=True).signing_secret is None


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("a")
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({**BASE, "CHERT_SIGNING_SECRET_FILE": str(secret_file)})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:8080", ListenAddress(host="127.0.0.1", port=8080)),
        ("[::1]:0", ListenAddress(host="::1", port=0)),
        (":9102", ListenAddress(host="0.0.0.0", port=9102)),
        ("unix:/run/gw/api.sock", ListenAddress(path="/run/gw/api.sock")),
    ],
)
def test_listen_addresses(raw: str, expected: ListenAddress) -> None:
    assert parse_listen(raw) == expected


def test_every_option_has_a_distinct_flag() -> None:
    flags = [option.flag for option in OPTIONS]
    assert len(set(flags)) == len(flags)


def test_a_secret_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("first\n")
    credential = Credential(path=path)
    assert credential.current(now=0.0) == "first"
    path.write_text("second\n")
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse clocks
    assert credential.current(now=0.0) == "first"  # not re-checked within the interval
    assert credential.current(now=RECHECK_SECONDS) == "second"


def test_a_vanished_secret_file_keeps_the_last_good_value(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("kept")
    credential = Credential(path=path)
    path.unlink()
    assert credential.current(now=10.0) == "kept"


def test_tokens_match_any_listed_value_and_never_show_in_repr() -> None:
    tokens = Credential(inline="alpha, beta\ngamma", many=True)
    assert tokens.matches("beta", now=0.0)
    assert not tokens.matches("delta", now=0.0)
    assert not tokens.matches("", now=0.0)
    assert "alpha" not in repr(tokens)


@pytest.mark.parametrize(("raw", "kept"), [("auto", None), ("0", 0), ("4", 4), ("", None)])
def test_hashing_threads_are_auto_or_a_number(raw: str, kept: int | None) -> None:
    assert Settings.from_env({**BASE, "GATEWAY_SHA256_THREADS": raw}).sha256_threads == kept


def test_the_clients_default_is_the_gateways_default_listener() -> None:
    from gateway.client.calls import DEFAULT_URL

    assert f"http://{OPTIONS_BY_ENV['GATEWAY_LISTEN'].default}" == DEFAULT_URL
    assert not DEFAULT_URL.endswith(":8080")  # the port the app beside it usually has
