"""OTLP protobuf → SpanRecord conversion."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.tracing.otlp import spans_from_request


def _kv(key: str, value: common_pb2.AnyValue) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=value)


def test_request_to_span_records() -> None:
    nested = common_pb2.KeyValueList(values=[_kv("deep", common_pb2.AnyValue(double_value=1.5))])
    good = trace_pb2.Span(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        parent_span_id=bytes.fromhex("00f067aa0ba902b7"),
        name="router.route",
        start_time_unix_nano=100,
        end_time_unix_nano=50,  # a skewed end never makes a negative duration
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR),
        attributes=[
            _kv("s", common_pb2.AnyValue(string_value="x")),
            _kv("b", common_pb2.AnyValue(bool_value=True)),
            _kv("i", common_pb2.AnyValue(int_value=7)),
            _kv("raw", common_pb2.AnyValue(bytes_value=b"\x00\x01")),
            _kv(
                "list",
                common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[common_pb2.AnyValue(int_value=1)])),
            ),
            _kv("map", common_pb2.AnyValue(kvlist_value=nested)),
            _kv("empty", common_pb2.AnyValue()),
        ],
    )
    invalid = trace_pb2.Span(trace_id=b"short", span_id=b"\x01" * 8, name="dropped")
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[_kv("service.name", common_pb2.AnyValue(string_value="omni-router"))]
                ),
                scope_spans=[trace_pb2.ScopeSpans(spans=[good, invalid])],
            )
        ]
    )
    [span] = spans_from_request(request)
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert (span.span_id, span.parent_span_id) == ("b7ad6b7169203331", "00f067aa0ba902b7")
    assert (span.start_ns, span.end_ns, span.status, span.service_name) == (100, 100, "error", "omni-router")
    assert span.attributes == {
        "s": "x",
        "b": True,
        "i": 7,
        "raw": "AAE=",
        "list": [1],
        "map": {"deep": 1.5},
        "empty": None,
    }
