"""The gateway's errors: one tree, each with a stable code, an HTTP status and
whether the caller may retry.

    GatewayError
    ├── InvalidRequestError          400 invalid_request
    ├── UnauthorizedError            401 unauthorized
    ├── NotFoundError                404 not_found
    ├── MethodNotAllowedError        405 method_not_allowed
    ├── ClientTimeoutError           408 client_timeout
    ├── IdempotencyInProgressError   409 idempotency_in_progress
    ├── PayloadTooLargeError         413 payload_too_large
    ├── UnsupportedMediaTypeError    415 unsupported_media_type
    ├── IdempotencyKeyReusedError    422 idempotency_key_reused
    ├── ClientAbortedError           499 client_aborted (never delivered: the caller left)
    ├── UpstreamError                502 upstream_error
    ├── OverloadedError              503 overloaded
    ├── UpstreamUnavailableError     503 upstream_unavailable
    └── UpstreamTimeoutError         504 upstream_timeout

Handlers and the pipeline raise these; one middleware (`app.error_middleware`)
turns them into the JSON error body. Foreign exceptions (aiohttp's, Chert's
answers) are mapped once, where they arise: `chert.py` for Chert, `intake.py`
for the caller's body.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.retry import parse_retry_after


class GatewayError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    # The Retry-After an answer carries when the raiser named none: every 503
    # tells the caller when to come back (SPEC). Not a wait for the gateway's
    # own retries, which take only what Chert said.
    default_retry_after: ClassVar[float | None] = None

    def __init__(
        self,
        message: str,
        *,
        chert_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.chert_code = chert_code
        self.retry_after = retry_after
        # Set on errors a client rebuilt from an answer (see from_answer).
        self.request_id: str | None = None
        if retryable is not None:
            # An instance may know better than its class: a broken streamed
            # PUT is an upstream_error the caller can safely send again.
            self.retryable = retryable  # type: ignore[misc]

    def to_json(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "request_id": request_id,
                "retryable": self.retryable,
                "chert_code": self.chert_code,
            }
        }


class InvalidRequestError(GatewayError):
    code = "invalid_request"
    status = 400


class UnauthorizedError(GatewayError):
    code = "unauthorized"
    status = 401


class NotFoundError(GatewayError):
    code = "not_found"
    status = 404


class MethodNotAllowedError(GatewayError):
    code = "method_not_allowed"
    status = 405


class ClientTimeoutError(GatewayError):
    code = "client_timeout"
    status = 408
    retryable = True


class IdempotencyInProgressError(GatewayError):
    code = "idempotency_in_progress"
    status = 409
    retryable = True


class PayloadTooLargeError(GatewayError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaTypeError(GatewayError):
    code = "unsupported_media_type"
    status = 415


class IdempotencyKeyReusedError(GatewayError):
    code = "idempotency_key_reused"
    status = 422


class ClientAbortedError(GatewayError):
    """The caller closed the connection mid-body; there is no one to answer."""

    code = "client_aborted"
    status = 499


class UpstreamError(GatewayError):
    code = "upstream_error"
    status = 502


class OverloadedError(GatewayError):
    code = "overloaded"
    status = 503
    retryable = True
    default_retry_after = 1


class UpstreamUnavailableError(GatewayError):
    code = "upstream_unavailable"
    status = 503
    retryable = True
    default_retry_after = 2


class UpstreamTimeoutError(GatewayError):
    code = "upstream_timeout"
    status = 504
    retryable = True


def _tree(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found: list[type[GatewayError]] = [cls]
    for sub in cls.__subclasses__():
        found += _tree(sub)
    return found


# code → class, so a client can raise the very error the gateway answered with.
ERRORS_BY_CODE: dict[str, type[GatewayError]] = {cls.code: cls for cls in _tree(GatewayError)}


def from_answer(status: int, body: Any, retry_after: str | None = None) -> GatewayError:
    """The gateway's JSON error body (or whatever came instead) as an exception."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        exc = GatewayError(f"HTTP {status} without the gateway's error body")
        exc.status = status  # type: ignore[misc]
        return exc
    cls = ERRORS_BY_CODE.get(str(error.get("code")), GatewayError)
    exc = cls(
        str(error.get("message", "")),
        chert_code=error.get("chert_code"),
        retry_after=parse_retry_after(retry_after),
        retryable=bool(error.get("retryable", cls.retryable)),
    )
    exc.request_id = error.get("request_id")
    return exc
