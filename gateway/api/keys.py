"""Typed keys: what the gateway's applications hold (AppKey), and what a
request carries from its handler to the middleware that logs it (RequestKey)."""

from __future__ import annotations

from aiohttp import web

from gateway.api.admission import Admission
from gateway.api.hashing import Hashing
from gateway.api.idempotency import Store
from gateway.api.pipeline import UploadPipeline
from gateway.api.quota import CallerQuotas
from gateway.api.spool import Spool
from gateway.chert.client import ChertClient
from gateway.ops.config import Settings
from gateway.ops.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
ADMISSION = web.AppKey("admission", Admission)
CHERT = web.AppKey("chert", ChertClient)
PIPELINE = web.AppKey("pipeline", UploadPipeline)
IDEMPOTENCY = web.AppKey("idempotency", Store)
SPOOL = web.AppKey("spool", Spool)
HASHING = web.AppKey("hashing", Hashing)
QUOTAS = web.AppKey("quotas", CallerQuotas)

OUTCOME_KEY = web.RequestKey("gateway_outcome", str)
# The request's id, given to every answer as it is prepared: a streamed one
# sends its headers before the middleware sees it again.
REQUEST_ID_KEY = web.RequestKey("gateway_request_id", str)
# The named caller whose client token the request carried ("" when unnamed).
CALLER_KEY = web.RequestKey("gateway_caller", str)
# What the access log line says of a request beyond method, route and status.
LOG_FIELDS_KEY = web.RequestKey("gateway_log_fields", dict)
