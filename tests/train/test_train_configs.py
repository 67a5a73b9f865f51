"""Every config shipped in train/configs parses and uses only known sections and fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from train import classifier, cv, export, normalizer
from train.__main__ import STAGES, apply_overrides
from train.common import RunConfig, load_config, model_config
from train.data import ADAPTERS
from train.data.splits import available
from train.losses import ClassificationWeights, NormalizerWeights

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "train" / "configs").glob("*.json"))
SECTION_FIELDS = {
    "normalizer": set(normalizer.DEFAULTS), "classifier": set(classifier.DEFAULTS),
    "export": set(export.DEFAULTS), "evaluate": cv.EVAL_KEYS,
}


def _model(c: dict) -> object:  # type: ignore[type-arg]
    """The config's model, with placeholder geometry calibration where the recipe takes it from
    the real-face pool at run time (train.geometry.pool_model_fields)."""
    from norface_rt.export.untrained import untrained_geometry_fields

    m = dict(c.get("model", {}))
    if m.get("geometry_inputs"):
        m = {**untrained_geometry_fields(), **m}
    return model_config(m)


def _data_specs(spec: object) -> list[dict]:  # type: ignore[type-arg]
    return list(spec) if isinstance(spec, list) else [spec]  # type: ignore[list-item]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path: Path) -> None:
    c = load_config(path)
    assert c["stage"] in STAGES
    _model(c)
    RunConfig.from_dict(c.get("run"))
    for section, fields in SECTION_FIELDS.items():
        assert set(c.get(section, {})) <= fields, (section, set(c.get(section, {})) - fields)
    weights = NormalizerWeights if c["stage"] == "normalizer" else ClassificationWeights
    assert set(c.get("loss_weights", {})) <= {f.name for f in dataclasses.fields(weights)}
    for key in ("data", "test_data"):
        for spec in _data_specs(c.get(key, [])):
            assert spec["kind"] in (*ADAPTERS, "shards")
            if spec.get("split_file"):
                assert spec["split_file"] in available()


def test_there_are_configs_for_every_stage() -> None:
    stages = {load_config(p)["stage"] for p in CONFIGS}
    assert stages == set(STAGES)


def test_overrides() -> None:
    c = apply_overrides({"run": {"steps": 1}}, ["run.steps=5", "run.device=cuda", "model.size=\"tiny\""])
    assert c == {"run": {"steps": 5, "device": "cuda"}, "model": {"size": "tiny"}}
    with pytest.raises(ValueError, match="KEY.PATH=VALUE"):
        apply_overrides({}, ["run.steps"])


def test_the_default_recipe_builds_one_architecture() -> None:
    """Each stage of the shipped recipe rebuilds the networks from its own model section, so the
    normalizer's options (residual decoder, EMM prior) must be the same in every stage that loads
    the normalizer's weights, or loading fails hours into the recipe."""
    root = Path(__file__).resolve().parents[2] / "train" / "configs"
    names = ["default_cpu_normalizer", "default_cpu_classifier", "default_cpu_export",
             "ablation_cpu_continue_no_normalized"]
    models = {n: model_config(load_config(root / f"{n}.json").get("model", {})) for n in names}
    first = models[names[0]]
    assert first.normalizer_residual and first.emm_position_prior > 0
    for n, m in models.items():
        assert m == first, n
    nor = load_config(root / "default_cpu_normalizer.json")["run"]["out_dir"]
    cla = load_config(root / "default_cpu_classifier.json")
    exp = load_config(root / "default_cpu_export.json")["export"]
    assert cla["classifier"]["normalizer_weights"] == exp["normalizer_weights"] == f"{nor}/normalizer.safetensors"
    assert exp["classifier_weights"] == f"{cla['run']['out_dir']}/classifier.safetensors"


def test_the_v3_recipe_continues_v2_with_one_architecture() -> None:
    """v3 keeps v2's normalizer and grows its classifier: the normalizer options must match v2's,
    and export must read the classifier the training stage writes, with the same pool."""
    root = Path(__file__).resolve().parents[2] / "train" / "configs"
    v2 = model_config(load_config(root / "default_cpu_classifier.json")["model"])
    cla = load_config(root / "default_cpu_classifier_v3.json")
    exp = load_config(root / "default_cpu_export_v3.json")
    m = _model(cla)
    assert (m.normalizer_residual, m.emm_position_prior, m.size) == (  # type: ignore[attr-defined]
        v2.normalizer_residual, v2.emm_position_prior, v2.size)
    assert m.geometry_inputs == ("blendshapes",)  # type: ignore[attr-defined]
    assert exp["export"]["classifier_weights"] == f"{cla['run']['out_dir']}/classifier.safetensors"
    assert exp["export"]["geometry_pool"] == cla["classifier"]["geometry_pool"]
    assert exp["export"]["normalizer_weights"] == cla["classifier"]["normalizer_weights"]
    held = set(cla["test_data"]["include_subjects"])
    assert held == set(cla["data"][0]["exclude_subjects"])
