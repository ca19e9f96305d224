import pytest

from spectro.config import FeatureConfig, apply_overrides, from_dict, load_yaml, to_dict
from spectro.errors import ConfigError


def test_defaults_round_trip():
    config = FeatureConfig()
    assert from_dict(FeatureConfig, to_dict(config)) == config


def test_unknown_key_is_named_with_its_section():
    with pytest.raises(ConfigError, match=r"unknown setting image\.chanels"):
        from_dict(FeatureConfig, {"image": {"chanels": "grey"}})


@pytest.mark.parametrize("data, message", [
    ({"spectrogram": {"n_mels": "many"}}, r"spectrogram\.n_mels='many' must be int"),
    ({"audio": {"trim": "yes"}}, r"audio\.trim='yes' must be bool"),
    ({"image": {"channels": "rgb"}}, r"image\.channels='rgb' must be one of"),
    ({"spectrogram": {"hop_length": 0}}, r"spectrogram\.hop_length=0 must be a positive integer"),
    ({"audio": {"sample_rate": 8000}}, r"spectrogram\.fmax"),
    ({"spectrogram": {"fmax": 9000.0}}, r"fmax=9000.0 must not exceed sample_rate/2"),
    ({"feature": "wavelet"}, r"feature='wavelet' must be one of"),
])
def test_bad_values_fail_with_name_value_and_rule(data, message):
    if data == {"audio": {"sample_rate": 8000}}:
        data = {"audio": {"sample_rate": 8000}, "spectrogram": {"fmax": 6000.0}}
    with pytest.raises(ConfigError, match=message):
        from_dict(FeatureConfig, data)


def test_overrides_take_precedence_and_parse_yaml_values(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("image:\n  channels: grey\nspectrogram:\n  n_mels: 64\n")
    data = apply_overrides(load_yaml(path), ["spectrogram.n_mels=96", "audio.duration=null"])
    config = from_dict(FeatureConfig, data)
    assert config.image.channels == "grey" and config.spectrogram.n_mels == 96 and config.audio.duration is None
    assert config.spectrogram.top_db == 80.0


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["n_mels"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml("/no/such/config.yaml")


def test_extends_merges_the_base_underneath(tmp_path):
    from spectro.config import load_experiment

    (tmp_path / "base.yaml").write_text("data: {train: [a, b], classes: 6, test: {emodb: e}}\n"
                                        "train: {epochs: 20, seed: 3}\n")
    (tmp_path / "row.yaml").write_text("extends: base.yaml\ndata: {classes: 4}\ntrain: {epochs: 2}\n")
    config = load_experiment(tmp_path / "row.yaml", ["train.seed=5"])
    assert config.data.train == ["a", "b"] and config.data.classes == 4 and config.data.test == {"emodb": "e"}
    (tmp_path / "untested.yaml").write_text("extends: base.yaml\ndata: {test: {}}\n")
    assert load_experiment(tmp_path / "untested.yaml").data.test == {}  # an empty mapping clears the base's
    assert (config.train.epochs, config.train.seed, config.run.name) == (2, 5, "row")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_experiment(tmp_path / "loop.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    from spectro.config import load_experiment

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        if path.name.startswith("base_"):
            continue
        if path.name.startswith("features_"):  # picture settings for `spectro images --config`
            assert from_dict(FeatureConfig, load_yaml(path)).normalise.mode == "speaker"
            continue
        config = load_experiment(path)
        assert config.data.train and config.run.name == path.stem
