"""Optional OpenTelemetry export of the broker's spans (the ``otel`` extra: opentelemetry-api and
-sdk). The broker hands over each span with its parent and its times given explicitly
(:class:`Spans`): its loop is single-threaded and a try ends messages after it began, so no
"current span" is ever set. Spans leave through a batch processor, on its own thread.

Turned on by ``arbiter broker --otel`` or the standard ``OTEL_TRACES_EXPORTER`` (``console``;
``otlp`` when opentelemetry-exporter-otlp is installed, set up by the ``OTEL_EXPORTER_OTLP_*``
variables); ``OTEL_SERVICE_NAME`` names the service (default ``arbiter-broker``).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from arbiter.wire.trace import TraceParent

log = logging.getLogger("arbiter.telemetry")

SERVICE_NAME = "arbiter-broker"
SERVED = ("arbiter.route", "arbiter.explain", "arbiter.chain")  # requests the broker serves: SERVER spans


def available() -> bool:
    """Whether the OpenTelemetry SDK can be imported here."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


class Spans:
    """Starts and ends the broker's spans on one tracer; called from the loop thread only."""

    def __init__(self, provider: Any):
        from opentelemetry import trace as api
        from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

        self._api, self._status, self._code = api, Status, StatusCode
        self._remote, self._context, self._flags = NonRecordingSpan, SpanContext, TraceFlags
        self.provider = provider
        self.tracer = provider.get_tracer("arbiter.broker")

    def start(
        self, name: str, parent: TraceParent | None, attributes: Mapping[str, Any], start_ns: int | None = None
    ) -> Any:
        """A started span under ``parent`` (None: a new trace starts with it)."""
        context = None
        if parent is not None:
            remote = self._context(int(parent.trace_id, 16), int(parent.parent_id, 16), True, self._flags(parent.flags))
            context = self._api.set_span_in_context(self._remote(remote))
        kinds = self._api.SpanKind
        kind = kinds.SERVER if name in SERVED else kinds.CLIENT if name == "arbiter.try" else kinds.INTERNAL
        return self.tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=dict(attributes),
            start_time=start_ns,
        )

    @staticmethod
    def ids(span: Any) -> tuple[str, str]:
        """The span's trace-id and span-id as ``traceparent`` writes them."""
        context = span.get_span_context()
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    def end(self, span: Any, attributes: Mapping[str, Any], error: str | None, end_ns: int | None = None) -> None:
        if attributes:
            span.set_attributes(dict(attributes))
        if error is not None:
            span.set_status(self._status(self._code.ERROR, error))
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Send what is still buffered, then stop the exporters."""
        self.provider.shutdown()


def for_exporter(exporter: Any, batch: bool = False, service: str = SERVICE_NAME) -> Spans:
    """Spans sent to ``exporter`` (e.g. the SDK's ``InMemorySpanExporter``); ``batch`` sends them
    from a thread of their own instead of as each ends."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": _service_name(service)}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return Spans(provider)


def from_environment(enabled: bool = False, environ: Mapping[str, str] | None = None) -> Spans | None:
    """The broker's spans as ``--otel`` (``enabled``) and the ``OTEL_*`` variables ask, or None
    when export is off, the SDK is not installed, or no exporter named can be made."""
    environ = os.environ if environ is None else environ
    named = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if "none" in named or not (enabled or named):
        return None
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if not available():
        log.warning(
            "OpenTelemetry export asked for, but opentelemetry-sdk is not installed "
            "(pip install 'arbiter-router[otel]')"
        )
        return None
    if not named:
        named = ["otlp"] if _has_otlp() and _otlp_configured(environ) else ["console"]
    exporters = [e for e in (_exporter(n, environ) for n in named) if e is not None]
    if not exporters:
        return None
    spans = for_exporter(exporters[0], batch=True)
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    for more in exporters[1:]:
        spans.provider.add_span_processor(BatchSpanProcessor(more))
    log.info("exporting spans to %s", ", ".join(named))
    return spans


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        module = "http" if (protocol or "").startswith("http") else "grpc"
        try:
            if module == "http":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp, which is not installed")
            return None
        return OTLPSpanExporter()  # endpoint, headers, TLS: the OTEL_EXPORTER_OTLP_* variables
    log.warning("unknown OTEL_TRACES_EXPORTER %r: console and otlp are known", name)
    return None


def _has_otlp() -> bool:
    try:
        import opentelemetry.exporter.otlp  # noqa: F401
    except ImportError:
        return False
    return True


def _otlp_configured(environ: Mapping[str, str]) -> bool:
    return any(k in environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _service_name(default: str) -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or default
