"""Configuration of the input policy: token-id mode, truncation, prompts (also from the model
folder's sentence-transformers config), virtual names, and the tiktoken folder option."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway.config import ConfigError, InputPolicy, load_settings


def settings_for(tmp_path, entry: dict, **server):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry], **server}))
    return load_settings({"config": str(path)}, environ={})


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings.models[0].policy == InputPolicy()
    assert settings.tiktoken_cache_dir is None


def test_tiktoken_folder_from_yaml_env_and_flag(tmp_path) -> None:
    assert settings_for(tmp_path, {"path": "m"}, tiktoken_cache_dir="/a").tiktoken_cache_dir == "/a"
    env = load_settings({}, environ={"TIKTOKEN_CACHE_DIR": "/b"})
    assert env.tiktoken_cache_dir == "/b"
    flag = load_settings({"tiktoken_cache_dir": "/c"}, environ={"TIKTOKEN_CACHE_DIR": "/b"})
    assert flag.tiktoken_cache_dir == "/c"


def test_model_policy_from_yaml(tmp_path) -> None:
    model = settings_for(
        tmp_path,
        {
            "path": "m",
            "token_ids": "native",
            "truncate": "start",
            "prompts": {"query": "query: "},
            "prompt_aliases": {"m-query": "query"},
        },
    ).models[0]
    assert model.policy == InputPolicy(
        "native", "start", {"query": "query: "}, {"m-query": "query"}
    )
    assert model.all_names == ("m", "m-query")


def test_prompts_from_the_model_folder_and_config_override(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "Represent this query: ", "document": ""}})
    )
    model = settings_for(
        tmp_path, {"path": str(folder), "prompts": {"document": "passage: "}}
    ).models[0]
    assert model.policy.prompts == {"query": "Represent this query: ", "document": "passage: "}


def test_single_model_flags(tmp_path) -> None:
    settings = load_settings(
        {"model": "m", "prompts": '{"query": "q: "}', "prompt_aliases": '{"mq": "query"}'},
        environ={},
    )
    assert settings.models[0].policy.prompt_aliases == {"mq": "query"}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"token_ids": "gpt2"}, "--token-ids"),
        ({"truncate": "middle"}, "--truncate"),
        ({"prompt_aliases": {"x": "missing"}}, "names the prompt 'missing'"),
        ({"prompts": {"query": 1}}, "must be a string"),
    ],
)
def test_bad_policy_is_a_config_error(tmp_path, entry, message) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_for(tmp_path, {"path": "m", **entry})


def test_virtual_name_clashing_with_another_model_is_an_error(tmp_path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"path": "a", "prompts": {"q": ""}, "prompt_aliases": {"b": "q"}},
                    {"path": "b"},
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match="used twice"):
        load_settings({"config": str(path)}, environ={})
