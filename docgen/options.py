"""The README's table of options, rendered from `gateway.config.OPTIONS`, the declarations
`serve --help` is built from, so the two say the same thing, defaults included."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import OPTIONS, Option

SECTION = "options"
TARGETS = ("docs/configuration.md",)

_SCOPE = {"server": "server", "model": "per model"}


def _cell(text: str) -> str:
    # A bare `|` would end the Markdown table cell; line breaks would end the row.
    return " ".join(text.split()).replace("|", "\\|")


def _flag(option: Option) -> str:
    # The same metavar argparse prints in `serve --help`: the declared one, else the dest.
    usage = f"`{option.flag} {option.metavar or option.name.upper()}`"
    return usage + (" (repeatable)" if option.repeat else "")


def render(options: Iterable[Option] = OPTIONS) -> str:
    lines = ["| flag | env | scope | meaning |", "|---|---|---|---|"]
    for option in options:
        env = f"`{option.env}`" if option.env else ""
        lines.append(
            f"| {_flag(option)} | {env} | {_SCOPE.get(option.scope, option.scope)} | "
            f"{_cell(option.help_text)} |"
        )
    return "\n".join(lines)
