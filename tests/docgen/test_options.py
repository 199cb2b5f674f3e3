"""The options table of the docs is rendered from the configuration's OPTIONS and must equal
it."""

from __future__ import annotations

from docgen import options
from gateway.config import OPTIONS, Option
from harness.markers import section
from harness.paths import REPO


def test_docs_options_table_is_current() -> None:
    # Fails when an option is added, renamed or re-worded without `make docs`, or when the
    # table is edited by hand.
    for target in options.TARGETS:
        page = (REPO / target).read_text()
        assert section(page, options.SECTION) == options.render(), "run `make docs`"


def test_every_option_has_a_row_with_its_flag_and_env() -> None:
    rows = options.render().splitlines()[2:]
    assert len(rows) == len(OPTIONS)
    for option, row in zip(OPTIONS, rows):
        assert row.startswith(f"| `{option.flag} ")
        assert f"`{option.env}`" in row


def test_a_row_uses_the_metavar_serve_help_shows_and_marks_repeatable_flags() -> None:
    rendered = options.render(
        [
            Option(
                "api_keys",
                "server",
                str,
                "A key.",
                env="K",
                cli="--api-key",
                repeat=True,
                metavar="KEY",
            ),
            Option("max_inputs", "model", int, "Most | inputs\nper request.", env=None),
        ]
    )
    assert rendered.splitlines()[2:] == [
        "| `--api-key KEY` (repeatable) | `K` | server | A key. |",
        "| `--max-inputs MAX_INPUTS` |  | per model | Most \\| inputs per request. |",
    ]


def test_every_row_states_the_declared_default_once() -> None:
    rows = options.render().splitlines()[2:]
    for option, row in zip(OPTIONS, rows):
        assert row.count("(default") == (1 if option.default_text else 0)
        assert option.default_text in row


def test_a_row_adds_the_default_to_the_help() -> None:
    rendered = options.render(
        [Option("port", "server", int, "Port.", env="P", default=8000, default_note="why")]
    )
    assert rendered.splitlines()[2:] == [
        "| `--port PORT` | `P` | server | Port (default 8000, why). |"
    ]
