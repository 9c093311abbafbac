"""Config validation: every error names its key path, the allowed values and what was received."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecoclassify.config import LOGGED_METRICS, Config, load_config
from ecoclassify.errors import ConfigError
from ecoclassify.config.backbones import get_backbone, list_backbones
from ecoclassify.config.yamlio import load_yaml_text

CUSTOM = {"backbone": "custom_cnn", "weights": "none"}


def config_error(data: dict, base_dir: Path | None = None) -> str:
    """The message of the ConfigError that ``data`` raises."""
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data, base_dir=base_dir)
    return str(info.value)


def load_error(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


@pytest.fixture
def yaml_file(tmp_path):
    """Write raw YAML text to ``tmp_path/config.yaml``."""

    def write(text: str) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --- unknown and duplicate keys -------------------------------------------------------------


def test_a_misspelt_section_lists_the_valid_sections_and_suggests_the_right_one():
    message = config_error({"data": {"root": "x"}, "trainig": {"epochs": 3}})
    assert message.startswith("trainig is not a valid key in the top level.")
    assert "Valid keys: augmentation, data, experiment, model, provenance, report, training." in message
    assert "Received: 'trainig'" in message
    assert message.endswith("(did you mean 'training'?)")


def test_a_misspelt_nested_key_names_the_key_path_and_suggests_the_right_one():
    message = config_error({"data": {"root": "x", "split": {"methd": "group"}}})
    assert message.startswith("data.split.methd is not a valid key in data.split.")
    assert "Valid keys: group_by, method, test, val." in message
    assert message.endswith("Received: 'methd' (did you mean 'method'?)")


def test_a_misspelt_key_inside_a_list_item_names_its_index(tmp_path):
    stages = [{"epochs": 1, "learning_rate": 0.001}, {"epochs": 1, "learning_rat": 0.001}]
    message = config_error({"data": {"root": "x"}, "training": {"stages": stages}})
    assert "training.stages[1].learning_rat is not a valid key in training.stages[1]" in message
    assert "(did you mean 'learning_rate'?)" in message


def test_a_duplicate_yaml_key_names_the_key_and_both_lines(yaml_file):
    path = yaml_file("data:\n  root: images\ntraining:\n  batch_size: 8\n  batch_size: 16\n")
    message = load_error(path)
    assert "duplicate key 'batch_size'" in message
    assert str(path) in message
    assert "line 5" in message and "first defined on line 4" in message


def test_a_duplicate_section_is_refused_rather_than_silently_replaced(yaml_file):
    path = yaml_file("data: {root: a}\ntraining: {epochs: 3}\ntraining: {batch_size: 4}\n")
    assert "duplicate key 'training'" in load_error(path)


# --- wrong types and out-of-range values ----------------------------------------------------


def test_a_value_of_the_wrong_type_names_the_key_and_echoes_the_value():
    message = config_error({"data": {"root": "x"}, "training": {"batch_size": "big"}})
    assert message.startswith("training.batch_size must be a valid integer")
    assert message.endswith("Received: 'big'")


def test_a_section_given_as_a_scalar_names_the_section():
    message = config_error({"data": {"root": "x"}, "augmentation": "yes please"})
    assert message.startswith("augmentation must be a valid dictionary")
    assert "Received: 'yes please'" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"data": {"root": "x"}, "training": {"batch_size": 0}},
            "training.batch_size must be greater than or equal to 1. Received: 0",
        ),
        (
            {"data": {"root": "x"}, "training": {"epochs": 0}},
            "training.epochs must be greater than or equal to 1. Received: 0",
        ),
        (
            {"data": {"root": "x", "split": {"val": 0.5, "test": 0.5}}},
            "data.split: val + test must leave a training set (val + test < 0.95). Received: val=0.5, test=0.5",
        ),
        (
            {"data": {"root": "x", "split": {"val": 1.0}}},
            "data.split.val must be less than 1. Received: 1.0",
        ),
        (
            {"data": {"root": "x", "image_size": [64, 16]}, "model": {"backbone": "vgg16"}},
            "data.image_size must be at least 32 px per side for backbone 'vgg16'. Received: [64, 16]",
        ),
        (
            {"data": {"root": "x", "image_size": 4096}},
            "data.image_size must be between 8 and 2048 pixels per side. Received: [4096, 4096]",
        ),
        (
            {"data": {"root": "x"}, "training": {"stages": [{"epochs": 0, "learning_rate": 0.01}]}},
            "training.stages[0].epochs must be greater than or equal to 1. Received: 0",
        ),
    ],
    ids=["batch_size_0", "epochs_0", "no_training_set", "val_1", "below_backbone_minimum", "too_big", "stage_epochs"],
)
def test_an_out_of_range_value_names_the_key_the_limit_and_the_value(data, expected):
    assert config_error(data) == expected


@pytest.mark.parametrize("backbone", list_backbones())
def test_image_size_below_each_backbones_minimum_is_refused_naming_the_backbone(backbone):
    spec = get_backbone(backbone)
    weights = "imagenet" if spec.imagenet else "none"
    too_small = spec.min_size - 1
    message = config_error(
        {"data": {"root": "x", "image_size": too_small}, "model": {"backbone": backbone, "weights": weights}}
    )
    assert message.startswith(f"data.image_size must be at least {spec.min_size} px per side")
    assert repr(backbone) in message
    assert f"Received: [{too_small}, {too_small}]" in message


def test_several_problems_are_reported_together_each_with_its_key_path():
    message = config_error({"data": {"root": "x"}, "training": {"batch_size": 0, "epochs": 0}})
    assert message.splitlines() == [
        "invalid config:",
        "  - training.batch_size must be greater than or equal to 1. Received: 0",
        "  - training.epochs must be greater than or equal to 1. Received: 0",
    ]


# --- unknown choices ----------------------------------------------------------------------------


def test_an_unknown_split_method_lists_the_methods_and_echoes_the_value():
    message = config_error({"data": {"root": "x", "split": {"method": "stratify"}}})
    assert message == (
        "data.split.method must be one of: group, predefined, stratified. Received: 'stratify' "
        "(did you mean 'stratified'?)"
    )


def test_an_unknown_choice_far_from_every_option_gets_no_suggestion():
    message = config_error({"data": {"root": "x", "on_corrupt": "zzz"}})
    assert message == "data.on_corrupt must be one of: error, exclude. Received: 'zzz'"


def test_an_unknown_backbone_lists_every_registered_backbone_and_suggests_close_ones():
    message = config_error({"data": {"root": "x"}, "model": {"backbone": "vgg61"}})
    assert message.startswith(f"model.backbone must be one of: {', '.join(list_backbones())}. Received: 'vgg61'")
    assert "did you mean" in message and "'vgg16'" in message


@pytest.mark.parametrize("trainable", ["some", {"last": 2}, {"last_n": 2, "from_layer": "x"}, 3])
def test_a_bad_trainable_names_the_stage_and_lists_the_forms_allowed(trainable):
    stages = [{"epochs": 1, "learning_rate": 0.01}, {"epochs": 1, "learning_rate": 0.01, "trainable": trainable}]
    message = config_error({"data": {"root": "x"}, "training": {"stages": stages}})
    assert message == (
        "training.stages[1].trainable must be one of: none, all, {last_n: N}, {from_layer: LAYER_NAME}. "
        f"Received: {trainable!r}"
    )


def test_a_trainable_last_n_of_zero_names_the_nested_key():
    stages = [{"epochs": 1, "learning_rate": 0.01, "trainable": {"last_n": 0}}]
    message = config_error({"data": {"root": "x"}, "training": {"stages": stages}})
    assert message == "training.stages[0].trainable.last_n must be greater than or equal to 1. Received: 0"


def test_an_unknown_monitor_lists_the_logged_metrics_and_suggests_the_right_one():
    message = config_error({"data": {"root": "x"}, "training": {"monitor": "val_acc"}})
    assert message.startswith(f"training.monitor must be one of: {', '.join(LOGGED_METRICS)}. Received: 'val_acc'")
    assert "'val_accuracy'" in message


# --- cross-field rules ------------------------------------------------------------------------


def test_mode_and_stages_together_are_refused_with_both_named():
    stages = [{"epochs": 1, "learning_rate": 0.01}]
    message = config_error({"data": {"root": "x"}, "training": {"mode": "finetune", "stages": stages}})
    assert message.startswith("training.mode and stages are alternatives")
    assert "Received: mode='finetune' and 1 stage(s)" in message


def test_a_csv_source_without_a_labels_file_names_data_labels():
    message = config_error({"data": {"source": "csv", "root": "x"}})
    assert message.startswith("data.labels is required for source 'csv'")


def test_a_folders_source_without_a_root_names_data_root():
    assert config_error({"data": {"source": "folders"}}).startswith("data.root is required for source 'folders'")


def test_a_group_split_without_group_by_names_data_split_group_by():
    message = config_error({"data": {"root": "x", "split": {"method": "group"}}})
    assert message.startswith("data.split.group_by is required for method 'group'")
    assert message.endswith("Received: None")


def test_imagenet_weights_for_the_lite_backbones_pass_validation_without_importing_their_package():
    code = (
        "import sys; from ecoclassify.config import Config\n"
        "for n in ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2'):\n"
        "    c = Config.from_dict({'data': {'root': 'x'}, 'model': {'backbone': n, 'weights': 'imagenet'}})\n"
        "    assert c.model.weights == 'imagenet'\n"
        "print(sorted(m for m in sys.modules if 'pytorch_model' in m or m.startswith(('tensorflow', 'keras'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_imagenet_weights_for_the_custom_cnn_are_refused_naming_model_weights():
    message = config_error({"data": {"root": "x"}, "model": {"backbone": "custom_cnn", "weights": "imagenet"}})
    assert message.startswith("model.weights 'imagenet' is not available for backbone 'custom_cnn'")
    assert "'none'" in message


def test_finetune_mode_on_a_backbone_without_a_boundary_names_training_mode():
    message = config_error({"data": {"root": "x"}, "model": CUSTOM, "training": {"mode": "finetune"}})
    assert message.startswith("training.mode 'finetune' needs a fine-tuning boundary")
    assert "training.stages" in message


def test_a_weights_file_with_the_wrong_suffix_is_refused_listing_the_accepted_suffixes():
    message = config_error({"data": {"root": "x"}, "model": {"weights": "weights.txt"}}, base_dir=Path("/base"))
    assert message == (
        "model.weights for 'vgg16' must be a file ending in one of: .weights.h5, .h5. Received: '/base/weights.txt'"
    )


def test_a_config_without_data_says_data_is_required(yaml_file):
    assert load_error(yaml_file("# nothing yet\n")) == "data is required"


def test_a_yaml_file_that_is_not_a_mapping_is_refused(yaml_file):
    assert "must contain a mapping of sections. Received: list" in load_error(yaml_file("- data\n- model\n"))


def test_a_missing_config_file_is_a_config_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert load_error(missing) == f"config file not found: {missing}"


# --- YAML reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "-2e+5", "1.0e-3", ".5", "3."])
def test_yaml_scientific_notation_without_a_dot_is_read_as_a_float(text):
    value = load_yaml_text(f"x: {text}")["x"]
    assert isinstance(value, float) and value == float(text)


@pytest.mark.parametrize("text", ["1", "0o7", "1_000", "true", "null", "1e3x", "v1.2"])
def test_yaml_values_that_are_not_floats_keep_their_type(text):
    assert not isinstance(load_yaml_text(f"x: {text}")["x"], float)


def test_a_yaml_1e_minus_3_reaches_the_config_as_a_number(yaml_file):
    # class_weight mappings accept numbers only, so a string "1e-3" would be refused here.
    path = yaml_file(
        "data: {root: images}\n"
        "training:\n  class_weight: {deer: 1e-3, fox: 2}\n"
        "  stages:\n    - {epochs: 1, learning_rate: 1e-3}\n"
    )
    config = load_config(path)
    assert config.training.class_weight == {"deer": 0.001, "fox": 2.0}
    assert config.training.stages[0].learning_rate == 0.001


def test_the_yaml_loader_refuses_python_tags_and_never_runs_them(yaml_file, tmp_path):
    marker = tmp_path / "created_by_yaml"
    path = yaml_file(f"data: {{root: x}}\nexperiment:\n  name: !!python/object/apply:os.mkdir ['{marker}']\n")
    message = load_error(path)
    assert "is not valid YAML" in message and "python/object/apply:os.mkdir" in message
    assert not marker.exists()


def test_the_yaml_loader_refuses_python_name_tags(yaml_file):
    assert "is not valid YAML" in load_error(yaml_file("data: {root: !!python/name:os.system ''}\n"))


# --- paths --------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder_not_the_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    path = project / "exp.yaml"
    path.write_text(
        "experiment: {name: x, output_dir: out/runs}\n"
        "data: {source: csv, root: ../images, labels: labels/all.csv}\n"
        "model: {weights: weights/best.weights.h5}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "project" / "exp.yaml")
    assert config.experiment.output_dir == project / "out" / "runs"
    assert config.data.root.resolve() == tmp_path / "images"
    assert config.data.labels == project / "labels" / "all.csv"
    assert config.model.weights == project / "weights" / "best.weights.h5"


def test_absolute_paths_are_kept_as_written(tmp_path, write_config):
    root = tmp_path / "somewhere" / "images"
    config = load_config(write_config(tmp_path / "cfg", {"data": {"root": str(root)}}))
    assert config.data.root == root


def test_the_default_output_dir_resolves_against_the_config_folder_when_experiment_is_omitted(
    tmp_path, monkeypatch, write_config
):
    path = write_config(tmp_path / "project", {"data": {"root": "images"}})
    monkeypatch.chdir(tmp_path)
    assert load_config(path).experiment.output_dir == tmp_path / "project" / "runs"


# --- --set overrides ----------------------------------------------------------------------------


@pytest.fixture
def staged_config(write_config, tmp_path):
    return write_config(
        tmp_path,
        {
            "data": {"root": "images", "split": {"val": 0.1}},
            "model": CUSTOM,
            "training": {
                "batch_size": 8,
                "stages": [
                    {"name": "warmup", "epochs": 2, "learning_rate": 0.01},
                    {"name": "all", "epochs": 3, "learning_rate": 0.0001, "trainable": "all"},
                ],
            },
        },
    )


def test_a_set_override_replaces_a_yaml_value(staged_config):
    assert load_config(staged_config, ["training.batch_size=16"]).training.batch_size == 16


def test_set_values_are_parsed_as_yaml(staged_config):
    config = load_config(
        staged_config, ["data.split.val=0.2", "model.head.dense=[8, 4]", "augmentation.enabled=false"]
    )
    assert config.data.split.val == 0.2
    assert config.model.head.dense == [8, 4]
    assert config.augmentation.enabled is False


def test_a_set_override_creates_missing_sections(staged_config):
    config = load_config(staged_config, ["experiment.seed=7", "data.demo.images_per_class=9"])
    assert config.experiment.seed == 7
    assert config.data.demo.images_per_class == 9


def test_a_set_override_addresses_a_list_item_by_index(staged_config):
    config = load_config(staged_config, ["training.stages.1.epochs=7"])
    assert [stage.epochs for stage in config.training.stages] == [2, 7]
    assert [stage.name for stage in config.training.stages] == ["warmup", "all"]


def test_a_set_override_with_an_index_past_the_end_names_the_list_length(staged_config):
    message = load_error(staged_config, ["training.stages.5.epochs=7"])
    assert message == "--set training.stages.5.epochs: training.stages.5 is not an index of a list of 2 item(s)"


def test_a_set_override_indexing_stages_that_come_from_mode_explains_what_to_do(tmp_path, write_config):
    path = write_config(tmp_path, {"data": {"root": "images"}})
    message = load_error(path, ["training.stages.0.epochs=7"])
    assert message.startswith("--set training.stages.0.epochs: training.stages is not a list in this config")


def test_a_set_override_naming_an_unknown_key_gives_the_unknown_key_error(staged_config):
    message = load_error(staged_config, ["training.batchsize=16"])
    assert message.startswith("training.batchsize is not a valid key in training.")
    assert message.endswith("Received: 'batchsize' (did you mean 'batch_size'?)")


def test_a_set_override_walking_through_a_value_says_it_is_not_a_section(staged_config):
    message = load_error(staged_config, ["training.batch_size.x=3"])
    assert message == "--set training.batch_size.x: training.batch_size is a value, not a section"


@pytest.mark.parametrize("item", ["training.batch_size", "=16", "training..batch_size=16", " =3"])
def test_a_malformed_set_override_shows_the_expected_form(staged_config, item):
    message = load_error(staged_config, [item])
    assert message == f"--set expects key.path=value (e.g. training.batch_size=16). Received: {item!r}"


def test_a_set_override_that_is_not_yaml_names_the_key(staged_config):
    message = load_error(staged_config, ["training.batch_size=[1"])
    assert message.startswith("--set training.batch_size is not valid YAML")


def test_an_out_of_range_set_override_is_validated_like_the_file(staged_config):
    assert load_error(staged_config, ["training.batch_size=0"]) == (
        "training.batch_size must be greater than or equal to 1. Received: 0"
    )


def test_precedence_is_defaults_then_yaml_then_set(staged_config):
    default = load_config(staged_config)
    overridden = load_config(staged_config, ["training.batch_size=16", "data.split.test=0.3"])
    assert default.training.epochs == 10  # default, in neither the file nor --set
    assert default.training.batch_size == 8 and default.data.split.val == 0.1  # the file beats the default
    assert overridden.training.batch_size == 16 and overridden.data.split.test == 0.3  # --set beats the file
    assert overridden.data.split.val == 0.1  # the file's other keys survive


def test_later_set_overrides_win_over_earlier_ones(staged_config):
    config = load_config(staged_config, ["training.batch_size=16", "training.batch_size=4"])
    assert config.training.batch_size == 4


# --- training modes -----------------------------------------------------------------------------

FINETUNABLE = [name for name in list_backbones() if get_backbone(name).fine_tune_from]


def test_at_least_one_registered_backbone_can_be_fine_tuned():
    assert "vgg16" in FINETUNABLE


@pytest.mark.parametrize("backbone", FINETUNABLE)
def test_finetune_mode_expands_into_a_head_stage_and_a_fine_tuning_stage_at_1e_5(backbone):
    spec = get_backbone(backbone)
    weights = f"weights/{spec.pretrained_file}" if spec.pretrained_file else "imagenet"
    config = Config.from_dict({"data": {"root": "x"}, "model": {"backbone": backbone, "weights": weights},
                               "training": {"mode": "finetune", "epochs": 3}})
    head, finetune = config.training.stages
    assert (head.name, head.epochs, head.learning_rate, head.trainable) == ("head", 3, 1e-3, "none")
    assert finetune.name == "finetune"
    assert finetune.learning_rate == 1e-5
    assert finetune.trainable.from_layer == get_backbone(backbone).fine_tune_from
    assert config.training.mode is None  # the stages are now explicit, so the config can be reloaded


def test_transfer_is_the_default_mode_and_trains_only_the_head():
    (stage,) = Config.from_dict({"data": {"root": "x"}}).training.stages
    assert (stage.name, stage.trainable, stage.learning_rate) == ("head", "none", 1e-3)


def test_scratch_mode_trains_everything_from_the_first_epoch():
    config = Config.from_dict(
        {"data": {"root": "x"}, "model": CUSTOM, "training": {"mode": "scratch", "epochs": 4, "learning_rate": 0.01}}
    )
    (stage,) = config.training.stages
    assert (stage.name, stage.epochs, stage.learning_rate, stage.trainable) == ("scratch", 4, 0.01, "all")


# --- purity and round trips ---------------------------------------------------------------------


def test_validation_creates_nothing_even_when_output_dir_and_data_root_do_not_exist(tmp_path, folder_snapshot):
    path = tmp_path / "config.yaml"
    path.write_text(
        "experiment: {name: pure, output_dir: not/yet/runs}\n"
        "data: {source: demo, root: not/yet/demo}\n"
        "model: {backbone: custom_cnn, weights: none}\n"
    )
    before = folder_snapshot(tmp_path)
    config = load_config(path, ["data.demo.images_per_class=6"])
    assert config.experiment.output_dir == tmp_path / "not" / "yet" / "runs"
    assert folder_snapshot(tmp_path) == before
    assert not config.experiment.output_dir.exists() and not config.data.root.exists()


ROUND_TRIP = {
    "folders_transfer": {"experiment": {"name": "a", "seed": 3}, "data": {"root": "images", "image_size": 96}},
    "csv_group_finetune": {
        "experiment": {"name": "b", "output_dir": "../runs"},
        "data": {"source": "csv", "labels": "labels.csv", "split": {"method": "group", "group_by": "site"},
                 "include_labels": ["deer", "fox"]},
        "model": {"backbone": "mobilenet_v2", "weights": "w/start.weights.h5", "head": {"dense": [], "dropout": 0}},
        "training": {"mode": "finetune", "class_weight": {"deer": 1e-3, "fox": 2}, "monitor": "val_loss"},
        "report": {"target_precisions": [0.9]},
    },
    "custom_stages": {
        "experiment": {"name": "c"},
        "data": {"source": "demo"},
        "model": {"backbone": "custom_cnn", "weights": "none", "custom_cnn": {"filters": [8, 16]}},
        "training": {"stages": [{"epochs": 2, "learning_rate": 1e-3, "trainable": {"last_n": 2}, "optimizer": "sgd"},
                                {"epochs": 1, "learning_rate": 1e-5, "trainable": {"from_layer": "conv_1"}}]},
    },
    "minimal": {"data": {"root": "images"}},
}


@pytest.mark.parametrize("data", list(ROUND_TRIP.values()), ids=list(ROUND_TRIP))
def test_to_yaml_round_trips_through_load_config_to_an_equal_config(tmp_path, write_config, data):
    original = load_config(write_config(tmp_path / "project", data))
    saved = tmp_path / "run" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(original.to_yaml(), encoding="utf-8")
    reloaded = load_config(saved)
    assert reloaded.comparable() == original.comparable()
    assert reloaded.to_yaml() == original.to_yaml()


def test_comparable_ignores_provenance(tmp_path, write_config):
    path = write_config(tmp_path, {"experiment": {"name": "a"}, "data": {"root": "images"}})
    plain = load_config(path)
    stamped = load_config(path, ["provenance={ecoclassify: 0.1.0, created: today}"])
    assert stamped.provenance == {"ecoclassify": "0.1.0", "created": "today"}
    assert stamped.comparable() == plain.comparable()
    assert stamped.to_dict() != plain.to_dict()


def test_from_dict_refuses_something_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="a config must be a mapping of sections. Received: list"):
        Config.from_dict(["data"])  # type: ignore[arg-type]


def test_config_errors_are_value_errors_with_exit_code_2():
    with pytest.raises(ValueError) as info:
        Config.from_dict({"data": {"root": "x"}, "training": {"epochs": -1}})
    assert info.value.exit_code == 2


def test_loading_a_config_does_not_read_the_data_root(tmp_path, write_config):
    # A root that is a file (not a folder) is a data problem, found later by the data layer.
    root = tmp_path / "file.txt"
    root.write_text("not a folder")
    path = write_config(tmp_path, {"data": {"root": str(root)}})
    assert load_config(path).data.root == root
