"""Each option states its built-in default once, on its declaration; `serve --help` and the
dataclasses that hold the settings all take it from there."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from typing import Any

import pytest

from adapters.base import EngineSpec
from gateway.cli import build_parser
from gateway.config import OPTIONS, InputPolicy, Option, Settings
from gateway.serving.costs import CHARS_PER_TOKEN

BY_NAME = {option.name: option for option in OPTIONS}


def serve_help() -> dict[str, str]:
    """Each flag's help as `embedding-gateway serve --help` prints it, before line wrapping."""
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    return {a.option_strings[0]: a.help for a in serve._actions if a.option_strings}


def declared_defaults(*classes: type) -> dict[str, Any]:
    """Field defaults of dataclasses, the first class winning a name they share."""
    defaults: dict[str, Any] = {}
    for cls in reversed(classes):
        for f in fields(cls):
            if f.default is not MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not MISSING:
                defaults[f.name] = f.default_factory()
    return defaults


def test_every_option_has_a_flag_an_env_and_help() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for option in OPTIONS:
        assert option.flag in help_text
        assert option.env and option.env in help_text


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_no_help_text_states_a_default_by_hand(option: Option) -> None:
    assert "(default" not in option.help.lower()
    assert "(default" not in (option.default_note or "").lower()
    # The default goes before the final period.
    assert option.help.endswith(".")


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_serve_help_states_the_declared_default_once(option: Option) -> None:
    text = serve_help()[option.flag]
    assert text == f"{option.help_text} [env {option.env}]"
    assert text.count("(default") == (1 if option.default_text else 0)
    if option.default is None:
        return
    shown = re.search(r"\(default (\S+?)(?:[,)]| = )", text)
    assert shown, text
    if option.parsed_default == ():
        assert shown[1] == "none"
    else:
        assert option.parse(shown[1]) == option.parsed_default


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_settings_hold_the_options_default(option: Option) -> None:
    holders = (Settings,) if option.scope == "server" else (InputPolicy, EngineSpec)
    defaults = declared_defaults(*holders)
    if option.name not in defaults:
        # Read only by the loader, which builds the model list from them.
        assert option.name in {"config", "model", "served_model_name", "aliases"}
    elif option.name == "workers":
        # `auto` becomes a count when loading, from the hardware and the models.
        assert (option.parsed_default, defaults["workers"]) == (None, 1)
    elif option.default is None:
        assert defaults[option.name] in (None, (), {})
    else:
        assert defaults[option.name] == option.parsed_default
        assert type(defaults[option.name]) is type(option.parsed_default)


def test_derived_character_limits_state_the_factor_the_gateway_applies() -> None:
    assert BY_NAME["max_input_chars"].default_text.startswith(
        f"(default: {CHARS_PER_TOKEN} per token of the model's window, e.g. "
        f"{CHARS_PER_TOKEN * 512} for a 512-token model"
    )
    assert BY_NAME["max_request_chars"].default_text == (
        f"(default: {CHARS_PER_TOKEN} per token of --max-request-tokens, "
        f"{CHARS_PER_TOKEN * Settings.max_request_tokens})"
    )


def test_a_default_is_shown_as_a_user_writes_it_with_sizes_and_days_spelled_out() -> None:
    assert Option("a_bytes", "server", int, "A.", default=3 << 30).help_text == (
        "A (default 3221225472 = 3 GiB)."
    )
    assert Option("b_bytes", "server", int, "B.", default=5 << 20).default_text == (
        "(default 5242880 = 5 MiB)"
    )
    assert Option("c_bytes", "server", int, "C.", default=65536).default_text == "(default 65536)"
    assert Option("d_s", "server", int, "D.", default=172800, default_note="why").default_text == (
        "(default 172800 = 2 days, why)"
    )
    assert Option("e", "server", bool, "E.", default=False).default_text == "(default false)"
    assert Option("f", "server", tuple, "F.", default=()).default_text == "(default none)"
    assert Option("g", "server", str, "G.", default_note="derived").help_text == (
        "G (default: derived)."
    )
    assert Option("h", "server", str, "H.").help_text == "H."
