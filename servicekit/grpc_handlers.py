"""Rebuilding a gRPC method handler around a new behaviour, for the server interceptors."""

from __future__ import annotations

from typing import Any

import grpc


def replace_unary_unary(handler: grpc.RpcMethodHandler[Any, Any], behaviour: Any) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its unary-unary behaviour replaced (same (de)serialisers)."""
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def replace_unary_stream(handler: grpc.RpcMethodHandler[Any, Any], behaviour: Any) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its unary-stream behaviour replaced (same (de)serialisers)."""
    return grpc.unary_stream_rpc_method_handler(
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
