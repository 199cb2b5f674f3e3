"""/openapi.json describes every route (tests/reliability fuzzes the server with it)."""

from __future__ import annotations

from starlette.routing import Route

from gateway.config import Settings
from gateway.routes import ROUTES
from tests.conftest import serving


def test_every_route_is_described_with_its_methods(client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for route in ROUTES:
        assert isinstance(route, Route)
        described = document["paths"].get(route.path)
        assert described is not None, f"{route.path} is missing from /openapi.json"
        assert set(described) == {m.lower() for m in route.methods - {"HEAD"}}, route.path
        for operation in described.values():
            assert {"200", "405", "500"} <= set(operation["responses"])


def test_limits_and_models_appear_as_constraints() -> None:
    with serving(Settings(max_inputs=7, api_keys=("k",))) as client:
        document = client.get("/openapi.json", headers={"Authorization": "Bearer k"}).json()
    body = document["paths"]["/v1/embeddings"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["properties"]["model"]["enum"] == ["fake"]
    assert schema["properties"]["input"]["oneOf"][1]["maxItems"] == 7
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "401" in document["paths"]["/v1/embeddings"]["post"]["responses"]
