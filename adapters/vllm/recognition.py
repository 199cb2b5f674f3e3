"""What a model folder holds, recognised from its files: which of vLLM's model classes runs it
(architecture overrides), which outputs (`adapters.base.OUTPUTS`) it offers, and which pooling
task computes each.

Pure functions over a folder's config.json, sentence-transformers modules.json and file
names, so that each kind is tested without an engine; `read_folder` is the one reader."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import OUTPUTS, EngineSpec

# What recognition calls each kind of model.
BGE_M3, SPLADE, COLBERT, CLASSIFIER, ENCODER = (
    "bge_m3",
    "splade",
    "colbert",
    "classifier",
    "encoder",
)
# bge-m3's heads next to the encoder's weights (FlagEmbedding's file names, read by vLLM).
SPARSE_HEAD, COLBERT_HEAD = "sparse_linear.pt", "colbert_linear.pt"
# vLLM's ColBERT architectures (token_embed with a projection).
_COLBERT_ARCHITECTURES = (
    "HF_ColBERT",
    "ColBERTModernBertModel",
    "ColBERTJinaRobertaModel",
    "ColBERTLfm2Model",
)
_SPLADE_POOLING = "SpladePooling"


@dataclass(frozen=True)
class Recognition:
    """A model folder as recognised: its kind, the config overrides vLLM needs to run it that
    way (explicit `hf_overrides` from the configuration win over these), the outputs its kind
    offers, and a classifier's labels."""

    kind: str = ENCODER
    hf_overrides: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("dense", "multivector")
    labels: tuple[str, ...] = ()
    multi_label: bool = False


@dataclass(frozen=True)
class Folder:
    """What recognition reads of a model folder."""

    name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    modules: Sequence[Mapping[str, Any]] = ()
    files: Collection[str] = ()


def recognise(folder: Folder, spec: EngineSpec) -> Recognition:
    """The kind of model in `folder`, given its configuration (`spec`: hf_overrides, outputs)."""
    config = {**folder.config, **spec.hf_overrides}
    architectures = [str(a) for a in config.get("architectures") or ()]
    model_type = str(config.get("model_type", ""))
    heads = [f for f in (SPARSE_HEAD, COLBERT_HEAD) if f in folder.files]
    if heads and model_type == "xlm-roberta":
        outputs: tuple[str, ...] = ("dense",)
        outputs += ("sparse",) if SPARSE_HEAD in heads else ()
        outputs += ("multivector",) if COLBERT_HEAD in heads else ()
        return Recognition(BGE_M3, {"architectures": ["BgeM3EmbeddingModel"]}, outputs)
    if "BertForMaskedLM" in architectures and _is_splade(folder, spec):
        return Recognition(
            SPLADE, {"architectures": ["BertSpladeSparseEmbeddingModel"]}, ("sparse",)
        )
    if any(a in _COLBERT_ARCHITECTURES for a in architectures) or "colbert_dim" in config:
        # vLLM builds the projection before its module is initialised when config.json has
        # `dim` (colbert-ai's name for it), which fails; without it, the width comes from
        # the projection's weights.
        overrides: dict[str, Any] = (
            {} if "HF_ColBERT" in architectures else {"architectures": ["HF_ColBERT"]}
        )
        if config.get("dim") is not None:
            overrides["dim"] = None
        return Recognition(COLBERT, overrides, ("multivector",))
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        if config.get("classifier_from_token"):
            # An LLM loaded as a classifier over tokens: one relevance score.
            return Recognition(CLASSIFIER, outputs=("score",))
        labels, multi = labels_of(config)
        outputs = ("score", "classify") if len(labels) == 1 else ("classify",)
        return Recognition(CLASSIFIER, outputs=outputs, labels=labels, multi_label=multi)
    return Recognition()


def _is_splade(folder: Folder, spec: EngineSpec) -> bool:
    """A masked LM is SPLADE when sentence-transformers pools it so, or when its name or its
    configured outputs say so (a folder without modules.json)."""
    pooled = any(_SPLADE_POOLING in str(m.get("type", "")) for m in folder.modules)
    return pooled or "splade" in folder.name.lower() or "sparse" in spec.outputs


def labels_of(config: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """A classifier's labels in id order (id2label; LABEL_i where it names none) and whether
    each label is its own yes/no (problem_type multi_label_classification)."""
    id2label = config.get("id2label") or {}
    count = int(config.get("num_labels") or len(id2label) or 2)
    labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count))
    return labels, config.get("problem_type") == "multi_label_classification"


# The pooling task each output comes from, by kind (ENCODER's for the kinds not listed).
_TASKS: dict[str, dict[str, str]] = {
    ENCODER: {"dense": "embed", "multivector": "token_embed", "classify": "classify"},
    BGE_M3: {"dense": "embed", "sparse": "token_classify", "multivector": "token_embed"},
    SPLADE: {"sparse": "embed", "multivector": "token_embed"},
    COLBERT: {"multivector": "token_embed"},
    CLASSIFIER: {"score": "classify", "classify": "classify"},
}


def task_of(kind: str, output: str) -> str | None:
    """The pooling task that computes `output` for a model of `kind`; None if none does."""
    return _TASKS.get(kind, _TASKS[ENCODER]).get(output)


def plan_outputs(
    recognition: Recognition,
    tasks: Collection[str],
    spec: EngineSpec,
    *,
    scores_pairs: bool,
) -> tuple[str, ...]:
    """The outputs the engine serves, in `OUTPUTS` order: the configured ones (each checked
    against what the loaded engine supports: ValueError naming what it can do), else what the
    kind offers and the engine supports; `score` exactly when it scores pairs."""
    offered = [o for o in OUTPUTS if (task_of(recognition.kind, o) or "") in tasks]
    if scores_pairs and "score" not in offered:
        offered.append("score")
    if spec.outputs:
        missing = [o for o in spec.outputs if o not in offered]
        if missing:
            raise ValueError(
                f"model '{spec.name}' is configured with outputs {list(spec.outputs)}, but "
                f"as a {recognition.kind} model on this engine it cannot compute "
                f"{', '.join(missing)}; it can compute: {', '.join(offered) or 'nothing'}"
            )
        wanted = set(spec.outputs)
    else:
        wanted = set(recognition.outputs)
    if scores_pairs:
        wanted.add("score")
    else:
        wanted.discard("score")
    return tuple(o for o in OUTPUTS if o in wanted and o in offered)


def read_folder(model: str) -> Folder:
    """config.json, modules.json and the file names of a local folder or of a hub id's cached
    snapshot; an empty `Folder` (a plain encoder, as vLLM decides) when neither is here."""
    path = _local(model)
    if path is None:
        return Folder(name=model)
    config = _json(path / "config.json")
    modules = _json(path / "modules.json")
    return Folder(
        name=model.rstrip("/").rsplit("/", 1)[-1],
        config=config if isinstance(config, dict) else {},
        modules=[m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else [],
        files=sorted(p.name for p in path.iterdir()),
    )


def _local(model: str) -> Path | None:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except (OSError, ValueError):
        return None  # not cached: vLLM downloads it, and recognition reads no files


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
