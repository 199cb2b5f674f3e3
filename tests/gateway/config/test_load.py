"""Loading: precedence (default < YAML < environment < flags), model entries, API keys, and
errors that name the option at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config import ConfigError, load_settings
from gateway.tenancy import KeyRing


def test_default_serves_builtin_minilm() -> None:
    settings = load_settings({}, {})
    (model,) = settings.models
    assert model.name == "all-MiniLM-L6-v2"
    assert model.aliases == ("sentence-transformers/all-MiniLM-L6-v2",)
    assert Path(model.engine.model, "model.safetensors").is_file()
    assert (model.engine.max_num_batched_tokens, model.engine.max_num_seqs) == (16384, 1024)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)


def test_yaml_models_with_cli_defaults_and_env(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        "port: 9000\n"
        "models:\n"
        "  - name: a\n    path: builtin:all-MiniLM-L6-v2\n    aliases: [a1, a2]\n"
        "    dtype: float16\n"
        "  - name: b\n    path: org/model-b\n    max_model_len: 512\n"
        "    engine_kwargs: {enforce_eager: true}\n"
    )
    settings = load_settings(
        {"config": str(config), "dtype": "bfloat16"},
        {"GATEWAY_PORT": "9100", "GATEWAY_MAX_NUM_SEQS": "64"},
    )
    a, b = settings.models
    assert settings.port == 9100  # env beats YAML
    assert (a.name, a.aliases, a.engine.dtype) == ("a", ("a1", "a2"), "float16")  # entry wins
    assert (b.engine.model, b.engine.dtype, b.engine.max_model_len) == (
        "org/model-b",
        "bfloat16",
        512,
    )
    assert b.engine.engine_kwargs == {"enforce_eager": True}
    assert a.engine.max_num_seqs == b.engine.max_num_seqs == 64


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("models:\n  - path: /models/bge-small\n")
    (model,) = load_settings({}, {"GATEWAY_CONFIG": str(config)}).models
    assert (model.name, model.engine.model) == ("bge-small", "/models/bge-small")


def test_model_flag_overrides_the_list(tmp_path: Path) -> None:
    settings = load_settings({"model": "/m/e5", "served_model_name": "e5", "aliases": "x,y"}, {})
    (model,) = settings.models
    assert (model.name, model.aliases, model.engine.model) == ("e5", ("x", "y"), "/m/e5")


@pytest.mark.parametrize(
    ("cli", "yaml_text", "fragment"),
    [
        ({"port": "eighty"}, None, "--port"),
        ({"engine_kwargs": "[1]"}, None, "JSON object"),
        ({"trust_remote_code": "maybe"}, None, "boolean"),
        ({"engine": "tgi"}, None, "--engine"),
        ({}, "models:\n  - name: a\n    colour: red\n", "unknown keys ['colour']"),
        ({}, "models:\n  - name: a\n  - name: a\n", "used twice"),
        ({}, "models: 3\n", "must be a list"),
        ({}, "- 1\n", "mapping at the top level"),
        ({}, "models:\n  - path: builtin:other\n", "unknown built-in"),
    ],
)
def test_bad_configuration_names_the_problem(tmp_path, cli, yaml_text, fragment) -> None:
    if yaml_text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(yaml_text)
        cli = {**cli, "config": str(path)}
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(cli, {})
    assert fragment in str(info.value)


def test_api_keys_from_repeated_flag_or_comma_separated_env(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--api-key", "k1", "--api-key", "k2"])
    assert load_settings(vars(args), {"GATEWAY_API_KEYS": "x"}).api_keys == ("k1", "k2")
    assert load_settings({}, {"GATEWAY_API_KEYS": "a, b,c"}).api_keys == ("a", "b", "c")
    config = tmp_path / "c.yaml"
    config.write_text("api_keys: [y1, y2]\nmax_inputs: 7\ncors_allow_origins: https://a\n")
    settings = load_settings({"config": str(config)}, {})
    assert (settings.api_keys, settings.max_inputs) == (("y1", "y2"), 7)
    assert settings.cors_allow_origins == ("https://a",)


@pytest.mark.parametrize("flag", ["--max-inputs", "--request-timeout-s", "--max-body-bytes"])
def test_limits_must_be_positive(flag) -> None:
    args = build_parser().parse_args(["serve", flag, "0"])
    with pytest.raises(ConfigError, match=flag):
        load_settings(vars(args), {})


def test_rerank_options_per_model(tmp_path: Path) -> None:
    template = tmp_path / "template.jinja"
    template.write_text("{{ messages[0].content }} {{ messages[1].content }}")
    config = tmp_path / "models.yaml"
    config.write_text(
        "models:\n"
        "  - name: emb\n    path: builtin:all-MiniLM-L6-v2\n"
        "  - name: ce\n    path: org/ce\n    rerank_kind: cross-encoder\n"
        "    rerank_activation: raw\n    gpu_memory_utilization: 0.3\n"
        f"  - name: llm\n    path: org/llm\n    rerank_kind: llm\n    score_template: {template}\n"
        "    hf_overrides: {architectures: [Qwen3ForSequenceClassification],"
        " classifier_from_token: ['no', 'yes']}\n"
    )
    emb, ce, llm = load_settings({"config": str(config)}, {}).models
    assert (emb.engine.rerank_kind, emb.engine.rerank_activation) == ("auto", True)
    assert (ce.engine.rerank_kind, ce.engine.rerank_activation) == ("cross_encoder", False)
    assert ce.engine.gpu_memory_utilization == 0.3
    assert llm.engine.rerank_kind == "llm"
    assert llm.engine.score_template == template.read_text()
    assert llm.engine.hf_overrides == {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
    }


def test_rerank_options_from_flags_and_env() -> None:
    settings = load_settings(
        {
            "model": "org/reranker",
            "rerank_kind": "llm",
            "score_template": "{{ messages[0].content }}",
        },
        {"GATEWAY_RERANK_ACTIVATION": "raw", "GATEWAY_HF_OVERRIDES": '{"a": 1}'},
    )
    (model,) = settings.models
    assert model.engine.rerank_kind == "llm"
    assert model.engine.rerank_activation is False
    assert model.engine.score_template == "{{ messages[0].content }}"
    assert model.engine.hf_overrides == {"a": 1}


@pytest.mark.parametrize(
    "key, value",
    [("rerank_kind", "colbert"), ("rerank_activation", "softmax"), ("hf_overrides", "[1]")],
)
def test_bad_rerank_options_are_config_errors(key, value) -> None:
    with pytest.raises(ConfigError, match=key.replace("_", "-")):
        load_settings({"model": "org/m", key: value}, {})


def test_outputs_per_model_from_yaml_and_env(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        "models:\n"
        "  - name: m3\n    path: org/bge-m3\n    outputs: [dense, sparse]\n"
        "  - name: emb\n    path: builtin:all-MiniLM-L6-v2\n"
    )
    m3, emb = load_settings({"config": str(config)}, {}).models
    assert m3.engine.outputs == ("dense", "sparse") and emb.engine.outputs == ()
    (model,) = load_settings(
        {"model": "org/m"}, {"GATEWAY_MODEL_OUTPUTS": "Multivector,dense"}
    ).models
    assert model.engine.outputs == ("multivector", "dense")


@pytest.mark.parametrize("value", ["dense,colbert", "dense,dense"])
def test_bad_outputs_are_config_errors(value) -> None:
    with pytest.raises(ConfigError, match="--model-outputs"):
        load_settings({"model": "org/m", "outputs": value}, {})


def test_cpu_threads_default_all_and_respect_vllm_setting() -> None:
    assert load_settings({}, {}).cpu_threads == "all"
    assert load_settings({}, {"VLLM_CPU_OMP_THREADS_BIND": "auto"}).cpu_threads == "auto"
    assert (
        load_settings({"cpu_threads": "0-1"}, {"VLLM_CPU_OMP_THREADS_BIND": "auto"}).cpu_threads
        == "0-1"
    )
    assert load_settings({}, {"GATEWAY_CPU_THREADS": "1"}).cpu_threads == "1"


def test_a_model_may_be_marked_default_once(tmp_path) -> None:
    from gateway.config import ConfigError, load_settings

    config = tmp_path / "m.yaml"
    config.write_text("models:\n  - {name: a, path: /x}\n  - {name: b, path: /y, default: true}\n")
    settings = load_settings({"config": str(config)}, environ={})
    assert [m.default for m in settings.models] == [False, True]
    config.write_text(
        "models:\n  - {name: a, path: /x, default: true}\n  - {name: b, path: /y, default: yes}\n"
    )
    with pytest.raises(ConfigError, match="only one model"):
        load_settings({"config": str(config)}, environ={})


@pytest.mark.parametrize(
    "cli, env, source",
    [
        (["--api-key", ""], {}, "--api-key"),
        (["--api-key", "   "], {}, "--api-key"),
        (["--api-key", "k1", "--api-key", ""], {}, "--api-key"),
        ([], {"GATEWAY_API_KEYS": ","}, "GATEWAY_API_KEYS"),
        ([], {"GATEWAY_API_KEYS": ""}, "GATEWAY_API_KEYS"),
        ([], {"GATEWAY_API_KEYS": "a,,b"}, "GATEWAY_API_KEYS"),
        ([], {"GATEWAY_API_KEY_FILE": ""}, "--api-key-file"),
    ],
)
def test_an_empty_or_blank_api_key_is_a_startup_error_naming_its_source(cli, env, source) -> None:
    args = build_parser().parse_args(["serve", *cli])
    with pytest.raises(ConfigError, match=f"^{source}: .*(empty|blank)"):
        load_settings(vars(args), env)


@pytest.mark.parametrize("yaml_value", ['""', "", "[]", '[""]', '[k1, " "]', '","'])
def test_an_empty_api_key_in_the_yaml_file_is_a_startup_error(
    tmp_path: Path, yaml_value: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"api_keys: {yaml_value}\n")
    with pytest.raises(ConfigError, match=r"config file .*c\.yaml: `api_keys`: .*(key)"):
        load_settings({"config": str(config)}, {})


def test_api_key_file_one_key_a_line_with_comments_added_to_the_flag(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# rotated 2024-05\nfile-key-1\n\n   \n  file-key-2  \n#old-key\n")
    args = build_parser().parse_args(["serve", "--api-key", "flag-key"])
    settings = load_settings(vars(args), {"GATEWAY_API_KEY_FILE": str(secret)})
    # The file is the server's to read (and read again when it changes), not a copy here.
    assert (settings.api_keys, settings.api_key_file) == (("flag-key",), str(secret))
    ring = KeyRing(settings.api_keys, settings.api_key_file)
    assert all(ring.identify(key) for key in (b"flag-key", b"file-key-1", b"file-key-2"))
    assert ring.identify(b"old-key") is None


@pytest.mark.parametrize("content", ["", "\n  \n", "# only a comment\n#\n"])
def test_an_api_key_file_without_a_key_is_a_startup_error(tmp_path: Path, content) -> None:
    secret = tmp_path / "keys"
    secret.write_text(content)
    with pytest.raises(ConfigError, match="^--api-key-file: .* holds no key"):
        load_settings({"api_key_file": str(secret)}, {})
    with pytest.raises(ConfigError, match="^--api-key-file: cannot read"):
        load_settings({"api_key_file": str(tmp_path / "absent")}, {})


@pytest.mark.parametrize(
    ("cli", "environ", "url"),
    [
        ({}, {}, None),
        ({"otlp_endpoint": "http://c:4318"}, {}, "http://c:4318/v1/traces"),
        ({}, {"GATEWAY_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"}, "http://o:4318/v1/traces"),
        ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://o:1/t"}, "http://o:1/t"),
        (
            {"otlp_endpoint": "http://c:4318/v1/traces"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"},
            "http://c:4318/v1/traces",
        ),
        ({"otlp_endpoint": "http://c:4318"}, {"OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_the_otlp_endpoint_comes_from_the_option_else_the_opentelemetry_variables(
    cli, environ, url
) -> None:
    assert load_settings(cli, environ).otlp_endpoint == url
