"""Fixtures shared by the gateway's unit tests: an app with small limits, and the check of an
error answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.config import Settings
from tests.conftest import serving

JSON = {"content-type": "application/json"}


@pytest.fixture
def small() -> Iterator[TestClient]:
    """A ready app with a 1000-byte body cap, 4 inputs and 10 tokens per request."""
    settings = Settings(max_body_bytes=1000, max_inputs=4, max_request_tokens=10)
    with serving(settings, fake=FakeEngine(max_model_len=512)) as client:
        yield client


def assert_error(response, status: int, fragment: str) -> None:
    """`status`, the OpenAI envelope, and `fragment` in its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"]
