"""bench/ablation.py: one row per engine_environment setting, rendered from its saved run."""

from __future__ import annotations

import pytest

from adapters.vllm import engine_environment
from bench import ablation


@pytest.mark.process
def test_every_engine_setting_has_its_own_row() -> None:
    """A setting added to engine_environment without a row here would go unmeasured."""
    named = [name for _, names in ablation.ROWS for name in names]
    assert sorted(named) == sorted(set(named))
    assert set(engine_environment("all")) <= set(named)
    assert ablation.ROWS[0][1] == ()  # the first row is vLLM as it comes


def test_table_names_what_each_row_added() -> None:
    result = {
        "meta": {
            "model": "m",
            "cpus": 2,
            "cpu_model": "cpu",
            "command": "python -m bench.ablation",
            "date_utc": "2026-11-29 11:00",
            "queries": 10,
            "texts": 20,
        },
        "rows": [
            {
                "label": "defaults",
                "added": {},
                "c1_p50_ms": 8.5,
                "c1_p99_ms": 40.0,
                "c32_texts_per_s": 296.4,
            },
            {
                "label": "+ x",
                "added": {"X": "1", "LD_PRELOAD": "libt.so.4:/v/lib/libiomp5.so"},
                "c1_p50_ms": 6.0,
                "c1_p99_ms": 9.0,
                "c32_texts_per_s": 531.0,
            },
        ],
    }
    table = ablation.markdown(result)
    assert "| defaults | nothing | 8.50 | 40.00 | 296.4 |" in table
    assert "| + x | `X=1`, `LD_PRELOAD=libt.so.4:libiomp5.so` | 6.00 | 9.00 | 531.0 |" in table
