"""/docs in headless Chromium: Swagger UI renders the served /openapi.json with every route,
and a try-it-out embeddings request, authorised with the API key, answers 200."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from harness.gateway import start_gateway
from tests.docs.cdp import Browser

KEY = "docs-key"
# Set a React-controlled textarea's value the way typing does.
_TYPE = """(el, text) => {
  Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(el, text);
  el.dispatchEvent(new Event('input', {bubbles: true}));
}"""


def test_docs_list_every_route_and_try_it_out_answers_200(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fake_models={"fake": {}}, args=["--api-key", KEY])
    browser = Browser()
    try:
        document = httpx.get(gateway.base_url + "/openapi.json").json()
        browser.send("Page.navigate", url=gateway.base_url + "/docs")
        browser.wait_for("document.querySelectorAll('.opblock').length > 0")
        shown = browser.evaluate(
            "[...document.querySelectorAll('.opblock')].map(b => "
            "b.querySelector('.opblock-summary-method').textContent + ' ' +"
            " b.querySelector('.opblock-summary-path').dataset.path)"
        )
        described = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
        assert set(shown) == described
        # The key, as the Authorize dialog stores it; then the operation's own buttons.
        browser.evaluate(
            "window.ui.authActions.authorize({bearer: {name: 'bearer', schema: "
            f"{{type: 'http', scheme: 'bearer'}}, value: '{KEY}'}}}}); true"
        )
        block = "document.querySelector('#operations-default-post_v1_embeddings')"
        browser.evaluate(f"{block}.querySelector('.opblock-summary-control').click(); true")
        browser.wait_for(f"!!{block}.querySelector('.try-out__btn')")
        browser.evaluate(f"{block}.querySelector('.try-out__btn').click(); true")
        browser.wait_for(f"!!{block}.querySelector('textarea.body-param__text')")
        body = json.dumps({"model": "fake", "input": ["hello from the docs"]})
        browser.evaluate(
            f"({_TYPE})({block}.querySelector('textarea.body-param__text'), {json.dumps(body)})"
        )
        browser.evaluate(f"{block}.querySelector('.execute').click(); true")
        status = browser.wait_for(
            f"(({block}.querySelector('.live-responses-table tr.response .response-col_status') || {{}})"
            ".textContent || '').trim()"
        )
        assert status.startswith("200"), status
        answer = browser.evaluate(
            f"{block}.querySelector('.live-responses-table .microlight').textContent"
        )
        assert json.loads(answer)["data"][0]["object"] == "embedding"
    finally:
        browser.close()
        gateway.stop()
