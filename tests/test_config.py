"""Config loading: GHA files load unchanged; bad keys, types and values fail naming the key."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cgha.config import (ReenactConfig, TrainConfig, config_from_dict, config_to_dict, describe_schema, load_config,
                        save_config)
from cgha.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "config"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name, schema, stage", [
    ("train_meshhead_N031.yaml", TrainConfig, "meshhead"),
    ("train_gaussianhead_N031.yaml", TrainConfig, "gaussianhead"),
    ("reenactment_N031.yaml", ReenactConfig, "reenactment"),
])
def test_gha_configs_load_with_gha_values(name, schema, stage):
    cfg = load_config(schema, CONFIGS / name, stage=stage)
    assert cfg.gpu_id == 0
    if schema is TrainConfig:
        assert len(cfg.dataset.camera_ids) == 16 and cfg.dataset.camera_ids[0] == "220700191"
        assert cfg.meshheadmodule.model_bbox == [[-1.6, 1.6], [-1.7, 1.8], [-2.5, 1.0]]
    if stage == "gaussianhead":
        assert cfg.lr_net == pytest.approx(1e-4) and cfg.lr_pose == pytest.approx(1e-5)
        assert cfg.gaussianheadmodule.num_add_mouth_points == 3000 and cfg.supresmodule.network_capacity == 32
        assert cfg.compact.enable and cfg.compact.start_epoch == 100 and cfg.compact.codebook_size == 2000
    if stage == "reenactment":
        assert cfg.dataset.freeview is True and cfg.dataset.image_files == "images/*/image_222200037.jpg"


def test_every_shipped_config_loads():
    shipped = sorted(CONFIGS.glob("*.yaml"))
    assert len(shipped) >= 3
    for path in shipped:
        if path.name.startswith("train_prior"):
            from cgha.prior.config import load_prior_config

            load_prior_config(path)  # train_prior.py's own schema
            continue
        stage = "reenactment" if "reenact" in path.name else "meshhead" if "meshhead" in path.name else "gaussianhead"
        load_config(ReenactConfig if stage == "reenactment" else TrainConfig, path, stage=stage)


def test_yaml_1_1_float_strings_and_unquoted_camera_ids(tmp_path):
    path = write(tmp_path, """
        lr_net: 1e-3
        dataset:
          camera_ids: [220700191, cam01]
    """)
    cfg = load_config(TrainConfig, path)
    assert cfg.lr_net == pytest.approx(1e-3)
    assert cfg.dataset.camera_ids == ["220700191", "cam01"]


def test_misspelled_key_in_file_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, """
        dataset:
          camra_ids: [a]
    """)
    with pytest.raises(ConfigError, match=r"cfg\.yaml: unknown key 'dataset\.camra_ids' \(did you mean 'dataset\.camera_ids'\?\)"):
        load_config(TrainConfig, path)


def test_misspelled_top_level_and_override_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'lr_nett' \(did you mean 'lr_net'\?\)"):
        load_config(TrainConfig, None, ["lr_nett=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key 'compact\.codebook_sise' \(did you mean 'compact\.codebook_size'\?\)"):
        load_config(TrainConfig, None, ["compact.codebook_sise=10"])
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'; valid keys: .*batch_size"):
        load_config(TrainConfig, None, ["zzz=1"])


@pytest.mark.parametrize("override, message", [
    ("train.max_iters=abc", r"'train\.max_iters' must be an integer, got 'abc'"),
    ("train.max_iters=-3", r"'train\.max_iters' must be >= 0, got -3"),
    ("optimize_pose=1", r"'optimize_pose' must be true or false"),
    ("dataset.camera_ids=cam00", r"'dataset\.camera_ids' must be a list"),
    ("lr_net=fast", r"'lr_net' must be a number"),
    ("lr_net=.nan", r"'lr_net' must be finite"),
    ("render.backend=cuda", r"'render\.backend' must be one of auto, gsplat, torch; got 'cuda'"),
    ("compact.store.opacity=int4", r"'compact\.store\.opacity' must be one of"),
    ("device=gpu", r"'device' must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("compact.groups=[scale_rot,feeture]", r"unknown group 'feeture' \(did you mean 'feature'\?\)"),
    ("compact.groups=[scale_rot,scale]", r"'scale_rot' and 'scale' both quantise 'scales'; use one of them"),
    ("compact.codebook_sizes.rotation=16", r"'compact\.codebook_sizes\.rotation' names a group not in"),
    ("dataset.camera_ids=[a,a]", r"'dataset\.camera_ids' lists an entry twice"),
    ("train.max_iters", r"expected key=value"),
])
def test_bad_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, [override])


def test_dict_override_merges_and_values_convert():
    cfg = load_config(TrainConfig, None, ["compact.codebook_sizes.feature=4096", "compact.codebook_sizes.scale_rot=500",
                                          "dataset.camera_ids=[cam00,cam03]", "train.max_iters=200", "device=cpu"])
    assert cfg.compact.codebook_sizes == {"feature": 4096, "scale_rot": 500}
    assert cfg.dataset.camera_ids == ["cam00", "cam03"] and cfg.train.max_iters == 200


def test_stage_checks_mlp_dimensions():
    with pytest.raises(ConfigError, match=r"'gaussianheadmodule\.exp_color_mlp' starts with 192 but its input is 138 wide"):
        load_config(TrainConfig, None, ["gaussianheadmodule.exp_coeffs_dim=10"], stage="gaussianhead")
    with pytest.raises(ConfigError, match=r"'meshheadmodule\.geo_mlp' starts with 27 but its input is 33 wide"):
        load_config(TrainConfig, None, ["meshheadmodule.pos_freq=5"], stage="meshhead")
    with pytest.raises(ConfigError, match=r"'gaussianheadmodule\.exp_color_mlp' ends with 32 but must output 16"):
        load_config(TrainConfig, None, ["supresmodule.input_dim=16"], stage="gaussianhead")
    with pytest.raises(ConfigError, match=r"dist_threshold_near' \(0\.3\) must be smaller"):
        load_config(TrainConfig, None, ["meshheadmodule.dist_threshold_near=0.3"], stage="meshhead")
    with pytest.raises(ConfigError, match=r"empty y range"):
        load_config(TrainConfig, None, ["meshheadmodule.model_bbox=[[-1,1],[1,-1],[-1,1]]"], stage="meshhead")
    with pytest.raises(ConfigError, match="would never stop"):
        load_config(TrainConfig, None, ["train.epochs=0", "train.max_iters=0"], stage="meshhead")
    # Without a stage the same values load: the mesh-head stage does not need a consistent Gaussian head.
    load_config(TrainConfig, None, ["gaussianheadmodule.exp_coeffs_dim=10"], stage="meshhead")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line \d+, column \d+\)"):
        load_config(TrainConfig, write(tmp_path, "a: 1\nb: [1, 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"'dataset' must be a mapping"):
        load_config(TrainConfig, write(tmp_path, "dataset: 3\n"))


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(TrainConfig, CONFIGS / "train_gaussianhead_N031.yaml", ["compact.codebook_sizes.feature=512"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(TrainConfig, tmp_path / "out" / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_to_dict(config_from_dict(TrainConfig, config_to_dict(cfg))) == config_to_dict(cfg)
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_schema_is_documented():
    lines = describe_schema(TrainConfig)
    assert any(line.startswith("compact.codebook_size (an integer, default 2000)") for line in lines)
    assert all(line.split(": ", 1)[1] for line in lines), "every option needs a help text"


def test_user_errors_exit_with_one_line():
    code = ("from cgha.errors import exit_on_user_error\n"
            "from cgha.config import TrainConfig, load_config\n"
            "exit_on_user_error(lambda: load_config(TrainConfig, None, ['lr_nett=1']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: override 'lr_nett=1': unknown key 'lr_nett'")


def test_config_reference_doc_is_current():
    from cgha.config import config_reference_markdown

    assert (ROOT / "docs" / "config.md").read_text() == config_reference_markdown(), (
        "docs/config.md is stale; regenerate it with the command at its top")


@pytest.mark.parametrize("written, expected", [
    ("[0036, 0037]", ["0036", "0037"]),   # YAML 1.1: octal 30, 31
    ("[0038, 0012]", ["0038", "0012"]),   # 0038 is no octal literal: YAML 1.1 mixes strings and numbers
    ("[1:30, 1_000]", ["1:30", "1_000"]),  # sexagesimal 90 and 1000 in YAML 1.1
    ("[220700191, cam03]", ["220700191", "cam03"]),  # NeRSemble serials: plain integers keep their digits
])
def test_id_lists_are_the_text_written(tmp_path, written, expected):
    path = write(tmp_path, f"""
        dataset:
          camera_ids: {written}
          eval_camera_ids: {written}
          eval_frame_ids: {written}
        """)
    from_file = load_config(TrainConfig, path)
    from_override = load_config(TrainConfig, None, [f"dataset.{key}={written}" for key in
                                                    ("camera_ids", "eval_camera_ids", "eval_frame_ids")])
    for cfg in (from_file, from_override):
        assert cfg.dataset.camera_ids == cfg.dataset.eval_camera_ids == cfg.dataset.eval_frame_ids == expected


def test_ids_written_as_text_round_trip_through_the_saved_config(tmp_path):
    cfg = load_config(TrainConfig, None, ["dataset.eval_frame_ids=[0036, 0037]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(TrainConfig, tmp_path / "config.yaml").dataset.eval_frame_ids == ["0036", "0037"]


@pytest.mark.parametrize("written", ["[on, cam01]", "[1.5]"])
def test_ids_that_yaml_turns_into_other_types_say_to_quote_them(written):
    with pytest.raises(ConfigError, match=r"'dataset.eval_camera_ids\[0\]' must be a string, got .*quote"):
        load_config(TrainConfig, None, [f"dataset.eval_camera_ids={written}"])


@pytest.mark.parametrize("written", ["0100", "1_000", "1:30"])
def test_integers_not_written_as_plain_decimals_are_refused(written, tmp_path):
    with pytest.raises(ConfigError, match=f"'train.max_iters' must be an integer, got '{written}'"):
        load_config(TrainConfig, None, [f"train.max_iters={written}"])
    with pytest.raises(ConfigError, match="'train.max_iters' must be an integer"):
        load_config(TrainConfig, write(tmp_path, f"train:\n  max_iters: {written}\n"))
