"""Typed keys: what the gateway's applications hold (AppKey), and what a
request carries from its handler to the middleware that logs it (RequestKey)."""

from __future__ import annotations

from aiohttp import web

from gateway.admission import Admission
from gateway.chert import ChertClient
from gateway.config import Settings
from gateway.idempotency import IdempotencyStore
from gateway.metrics import Metrics
from gateway.pipeline import UploadPipeline
from gateway.spool import Spool

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
ADMISSION = web.AppKey("admission", Admission)
CHERT = web.AppKey("chert", ChertClient)
PIPELINE = web.AppKey("pipeline", UploadPipeline)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
SPOOL = web.AppKey("spool", Spool)

OUTCOME_KEY = web.RequestKey("gateway_outcome", str)
# What the access log line says of a request beyond method, route and status.
LOG_FIELDS_KEY = web.RequestKey("gateway_log_fields", dict)
