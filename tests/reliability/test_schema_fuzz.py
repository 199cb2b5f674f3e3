"""schemathesis against the served /openapi.json of a gateway process: no server errors."""

from __future__ import annotations

from pathlib import Path

from harness.gateway import start_gateway
from reliability.fuzz import fuzz

KEY = "fuzz-key"


def test_schema_fuzz_finds_no_server_error(tmp_path: Path) -> None:
    gateway = start_gateway(
        tmp_path, fake_models={"fake": {}}, args=["--api-key", KEY, "--max-inputs", "64"]
    )
    try:
        result = fuzz(gateway.base_url, KEY, max_examples=20)
    finally:
        gateway.stop()
    assert result.cases >= 100
    assert result.server_errors == [], result.server_errors[:3]
    assert result.operations >= 6  # every route but /openapi.json itself
