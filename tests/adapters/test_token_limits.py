"""The shared length policy and vocabulary check, on token ids."""

from __future__ import annotations

import pytest

from adapters.base import EmbedOptions, InvalidInput
from adapters.token_limits import SpecialTokens, check_vocabulary, fit

BERT = SpecialTokens(1, 1)


def test_special_tokens_found_around_a_probe() -> None:
    assert SpecialTokens.of([101, 1037, 102], [1037]) == SpecialTokens(1, 1)
    assert SpecialTokens.of([1037, 151643], [1037]) == SpecialTokens(0, 1)
    assert SpecialTokens.of([5, 6], [7]) == SpecialTokens(0, 0)


def test_within_the_limit_nothing_changes() -> None:
    ids = [[101, 1, 2, 102]]
    assert fit(ids, EmbedOptions(), max_model_len=4, model="m", specials=[BERT]) == (ids, ())


def test_too_long_without_truncation_states_counts() -> None:
    with pytest.raises(InvalidInput) as info:
        fit(
            [[1], [101, 1, 2, 3, 102]],
            EmbedOptions(),
            max_model_len=4,
            model="m",
            specials=[BERT, BERT],
        )
    assert info.value.index == 1
    assert "input 1 has 5 tokens, but model 'm' accepts at most 4" in info.value.message


@pytest.mark.parametrize("side, kept", [("end", [101, 1, 2, 102]), ("start", [101, 2, 3, 102])])
def test_truncation_keeps_special_tokens(side, kept) -> None:
    fitted, truncated = fit(
        [[7], [101, 1, 2, 3, 102]],
        EmbedOptions(truncate=side),
        max_model_len=4,
        model="m",
        specials=[BERT, BERT],
    )
    assert fitted == [[7], kept]
    assert truncated == (1,)


def test_max_tokens_caps_below_the_window() -> None:
    fitted, truncated = fit(
        [[101, 1, 2, 3, 102]],
        EmbedOptions(truncate="end", max_tokens=3),
        max_model_len=512,
        model="m",
        specials=[BERT],
    )
    assert fitted == [[101, 1, 102]] and truncated == (0,)


def test_max_tokens_over_the_window_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="larger than model 'm''s window of 4"):
        fit([[1]], EmbedOptions(max_tokens=5), max_model_len=4, model="m", specials=[BERT])


def test_client_ids_have_no_protected_specials() -> None:
    fitted, _ = fit(
        [[1, 2, 3, 4, 5]],
        EmbedOptions(truncate="start"),
        max_model_len=2,
        model="m",
        specials=[SpecialTokens()],
    )
    assert fitted == [[4, 5]]


def test_vocabulary_check() -> None:
    assert check_vocabulary((1, 2), 3, index=0) == [1, 2]
    with pytest.raises(InvalidInput, match="input 2: token id 3 is outside"):
        check_vocabulary([1, 3], 3, index=2)
    with pytest.raises(InvalidInput, match="empty"):
        check_vocabulary([], 3, index=0)
