"""The config reference: ``docs/config.md`` generated from the schema, and ``ecoclassify init``."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ecoclassify.config import reference as configdoc
from ecoclassify.cli.app import main
from ecoclassify.config import Config, load_config
from ecoclassify.config.reference import (
    DESCRIPTIONS,
    LIST_ITEM,
    WRITTEN_BY_ECOCLASSIFY,
    describe_schema,
    missing_descriptions,
    orphan_descriptions,
    render_config_reference,
    schema_keys,
)
from ecoclassify.errors import ConfigError, RunError
from ecoclassify.config.starter import SOURCES, init_config, render_starter_config, starter_values
from ecoclassify.config.backbones import get_backbone, list_backbones
from ecoclassify.cli.tool_commands import export_command, init_command

main.add_command(init_command)
main.add_command(export_command)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_config_doc", DOCS / "generate_config_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lookup(data: dict, path: str):
    for part in path.split("."):
        data = data[part]
    return data


# --- docs/config.md ---------------------------------------------------------------------------


def test_every_schema_key_has_a_description():
    assert missing_descriptions() == [], (
        "add these keys to DESCRIPTIONS in ecoclassify/configdoc.py, then run python3 docs/generate_config_doc.py")


def test_no_description_names_a_key_the_schema_no_longer_has():
    assert orphan_descriptions() == []


def test_a_new_key_without_a_description_is_reported(monkeypatch):
    monkeypatch.delitem(DESCRIPTIONS, "data.split.val")
    assert missing_descriptions() == ["data.split.val"]
    assert _generator().main(["--check"]) == 1


def test_every_section_has_a_docstring():
    for section in describe_schema():
        assert section.doc.strip(), f"{section.model.__name__} ({section.path or 'root'}) has no docstring"


def test_the_committed_config_reference_is_up_to_date():
    committed = (DOCS / "config.md").read_text(encoding="utf-8")
    assert committed == render_config_reference(), "docs/config.md is stale: run python3 docs/generate_config_doc.py"
    assert _generator().main(["--check"]) == 0


def test_the_reference_gives_every_key_its_type_default_allowed_values_and_meaning():
    text = render_config_reference()
    for key in schema_keys():
        assert f"| `{key}` |" in text, key
    assert ("| `data.split.method` | choice | `stratified` | stratified, group, predefined | `stratified`: "
            in text)
    assert "| `data.split.val` | float | `0.15` | [0, 1) |" in text
    assert "| `training.stages[].epochs` | int | required | [1, 10000] |" in text
    assert "| `training.cache_features` | choice or bool | `auto` | auto, true, false |" in text
    # Choices a validator checks against a registry are listed too, so a new backbone shows up.
    backbone_row = next(line for line in text.splitlines() if line.startswith("| `model.backbone`"))
    assert all(name in backbone_row for name in list_backbones())


def test_the_generator_rewrites_a_stale_reference(tmp_path, monkeypatch):
    generator = _generator()
    stale = tmp_path / "config.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(generator, "DOC", stale)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert stale.read_text(encoding="utf-8") == render_config_reference()


# --- ecoclassify init -----------------------------------------------------------------------


@pytest.mark.parametrize("backbone", list_backbones())
def test_init_writes_a_loadable_config_with_defaults_that_suit_every_backbone(tmp_path, backbone):
    path = init_config(tmp_path / "config.yaml", backbone=backbone)
    config = load_config(path)
    spec = get_backbone(backbone)
    assert config.model.backbone == backbone
    assert config.data.image_size == (spec.default_size, spec.default_size)
    if backbone == "custom_cnn":
        assert config.model.weights == "none"
        assert [stage.trainable for stage in config.training.stages] == ["all"]  # mode: scratch
    elif spec.pretrained_file:
        assert config.model.weights.name == spec.pretrained_file
    else:
        assert config.model.weights == "imagenet"
        assert [stage.name for stage in config.training.stages] == ["head", "finetune"]  # mode: finetune
        assert config.training.stages[1].trainable.from_layer == spec.fine_tune_from
    # Everything else is the schema default: the file is the defaults, written out and explained.
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    expected = Config.from_dict(
        {"data": {"source": "folders", "root": "path/to/images", "image_size": spec.default_size},
         "model": {"backbone": backbone, "weights": written["model"]["weights"]},
         "training": {"mode": written["training"]["mode"]}},
        base_dir=tmp_path)
    assert config.comparable() == expected.comparable()


@pytest.mark.parametrize("source", SOURCES)
def test_init_writes_a_loadable_config_for_every_data_source(tmp_path, source):
    config = load_config(init_config(tmp_path / f"{source}.yaml", backbone="mobilenet_v2", source=source))
    assert config.data.source == source
    if source in ("csv", "coco"):
        assert config.data.labels is not None and config.data.labels.parent == tmp_path / "path" / "to"
    if source == "folders":
        assert config.data.root == tmp_path / "path" / "to" / "images"


def test_the_starter_config_lists_every_key_with_a_comment(tmp_path):
    text = render_starter_config("vgg16", "folders")
    written = yaml.safe_load(text)
    # Keys of a section that is null unless written (data.crops) are shown commented out.
    optional = [key for key in schema_keys() if key.startswith("data.crops.")]
    assert re.search(r"^  crops: null +# mapping or null$", text, re.M)
    assert re.search(r"^    # min_confidence: 0.2 +# float, \[0, 1\]$", text, re.M)
    for key in schema_keys():
        if key in WRITTEN_BY_ECOCLASSIFY or LIST_ITEM in key or key in optional:
            continue
        _lookup(written, key)  # KeyError names a key the starter forgot
    key_lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
                 and not line.rstrip().endswith(":")]
    listed = [k for k in schema_keys() if LIST_ITEM in k]
    assert len(key_lines) == len(schema_keys()) - len(WRITTEN_BY_ECOCLASSIFY) - len(listed) - len(optional)
    assert all(" # " in line for line in key_lines), [line for line in key_lines if " # " not in line]
    assert re.search(r"^    method: stratified +# stratified \| group \| predefined$", text, re.M)
    assert re.search(r"^  seed: 42 +# int, >= 0$", text, re.M)


def test_the_commented_stage_example_is_what_the_mode_expands_to(tmp_path):
    text = render_starter_config("vgg16", "demo")
    example = [line.split("#   - ", 1)[1] for line in text.splitlines() if "#   - " in line]
    stages = [yaml.safe_load(item) for item in example]
    config = Config.from_dict(yaml.safe_load(text))
    assert stages == [stage.model_dump(mode="json", include={"name", "epochs", "learning_rate", "trainable"})
                      for stage in config.training.stages]


def test_starter_values_refuse_an_unknown_backbone_or_source():
    with pytest.raises(ConfigError, match=r"backbone must be one of: .*Received: 'mobilenet_v9'.*did you mean"):
        starter_values("mobilenet_v9")
    with pytest.raises(ConfigError, match=r"source must be one of: folders, csv, coco, demo, camtrapdp. Received: 'cvs'"):
        starter_values("vgg16", "cvs")


def test_the_init_command_writes_the_file_and_refuses_to_overwrite_it_without_force(tmp_path):
    path = tmp_path / "configs" / "starter.yaml"
    runner = CliRunner()
    result = runner.invoke(main, ["init", "--backbone", "custom_cnn", "--source", "demo", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output
    assert load_config(path).data.source == "demo"

    path.write_text("# my edits\n", encoding="utf-8")
    again = runner.invoke(main, ["init", str(path)])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    assert "Traceback" not in again.output
    assert path.read_text(encoding="utf-8") == "# my edits\n"

    forced = runner.invoke(main, ["init", "--force", str(path)])
    assert forced.exit_code == 0, forced.output
    assert load_config(path).model.backbone == "vgg16"  # the schema default


def test_the_init_command_names_the_closest_backbones_for_a_typo(tmp_path):
    result = CliRunner().invoke(main, ["init", "--backbone", "vgg61", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "Received: 'vgg61'" in result.output and "'vgg16'" in result.output
    assert not (tmp_path / "c.yaml").exists()


def test_init_refuses_a_folder_as_config(tmp_path):
    with pytest.raises(RunError, match="must be a file path"):
        init_config(tmp_path)


def test_the_reference_and_the_starter_share_one_description_table():
    # The starter's comments come from DESCRIPTIONS: changing one changes both.
    assert configdoc.DESCRIPTIONS["experiment.seed"].rstrip(".") in render_starter_config()


def test_init_and_the_reference_never_import_tensorflow():
    code = ("import sys, ecoclassify.config.reference, ecoclassify.config.starter, ecoclassify.cli.tool_commands; "
            "ecoclassify.config.starter.render_starter_config(); sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_init_command_offers_the_schemas_sources_and_default_backbone():
    from ecoclassify.config import ModelConfig
    from ecoclassify.cli.tool_commands import DEFAULT_BACKBONE

    params = {p.name: p for p in init_command.params}
    assert tuple(params["source"].type.choices) == SOURCES
    assert DEFAULT_BACKBONE == ModelConfig.model_fields["backbone"].default
