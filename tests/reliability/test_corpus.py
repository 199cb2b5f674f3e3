"""The malformed-input corpus (every route of the route table) against a gateway process:
every must-fail case is a 4xx in the OpenAI envelope, no case is a 5xx, the process lives."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.api.routes import ROUTES
from harness.gateway import start_gateway
from reliability.corpus import build_corpus, run_corpus

KEY = "corpus-key"


def test_malformed_corpus_is_all_4xx_in_the_envelope(tmp_path: Path) -> None:
    cases = build_corpus(ROUTES)
    assert len(cases) >= 200
    gateway = start_gateway(tmp_path, fake_models={"fake": {}}, args=["--api-key", KEY])
    try:
        result = run_corpus(gateway.base_url, cases, {"Authorization": f"Bearer {KEY}"})
        alive = httpx.get(gateway.base_url + "/ready").status_code
    finally:
        gateway.stop()
    assert result.server_errors == []
    assert result.wrong == []
    assert result.answered_4xx == result.must_fail
    assert result.enveloped == result.errors
    assert result.largest_error_body < 8192
    assert alive == 200
