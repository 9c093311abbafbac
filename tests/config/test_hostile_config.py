"""Hostile and surprising configs: alias bombs, deep nesting, huge files, NUL bytes, YAML 1.1
booleans, seeds NumPy refuses and output folders that cannot be. Each is a ConfigError (exit 2,
one paragraph) before anything slow runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ecoclassify.cli import main
from ecoclassify.config import Config, load_config
from ecoclassify.errors import ConfigError

DATA = "data: {source: folders, root: images}\n"


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def validate_cli(path: Path, *args: str):
    return CliRunner().invoke(main, ["validate", str(path), *args])


def assert_one_paragraph_exit_2(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for text in expected:
        assert text in result.output, result.output


def test_an_alias_bomb_is_refused_naming_the_limit_while_a_few_aliases_still_work(tmp_path):
    path = write(tmp_path, DATA + billion_laughs() + "experiment: {name: x}\n")
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through its aliases"):
        load_config(path)
    assert_one_paragraph_exit_2(validate_cli(path), "billion laughs", "at most 100,000")

    fine = write(tmp_path, DATA + "training:\n  stages:\n"
                 "    - {epochs: 2, learning_rate: &rate 1e-3}\n    - {epochs: 3, learning_rate: *rate}\n", "fine.yaml")
    assert [stage.learning_rate for stage in load_config(fine).training.stages] == [0.001, 0.001]


def test_an_alias_bomb_given_to_set_is_refused_like_one_in_the_file(tmp_path):
    bomb = "{" + billion_laughs().replace("\n", ", ").rstrip(", ") + "}"
    with pytest.raises(ConfigError, match="--set data.exclude_labels expands to more than 100,000 values"):
        load_config(write(tmp_path, DATA), [f"data.exclude_labels={bomb}"])


def test_an_alias_inside_the_value_it_names_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot contain itself"):
        load_config(write(tmp_path, "data: &d {source: folders, root: images, demo: *d}\n"))


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deep_nesting_is_refused_naming_the_limit_instead_of_a_recursion_error(tmp_path, depth):
    path = write(tmp_path, DATA + "experiment: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError, match="a config may nest at most 100 levels"):
        load_config(path)
    assert_one_paragraph_exit_2(validate_cli(path), "more than 100 levels (line 2)")


def test_a_config_file_over_one_mebibyte_is_refused_with_its_size(tmp_path):
    path = write(tmp_path, DATA + "# padding\n" * 120_000)
    assert_one_paragraph_exit_2(validate_cli(path), "at most 1,048,576 bytes (1 MiB)", "Received: 1,200,0")


def test_a_nul_byte_in_the_file_is_refused_naming_its_line(tmp_path):
    path = write(tmp_path, (DATA + "experiment: {name: ab}\n").replace("ab", "a\0b").encode())
    assert_one_paragraph_exit_2(validate_cli(path), "contains a NUL character (line 2)")


def test_a_nul_character_written_as_an_escape_is_refused_naming_its_line(tmp_path):
    path = write(tmp_path, DATA + 'experiment: {output_dir: "runs\\0x"}\n')
    with pytest.raises(ConfigError, match=r"NUL character \(\\0\) in a value on line 2"):
        load_config(path)


def test_yes_no_on_off_stay_strings_where_strings_are_expected_and_still_switch_boolean_keys(tmp_path):
    path = write(tmp_path, "data: {source: folders, root: images, exclude_labels: [no, yes, on, off, n, y]}\n"
                           "augmentation: {enabled: no}\n"
                           "training: {jit_compile: off, deterministic: yes, early_stopping: {enabled: Off}}\n"
                           "model: {backbone: custom_cnn, weights: none, custom_cnn: {batch_norm: TRUE}}\n")
    config = load_config(path)
    assert config.data.exclude_labels == ["no", "yes", "on", "off", "n", "y"]
    assert config.augmentation.enabled is False and config.training.jit_compile is False
    assert config.training.deterministic is True and config.training.early_stopping.enabled is False
    assert config.model.custom_cnn.batch_norm is True


def test_set_overrides_read_yes_and_no_the_same_way(tmp_path):
    config = load_config(write(tmp_path, DATA), ["data.include_labels=[no, deer]", "augmentation.enabled=no",
                                                 "training.cache_features=yes"])
    assert config.data.include_labels == ["no", "deer"]
    assert config.augmentation.enabled is False and config.training.cache_features is True


def test_a_seed_beyond_numpys_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"experiment.seed must be less than 2\*\*32 = 4294967296.*Received: 4294967296"):
        Config.from_dict({"data": {"source": "demo"}, "experiment": {"seed": 2**32}})
    assert Config.from_dict({"data": {"source": "demo"}, "experiment": {"seed": 2**32 - 1}}).experiment.seed == 2**32 - 1


@pytest.mark.parametrize("output_dir", ["a_file", "a_file/runs", "/dev/null"])
def test_validate_refuses_an_output_dir_that_cannot_hold_run_folders(tmp_path, write_class_folders, output_dir):
    write_class_folders(tmp_path / "images", {"deer": 6, "fox": 6})
    (tmp_path / "a_file").write_text("not a folder")
    path = write(tmp_path, DATA + f"experiment: {{output_dir: {output_dir}}}\n")
    assert_one_paragraph_exit_2(validate_cli(path), "experiment.output_dir must be a folder where run folders can be "
                                                    "created")


def test_train_refuses_an_output_dir_that_is_a_file_before_scanning_and_creates_nothing(tmp_path, write_class_folders):
    write_class_folders(tmp_path / "images", {"deer": 6, "fox": 6})
    (tmp_path / "a_file").write_text("not a folder")
    path = write(tmp_path, DATA + "experiment: {output_dir: a_file}\n"
                                  "model: {backbone: custom_cnn, weights: none}\n")
    result = CliRunner().invoke(main, ["train", str(path)])
    assert_one_paragraph_exit_2(result, "Received: '", "a_file', which exists and is not a folder")
    assert (tmp_path / "a_file").read_text() == "not a folder"
