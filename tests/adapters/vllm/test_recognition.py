"""Which model a folder holds, from its files alone, and which outputs the engine serves."""

from __future__ import annotations

import json

import pytest

from adapters.base import EngineSpec
from adapters.vllm.recognition import (
    BGE_M3,
    CLASSIFIER,
    COLBERT,
    ENCODER,
    SPLADE,
    Folder,
    Recognition,
    plan_outputs,
    read_folder,
    recognise,
    task_of,
)

SPEC = EngineSpec(name="m", model="/m")
XLMR = {"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"}
MLM = {"architectures": ["BertForMaskedLM"], "model_type": "bert"}
SPLADE_MODULES = [
    {"path": "", "type": "sentence_transformers.sparse_encoder.modules.MLMTransformer"},
    {
        "path": "1_SpladePooling",
        "type": "sentence_transformers.sparse_encoder.modules.SpladePooling",
    },
]


def classifier(**config) -> dict:
    return {"architectures": ["BertForSequenceClassification"], "model_type": "bert", **config}


def test_bge_m3_from_its_head_files() -> None:
    found = recognise(
        Folder(config=XLMR, files=["config.json", "sparse_linear.pt", "colbert_linear.pt"]), SPEC
    )
    assert found == Recognition(
        BGE_M3, {"architectures": ["BgeM3EmbeddingModel"]}, ("dense", "sparse", "multivector")
    )


def test_bge_m3_offers_only_the_heads_it_has() -> None:
    found = recognise(Folder(config=XLMR, files=["sparse_linear.pt"]), SPEC)
    assert found.outputs == ("dense", "sparse")


def test_xlm_roberta_without_heads_is_a_plain_encoder() -> None:
    assert recognise(Folder(config=XLMR, files=["config.json"]), SPEC).kind == ENCODER


@pytest.mark.parametrize(
    "folder, spec",
    [
        (Folder(config=MLM, modules=SPLADE_MODULES), SPEC),
        (Folder(name="splade-v3", config=MLM), SPEC),
        (Folder(name="mlm", config=MLM), EngineSpec(name="m", model="/m", outputs=("sparse",))),
    ],
    ids=["modules.json", "name", "configured outputs"],
)
def test_splade_from_a_masked_lm(folder: Folder, spec: EngineSpec) -> None:
    found = recognise(folder, spec)
    assert found.kind == SPLADE and found.outputs == ("sparse",)
    assert found.hf_overrides == {"architectures": ["BertSpladeSparseEmbeddingModel"]}


def test_a_masked_lm_alone_is_not_splade() -> None:
    assert recognise(Folder(name="bert-base", config=MLM), SPEC).kind == ENCODER


def test_colbert_drops_the_dim_that_fails_vllms_init() -> None:
    found = recognise(Folder(config={"architectures": ["HF_ColBERT"], "dim": 128}), SPEC)
    assert found == Recognition(COLBERT, {"dim": None}, ("multivector",))


def test_labels_in_id_order_and_multi_label() -> None:
    config = classifier(
        id2label={"2": "positive", "0": "negative", "1": "neutral"},
        problem_type="multi_label_classification",
    )
    found = recognise(Folder(config=config), SPEC)
    assert found.kind == CLASSIFIER and found.outputs == ("classify",)
    assert found.labels == ("negative", "neutral", "positive") and found.multi_label


def test_one_label_classifier_scores_pairs_and_classifies() -> None:
    found = recognise(Folder(config=classifier(id2label={"0": "LABEL_0"})), SPEC)
    assert found.outputs == ("score", "classify") and not found.multi_label


def test_llm_loaded_as_classifier_only_scores() -> None:
    spec = EngineSpec(
        name="m",
        model="/m",
        hf_overrides={
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"],
        },
    )
    found = recognise(Folder(config={"architectures": ["Qwen3ForCausalLM"]}), spec)
    assert found.outputs == ("score",)


def test_task_per_output_by_kind() -> None:
    assert task_of(SPLADE, "sparse") == "embed"
    assert task_of(BGE_M3, "sparse") == "token_classify"
    assert task_of(ENCODER, "multivector") == "token_embed"
    assert task_of(COLBERT, "dense") is None


def test_plan_keeps_what_the_engine_supports() -> None:
    encoder = Recognition()
    assert plan_outputs(encoder, ["embed", "token_embed"], SPEC, scores_pairs=False) == (
        "dense",
        "multivector",
    )
    assert plan_outputs(encoder, ["embed"], SPEC, scores_pairs=False) == ("dense",)
    one_label = Recognition(CLASSIFIER, outputs=("score", "classify"), labels=("LABEL_0",))
    assert plan_outputs(one_label, ["classify"], SPEC, scores_pairs=True) == ("classify", "score")


def test_configured_outputs_narrow_the_plan() -> None:
    spec = EngineSpec(name="m", model="/m", outputs=("dense",))
    assert plan_outputs(Recognition(), ["embed", "token_embed"], spec, scores_pairs=False) == (
        "dense",
    )


def test_configured_output_the_engine_cannot_compute_fails_the_start() -> None:
    spec = EngineSpec(name="minilm", model="/m", outputs=("dense", "sparse"))
    with pytest.raises(
        ValueError, match=r"cannot compute sparse; it can compute: dense, multivector"
    ):
        plan_outputs(Recognition(), ["embed", "token_embed"], spec, scores_pairs=False)


def test_read_folder_reads_config_modules_and_names(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(MLM))
    (tmp_path / "modules.json").write_text(json.dumps(SPLADE_MODULES))
    (tmp_path / "colbert_linear.pt").write_bytes(b"")
    folder = read_folder(str(tmp_path))
    assert folder.config == MLM and list(folder.modules) == SPLADE_MODULES
    assert "colbert_linear.pt" in folder.files and folder.name == tmp_path.name


def test_read_folder_of_an_uncached_hub_id_is_empty(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert read_folder("nobody/no-such-model") == Folder(name="nobody/no-such-model")
