"""harness/load.py: the closed loop checks the first answer before it counts any."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web

from harness.load import Body, closed_loop


async def _loop_against(answer: Any, texts: int) -> int:
    """Requests a closed loop of 0.2 s made against a server answering `answer` to each."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/x", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        body = Body(orjson.dumps({"inputs": ["a"] * texts}), texts, texts)
        result = await closed_loop(
            f"http://127.0.0.1:{port}/x", [body], concurrency=1, duration_s=0.2
        )
        return result.requests
    finally:
        await runner.cleanup()


def test_a_bare_list_answer_counts_one_item_per_input() -> None:
    # TEI's routes answer a bare list, one item per input.
    assert asyncio.run(_loop_against([[0.1], [0.2]], texts=2)) > 0


def test_an_answer_with_too_few_rows_stops_the_loop() -> None:
    with pytest.raises(RuntimeError, match="answered 1 rows for 2 inputs"):
        asyncio.run(_loop_against({"data": [{"embedding": [0.1]}]}, texts=2))
