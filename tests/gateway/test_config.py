"""Settings: the admin key is required; CORS origins come as a comma list; the process refuses to start clearly."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.app.config import MissingApiKeyError
from gateway.app.main import create_app
from tests.gateway.conftest import gateway_settings
from tests.gateway.process import gateway_exit


@pytest.mark.parametrize("key", ["", "   "])
def test_app_refuses_an_empty_api_key(key: str) -> None:
    with pytest.raises(MissingApiKeyError, match="AUTOMAGIK_OMNI_API_KEY"):
        create_app(gateway_settings(api_key=key))


def test_cors_origins_is_a_comma_list() -> None:
    settings = gateway_settings(cors_origins=" https://a.example , ,https://b.example")
    assert settings.cors_origin_list == ["https://a.example", "https://b.example"]
    assert gateway_settings().cors_origin_list == []


async def test_cors_headers_for_an_allowed_origin() -> None:
    app = create_app(gateway_settings(cors_origins="https://ui.example"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.options(
            "/api/v1/instances",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"},
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://ui.example"


async def test_process_exits_with_a_clear_message_without_a_key(tmp_path: Path) -> None:
    code, stderr = await gateway_exit(tmp_path, {"AUTOMAGIK_OMNI_API_KEY": ""})
    assert code == 2
    assert b"AUTOMAGIK_OMNI_API_KEY is not set" in stderr
