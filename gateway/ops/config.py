"""Settings: every tunable of the gateway, its default and its validation.

One table (`OPTIONS`) names each setting's environment variable, its `serve`
flag, its default and its help; `Settings.from_env` reads a mapping through
it, so the CLI and the environment cannot drift apart. A bad value stops
start-up with one line naming the variable and why (`ConfigError`).
"""

from __future__ import annotations

import re
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarl import URL

from gateway.chert import tls
from gateway.ops import credentials
from gateway.ops.credentials import Credential

# Chert's own per-file limit (chert-api/attachments.md): nothing larger can
# ever be sent, so a larger gateway limit would only waste the caller's bytes.
CHERT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024


class ConfigError(Exception):
    """One line: the variable and what is wrong with it."""


@dataclass(frozen=True)
class ListenAddress:
    """`host:port` or `unix:/path`."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Option:
    env: str
    default: str | None
    help: str
    metavar: str = "VALUE"

    @property
    def flag(self) -> str:
        name = self.env.removeprefix("GATEWAY_").lower().replace("_", "-")
        return f"--{name}"


OPTIONS: tuple[Option, ...] = (
    Option("CHERT_API_URL", "https://console.trychert.com", "Chert base URL", "URL"),
    Option(
        "CHERT_SIGNING_SECRET",
        None,
        "Chert bearer secret (prefer the _FILE form: flags show in `ps`)",
        "SECRET",
    ),
    Option(
        "CHERT_SIGNING_SECRET_FILE",
        None,
        "file holding the Chert secret; re-read when it changes",
        "PATH",
    ),
    Option(
        "CHERT_CA_FILE",
        None,
        "extra PEM CA bundle trusted for Chert's TLS (verification is never off)",
        "PATH",
    ),
    Option("CHERT_TENANT", None, "sent as x-chert-tenant on content downloads", "SLUG"),
    Option(
        "CHERT_TIMEOUT",
        "30",
        "seconds to wait for Chert to answer, or to take the next chunk of an upload",
        "SECONDS",
    ),
    Option("GATEWAY_LISTEN", "127.0.0.1:8790", "API listener: host:port or unix:/path", "ADDR"),
    Option(
        "GATEWAY_OPS_LISTEN", "0.0.0.0:9102", "ops listener (/metrics, /healthz, /readyz)", "ADDR"
    ),
    Option(
        "GATEWAY_MAX_UPLOAD_BYTES",
        str(CHERT_MAX_UPLOAD_BYTES),
        "larger bodies get 413 (at most Chert's 100 MB)",
        "BYTES",
    ),
    Option("GATEWAY_MAX_IN_FLIGHT", "64", "concurrent uploads; beyond it 503 + Retry-After", "N"),
    Option(
        "GATEWAY_SPOOL_DIR",
        None,
        "disk spool for bodies of unknown length (default: system temp dir)",
        "PATH",
    ),
    Option("GATEWAY_SPOOL_MAX_BYTES", str(1024**3), "total bytes the spool may hold", "BYTES"),
    Option(
        "GATEWAY_CLIENT_TOKENS",
        None,
        "comma-separated bearer tokens callers must present, each optionally name:token",
        "TOKENS",
    ),
    Option(
        "GATEWAY_CLIENT_TOKENS_FILE",
        None,
        "file of client tokens (comma or newline separated)",
        "PATH",
    ),
    Option(
        "GATEWAY_CALLER_MAX_IN_FLIGHT",
        None,
        "uploads each named caller (name:token) may run at once; beyond it 429",
        "N",
    ),
    Option(
        "GATEWAY_CALLER_RATE",
        None,
        "uploads per second each named caller may start (token bucket); beyond it 429",
        "PER_SECOND",
    ),
    Option(
        "GATEWAY_IDEMPOTENCY_URL",
        None,
        "redis://, rediss:// or unix:// URL of a Redis that every replica shares for "
        "idempotency keys (default: each process keeps its own)",
        "URL",
    ),
    Option(
        "GATEWAY_IDEMPOTENCY_TTL",
        str(24 * 3600),
        "seconds a completed request's answer is replayed for its Idempotency-Key",
        "SECONDS",
    ),
    Option(
        "GATEWAY_DEPLOYMENT",
        "chert-gateway",
        "this deployment's name: its replicas share idempotency keys in Redis, "
        "other deployments on the same Redis do not",
        "NAME",
    ),
    Option(
        "GATEWAY_CLIENT_TIMEOUT",
        "30",
        "longest wait for the next body chunk from a caller",
        "SECONDS",
    ),
    Option(
        "GATEWAY_DRAIN_SECONDS", "25", "how long SIGTERM waits for in-flight uploads", "SECONDS"
    ),
    Option("GATEWAY_SHA256", "true", "compute each upload's SHA-256 for the answer", "BOOL"),
    Option(
        "GATEWAY_SHA256_THREADS",
        "auto",
        "threads that hash beside the event loop: auto (one less than the CPUs the process "
        "may use, at most 4), or a number (0: on the event loop)",
        "N",
    ),
    Option(
        "GATEWAY_EVENT_LOOP",
        "asyncio",
        "asyncio, or uvloop (pip install 'chert-gateway[uvloop]'; slower here, see "
        "docs/performance.md)",
        "LOOP",
    ),
)

OPTIONS_BY_ENV = {option.env: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    chert_api_url: URL
    signing_secret: Credential | None
    ca_file: Path | None
    tenant: str | None
    chert_timeout: float
    listen: ListenAddress
    ops_listen: ListenAddress
    max_upload_bytes: int
    max_in_flight: int
    spool_dir: Path
    spool_max_bytes: int
    client_tokens: Credential | None
    client_timeout: float
    drain_seconds: float
    caller_max_in_flight: int | None = None
    caller_rate: float | None = None
    # It may hold Redis's password: never in a repr.
    idempotency_url: str | None = field(default=None, repr=False)
    idempotency_ttl: float = 24 * 3600
    deployment: str = "chert-gateway"
    sha256: bool = True
    sha256_threads: int | None = None  # None: auto (hashing.Hashing.start)
    event_loop: str = "asyncio"
    simulate: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, simulate: bool = False) -> Settings:
        """Read and validate every setting; raise ConfigError on the first bad one."""

        def get(env: str) -> str | None:
            value = environ.get(env)
            if value is None or value == "":
                return OPTIONS_BY_ENV[env].default
            return value

        def parse(env: str, parser: Callable[[str], Any]) -> Any:
            raw = get(env)
            if raw is None:
                return None
            try:
                return parser(raw)
            except (ValueError, credentials.CredentialError) as exc:
                raise ConfigError(f"{env}: {exc}") from None

        def credential(env: str, many: bool = False) -> Credential | None:
            try:
                return credentials.from_env_pair(get(env), get(env + "_FILE"), many=many)
            except credentials.CredentialError as exc:
                raise ConfigError(f"{env}: {exc}") from None

        secret = credential("CHERT_SIGNING_SECRET")
        if secret is None and not simulate:
            raise ConfigError(
                "CHERT_SIGNING_SECRET: required (or CHERT_SIGNING_SECRET_FILE, "
                "or --simulate for the embedded Chert simulator)"
            )
        spool_dir = parse("GATEWAY_SPOOL_DIR", _directory) or Path(tempfile.gettempdir())
        return cls(
            chert_api_url=parse("CHERT_API_URL", _base_url),
            signing_secret=secret,
            ca_file=parse("CHERT_CA_FILE", _ca_file),
            tenant=get("CHERT_TENANT"),
            chert_timeout=parse("CHERT_TIMEOUT", _positive_float),
            listen=parse("GATEWAY_LISTEN", parse_listen),
            ops_listen=parse("GATEWAY_OPS_LISTEN", parse_listen),
            max_upload_bytes=parse("GATEWAY_MAX_UPLOAD_BYTES", _upload_limit),
            max_in_flight=parse("GATEWAY_MAX_IN_FLIGHT", _positive_int),
            spool_dir=spool_dir,
            spool_max_bytes=parse("GATEWAY_SPOOL_MAX_BYTES", _positive_int),
            client_tokens=credential("GATEWAY_CLIENT_TOKENS", many=True),
            client_timeout=parse("GATEWAY_CLIENT_TIMEOUT", _positive_float),
            caller_max_in_flight=parse("GATEWAY_CALLER_MAX_IN_FLIGHT", _positive_int),
            caller_rate=parse("GATEWAY_CALLER_RATE", _positive_float),
            idempotency_url=parse("GATEWAY_IDEMPOTENCY_URL", _redis_url),
            idempotency_ttl=parse("GATEWAY_IDEMPOTENCY_TTL", _ttl),
            deployment=parse("GATEWAY_DEPLOYMENT", _name),
            drain_seconds=parse("GATEWAY_DRAIN_SECONDS", _non_negative_float),
            sha256=parse("GATEWAY_SHA256", parse_boolean),
            sha256_threads=parse("GATEWAY_SHA256_THREADS", _threads),
            event_loop=parse("GATEWAY_EVENT_LOOP", _event_loop),
            simulate=simulate,
        )


def _positive_int(raw: str) -> int:
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _threads(raw: str) -> int | None:
    """`auto` (None), or a whole number of threads from 0 to 64."""
    if raw == "auto":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"expected auto or a number of threads, got {raw!r}") from None
    if not 0 <= value <= 64:
        raise ValueError(f"must be auto or from 0 to 64, got {value}")
    return value


def _upload_limit(raw: str) -> int:
    value = _positive_int(raw)
    if value > CHERT_MAX_UPLOAD_BYTES:
        raise ValueError(
            f"{value} is over Chert's per-file limit of {CHERT_MAX_UPLOAD_BYTES} bytes"
        )
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"must be a finite number of seconds ≥ 0, got {raw!r}")
    return value


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value == 0:
        raise ValueError("must be greater than 0")
    return value


def _ttl(raw: str) -> float:
    """Seconds, at most 30 days: a remembered answer is for retries, and
    Redis refuses expiries beyond its range."""
    value = _positive_float(raw)
    if value > 30 * 24 * 3600:
        raise ValueError(f"at most 30 days (2592000 s), got {raw!r}")
    return value


def parse_boolean(raw: str) -> bool:
    """true/false, 1/0, yes/no, on/off (any case); ValueError otherwise."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _event_loop(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("asyncio", "uvloop"):
        raise ValueError(f"expected asyncio or uvloop, got {raw!r}")
    if value == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ValueError(
                "uvloop is not installed: pip install 'chert-gateway[uvloop]'"
            ) from None
    return value


def _base_url(raw: str) -> URL:
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"expected an http(s) URL with a host, got {raw!r}")
    if url.user or url.password:
        raise ValueError("must not carry credentials; use CHERT_SIGNING_SECRET")
    if url.query_string or url.fragment:
        raise ValueError("must not carry a query or fragment")
    return url.with_path(url.path.rstrip("/"))


def _redis_url(raw: str) -> str:
    """A Redis URL redis-py reads, that keeps TLS verification on. Errors
    never repeat the URL: it may hold a password."""
    from redis.asyncio.connection import parse_url

    url = URL(raw)
    if url.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    if url.scheme != "unix" and not url.host:
        raise ValueError("expected a host: redis://host:6379/0")
    if url.scheme != "unix" and url.path.strip("/") and not url.path.strip("/").isdigit():
        raise ValueError("the path is the database number: redis://host:6379/0")
    if url.query.get("ssl_cert_reqs", "required") != "required" or url.query.get(
        "ssl_check_hostname", "true"
    ).lower() in ("false", "0", "no"):
        raise ValueError("TLS verification is never off; give ssl_ca_certs=PATH for a private CA")
    parse_url(raw)  # redis-py's own checks (port, db, options); ValueError names the part
    return raw


def _name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", raw):
        raise ValueError(f"expected a name of letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


def _ca_file(raw: str) -> Path:
    path = Path(raw).expanduser()
    try:
        tls.client_context(path)
    except OSError as exc:
        raise ValueError(f"cannot read {raw!r}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise ValueError(f"{raw!r} is not a PEM CA bundle ({exc.reason or exc})") from None
    return path


def _directory(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(f"{raw!r} is not a directory")
    return path


def parse_listen(raw: str) -> ListenAddress:
    """`host:port`, `[v6]:port`, `:port` (all interfaces) or `unix:/path`."""
    if raw.startswith("unix:"):
        path = raw.removeprefix("unix:")
        if not path.startswith("/"):
            raise ValueError(f"a Unix socket needs an absolute path, got {raw!r}")
        return ListenAddress(path=path)
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port or unix:/path, got {raw!r}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return ListenAddress(host=host, port=port)
