"""The baselines: utterance statistics + scikit-learn, sequence models on frames, waveform augmentation."""

import json
import shutil

import librosa
import numpy as np
import pytest
import torch
from conftest import tone

from spectro.checkpoint_file import load_checkpoint, load_trained_model, save_checkpoint
from spectro.cli import main
from spectro.config import ExperimentConfig, FeatureConfig, WaveformAugmentConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.data import ImageSet
from spectro.errors import ConfigError, DataError
from spectro.features import feature_matrix, frame_descriptors, utterance_statistics
from spectro.image_tree import load_recording, read_image_manifest
from spectro.images import build_image_dataset
from spectro.models import create_model
from spectro.models.classical import load_pipeline
from spectro.report import collect_results, comparison_tables
from spectro.scoring import predict_proba
from spectro.training import Trainer, start_run
from spectro.training.estimators import group_internal_folds
from spectro.waveform_augment import add_noise, augment_waveform, random_trim

SR = 16000
CLASSICAL = ["lda", "logistic_regression", "random_forest", "svm", "mlp", "rf_mlp_ensemble"]
SEQUENCE = ["lstm", "bilstm_attention", "conv1d"]


# --------------------------------------------------------------------------- descriptors
def test_statistics_are_184_values_that_describe_the_signal():
    y = tone(440.0, seconds=1.0, amplitude=0.5)
    stats = utterance_statistics(y=y, sr=SR)
    assert stats.shape == (184,) and stats.dtype == np.float32
    rms, centroid, rolloff, zcr = stats[:4]
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert centroid == pytest.approx(440, rel=0.1)
    assert 440 <= rolloff < 600
    assert zcr == pytest.approx(2 * 440 / SR, rel=0.05)
    chroma = stats[4:16]
    assert int(np.argmax(chroma)) == 9  # A
    expected_mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=1024, hop_length=160, win_length=400, n_mels=128, fmin=20.0, pad_mode="constant"),
        ref=np.max, top_db=80).mean(axis=1)
    np.testing.assert_allclose(stats[56:], expected_mel, atol=0.05)


def test_statistics_with_standard_deviations_double_and_tell_steady_from_changing_sounds():
    steady = utterance_statistics(y=tone(440.0), sr=SR, std=True)
    sweep = utterance_statistics(y=librosa.chirp(fmin=200, fmax=3000, sr=SR, duration=1.0).astype(np.float32),
                                 sr=SR, std=True)
    assert steady.shape == sweep.shape == (368,)
    assert sweep[184 + 1] > 10 * steady[184 + 1]  # the centroid moves in the sweep only


def test_frames_are_zcr_rms_and_13_mfccs_per_frame_standardised_per_utterance():
    y = tone(300.0, seconds=0.7) * np.linspace(0.1, 1, int(0.7 * SR), dtype=np.float32)
    raw = frame_descriptors(y=y, sr=SR)
    assert raw.shape == (15, 1 + y.size // 160)
    assert np.all(np.diff(raw[1, 5:-5]) > 0)  # RMS follows the rising envelope
    frames = feature_matrix(y, FeatureConfig(feature="frames"))
    np.testing.assert_allclose(frames.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(frames.std(axis=1), 1, atol=0.01)


# --------------------------------------------------------------------------- trees
@pytest.fixture(scope="module")
def trees(synth_corpus, tmp_path_factory):
    """stats and frames trees (whole utterances) per synthetic language, and augmented copies of language A."""
    root = tmp_path_factory.mktemp("baselines")
    scans = {lang: scan_corpus("synth", synth_corpus / f"synth-{lang}").utterances for lang in ("a", "b")}
    out = {}
    for feature in ("stats", "frames"):
        config = from_dict(FeatureConfig, {"feature": feature, "audio": {"duration": None}})
        for lang, utterances in scans.items():
            out[feature, lang] = root / feature / lang
            build_image_dataset(utterances, out[feature, lang], config, workers=2, progress=False)
        out[feature, "aug"] = root / f"{feature}_aug" / "a"
        build_image_dataset(scans["a"], out[feature, "aug"], config, workers=2, progress=False,
                            augmentation=WaveformAugmentConfig(copies=2, noise_p=1.0, stretch_p=0.5))
    return out


def experiment(tmp_path, train_tree, test_tree, name, **sections) -> ExperimentConfig:
    data = {"train": [str(train_tree)], "test": {"langb": str(test_tree)}, "classes": 4, "val_speakers": ["synth-a02m"]}
    return from_dict(ExperimentConfig, {
        "data": {**data, **sections.pop("data", {})}, "model": {"name": name, "pretrained": False,
                                                                **sections.pop("model", {})},
        "train": {"epochs": 2, "batch_size": 4, "freeze_epochs": 0, **sections.pop("train", {})},
        "run": {"name": name, "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}, **sections})


def test_variable_length_inputs_are_padded_with_their_lengths_kept(trees):
    rows = read_image_manifest(trees["frames", "a"])
    arrays = [load_recording(p)[0] for p, _ in rows]  # whole utterances: one window each
    assert len({a.shape[1] for a in arrays}) > 1  # whole utterances differ in length
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], ["neutral", "happy", "sad", "angry"], progress=False)
    assert images.lengths["image"].tolist() == [a.shape[1] for a in arrays]
    inputs, lengths, _ = images.batch(torch.tensor([0, 1]))
    assert inputs["image"].shape[2] == max(arrays[0].shape[1], arrays[1].shape[1])  # cut to the batch's longest
    shorter = int(lengths["image"].argmin())
    assert torch.all(inputs["image"][shorter, :, int(lengths["image"][shorter]):] == 0)
    np.testing.assert_allclose(inputs["image"][0, :, :arrays[0].shape[1]].numpy(), arrays[0].astype(np.float32))


# --------------------------------------------------------------------------- classical models
def separable(n=60, d=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return rng.normal(size=(n, d)) + 3 * np.eye(classes, d)[y], y


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_models_learn_and_survive_a_weights_only_checkpoint(name, tmp_path):
    X, y = separable()
    model = create_model(name, 4)
    model.pipeline.set_params(**{k: 0 for k in model.pipeline.get_params() if k.endswith("random_state")})
    model.fit(X, y)
    x = torch.tensor(X[:20, :, None], dtype=torch.float16).float()
    probs = torch.softmax(model(x), 1)
    assert (probs.argmax(1).numpy() == y[:20]).mean() >= 0.9
    np.testing.assert_allclose(probs.numpy(), model.pipeline.predict_proba(X[:20].astype(np.float16).astype(float)),
                               atol=1e-5)
    save_checkpoint({"model": model.state_dict(), "classes": ["a", "b", "c", "d"], "config": {}, "features": {},
                     "model_name": name}, tmp_path / "m.pt")
    restored, _ = load_trained_model(tmp_path / "m.pt")
    torch.testing.assert_close(torch.softmax(restored(x), 1), probs)


def test_classes_missing_from_training_get_zero_probability():
    X, y = separable(classes=3)
    model = create_model("logistic_regression", 4).fit(X, y)
    probs = torch.softmax(model(torch.tensor(X[:, :, None])), 1)
    assert probs.shape == (60, 4) and torch.all(probs[:, 3] < 1e-6)


def _foreign(x):  # a function from outside scikit-learn, numpy and scipy
    return x


@pytest.mark.parametrize("function", [_foreign, np.save], ids=["test function", "numpy.save"])
def test_a_saved_pipeline_with_code_spectro_never_saves_is_refused(function):
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    blob = skops.io.dumps(Pipeline([("f", FunctionTransformer(function))]))
    with pytest.raises(DataError, match="types that spectro never saves"):
        load_pipeline(blob)


def test_every_fitted_baseline_pipeline_loads_under_the_allowlist():
    import skops.io
    from sklearn.model_selection import GroupKFold

    X, y = separable()
    for name in CLASSICAL:
        model = create_model(name, 4)
        if name == "svm":  # calibration folds grouped by recording, as with augmented copies
            model.pipeline.set_params(clf__cv=list(GroupKFold(5).split(X, y, groups=np.arange(len(X)) // 2)))
        model.fit(X, y)
        restored = load_pipeline(skops.io.dumps(model.pipeline))
        np.testing.assert_allclose(restored.predict_proba(X), model.pipeline.predict_proba(X))


def test_a_classical_run_scales_on_training_data_searches_on_validation_and_reports(trees, tmp_path):
    config = experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "logistic_regression",
                        model={"search": True}, train={"class_balance": "none"})
    trainer = Trainer(config, progress=False)
    summary = trainer.fit()
    run = trainer.run
    scaler = run.net.pipeline.named_steps["scale"]
    train_x = np.stack([load_recording(p)[0, :, 0] for p, u in read_image_manifest(trees["stats", "a"])
                        if u.speaker != "synth-a02m"]).astype(np.float64)
    np.testing.assert_allclose(scaler.mean_, train_x.mean(axis=0))  # fitted on training speakers only
    assert all(u.speaker != "synth-a02m" for u in run.splits.train.utterances)
    grid = summary["search"]
    assert [r["params"]["clf__C"] for r in grid] == [0.001, 0.01, 0.1, 1.0, 10.0]
    best = max(grid, key=lambda r: r["val_uar"])
    assert run.net.pipeline.get_params()["clf__C"] == best["params"]["clf__C"]
    assert summary["validation"]["uar"] == pytest.approx(best["val_uar"])  # the search scored the same split
    val = predict_proba(run.net, run.splits.val, device=torch.device("cpu"))
    assert summary["validation"]["accuracy"] == pytest.approx(
        (val.argmax(1) == run.splits.val.labels).float().mean().item())
    assert summary["epochs_run"] == 1 and set(summary["test"]["langb"]) >= {"accuracy", "uar", "macro_f1"}
    state = load_checkpoint(tmp_path / "ck" / "logistic_regression" / "last.pt")
    assert state["optimizer"] is None and state["finished"]
    assert Trainer(config, progress=False).fit(resume=True) == summary  # a finished run is not redone
    (tmp_path / "ck" / "logistic_regression" / "summary.json").unlink()  # as if killed while testing
    resumed = Trainer(config, progress=False)
    assert resumed.fit(resume=True)["test"] == summary["test"]  # the pipeline reloaded from last.pt


def test_model_params_reach_the_pipeline_and_unknown_ones_are_refused(trees, tmp_path):
    config = experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "random_forest",
                        model={"params": {"clf__n_estimators": 7}})
    trainer = Trainer(config, progress=False)
    trainer.fit()
    assert len(trainer.run.net.pipeline.named_steps["clf"].estimators_) == 7
    bad = experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "svm", model={"params": {"clf__nope": 1}},
                     run={"name": "bad", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")})
    with pytest.raises(ConfigError, match="model.params"):
        Trainer(bad, progress=False).fit()


def test_too_little_data_for_a_model_is_a_clear_error(trees, tmp_path):
    with pytest.raises(DataError, match="svm cannot be fitted.*n_splits=5"):  # 2 per class; calibration needs 5
        Trainer(experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "svm"), progress=False).fit()


def test_classical_models_refuse_frame_sequences(trees, tmp_path):
    with pytest.raises(ConfigError, match="--feature stats"):
        Trainer(experiment(tmp_path, trees["frames", "a"], trees["frames", "b"], "lda"), progress=False).fit()


# --------------------------------------------------------------------------- sequence models
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", SEQUENCE)
def test_sequence_models_ignore_padding(name, mode):
    torch.manual_seed(0)
    model = create_model(name, 4, in_channels=15, drop_rate=0.0).train(mode == "train")
    x = torch.randn(3, 15, 50)
    lengths = torch.tensor([50, 31, 12])
    batched = model(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i:i + 1, :, :n], lengths[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-4)
    junk = x.clone()
    junk[1, :, 31:] = 1e3
    torch.testing.assert_close(model(junk, lengths), batched, atol=1e-5, rtol=1e-4)


def test_attention_weights_only_valid_frames():
    model = create_model("bilstm_attention", 4, in_channels=40).eval()
    model(torch.randn(2, 40, 30), torch.tensor([30, 9]))
    weights = model.last_attention
    assert torch.all(weights[1, 9:] == 0) and torch.allclose(weights.sum(1), torch.ones(2))


def test_sequence_models_need_their_feature_count_and_have_no_pretraining():
    model = create_model("lstm", 4, in_channels=15)
    with pytest.raises(ConfigError, match=r"\(batch, 15, frames\)"):
        model(torch.randn(2, 40, 10), torch.tensor([10, 10]))
    with pytest.raises(ConfigError, match="no ImageNet pretraining"):
        create_model("conv1d", 4, pretrained=True, in_channels=15)
    assert sum(p.numel() for n, p in model.named_parameters() if "lstm" in n) == (
        4 * 64 * (15 + 64 + 2) + 4 * 64 * (64 + 64 + 2))  # two layers of 64 units


def test_an_lstm_trains_on_whole_utterances_and_predicts(trees, tmp_path, synth_corpus, capsys):
    config = experiment(tmp_path, trees["frames", "a"], trees["frames", "b"], "lstm")
    summary = Trainer(config, progress=False).fit()
    assert summary["feature"] == "frames" and summary["epochs_run"] == 2
    state = load_checkpoint(tmp_path / "ck" / "lstm" / "best.pt")
    assert state["in_channels"] == 15
    wav = sorted((synth_corpus / "synth-b").rglob("*.wav"))[0]
    assert main(["predict", str(tmp_path / "ck" / "lstm" / "best.pt"), str(wav), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] in ("neutral", "happy", "sad", "angry")


# --------------------------------------------------------------------------- waveform augmentation
def test_noise_is_added_at_the_chosen_snr():
    y = tone(200.0, seconds=2.0)
    noisy = add_noise(y, snr_db=10.0, rng=np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(y**2) / np.mean((noisy - y) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)


def test_trimming_cuts_at_most_the_fraction_from_each_end():
    y = np.arange(1000, dtype=np.float32)
    for seed in range(20):
        cut = random_trim(y, max_fraction=0.1, rng=np.random.default_rng(seed))
        assert 800 <= cut.size <= 1000 and cut[0] <= 100 and cut[-1] >= 899
        assert np.array_equal(cut, y[int(cut[0]): int(cut[-1]) + 1])


def test_augmentation_fires_by_probability_and_is_reproducible():
    y = tone(220.0, seconds=1.0)
    off = WaveformAugmentConfig(noise_p=0, pitch_p=0, stretch_p=0, gain_p=0, trim_p=0)
    assert np.array_equal(augment_waveform(y, sr=SR, config=off, rng=np.random.default_rng(0)), y)
    slower = WaveformAugmentConfig(noise_p=0, pitch_p=0, stretch_p=1, rate=(0.8, 0.8), gain_p=0, trim_p=0)
    assert augment_waveform(y, sr=SR, config=slower, rng=np.random.default_rng(0)).size == pytest.approx(y.size / 0.8,
                                                                                                         rel=0.01)
    every = WaveformAugmentConfig(noise_p=1, pitch_p=1, stretch_p=1, gain_p=1, trim_p=1)
    first, again = (augment_waveform(y, sr=SR, config=every, rng=np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(first, again) and not np.array_equal(first, y[: first.size])


def test_augmented_trees_hold_named_copies_and_are_not_redone(trees, synth_corpus):
    rows = read_image_manifest(trees["stats", "aug"])
    originals = read_image_manifest(trees["stats", "a"])
    assert len(rows) == 2 * len(originals)
    assert {p.stem.rsplit("__", 1)[1] for p, _ in rows} == {"aug1", "aug2"}
    copy1, copy2 = (load_recording(p) for p, _ in rows[:2])
    assert not np.array_equal(copy1, copy2)
    again = build_image_dataset(scan_corpus("synth", synth_corpus / "synth-a").utterances, trees["stats", "aug"],
                                from_dict(FeatureConfig, {"feature": "stats", "audio": {"duration": None}}),
                                augmentation=WaveformAugmentConfig(copies=2, noise_p=1.0,
                                                                   stretch_p=0.5), progress=False)
    assert again.written == 0
    with pytest.raises(DataError, match="other settings"):
        build_image_dataset(scan_corpus("synth", synth_corpus / "synth-a").utterances, trees["stats", "aug"],
                            from_dict(FeatureConfig, {"feature": "stats", "audio": {"duration": None}}),
                            augmentation=WaveformAugmentConfig(copies=2), progress=False)


def test_a_copy_is_the_same_wherever_the_corpus_lies(trees, synth_corpus, tmp_path):
    moved = tmp_path / "moved" / "synth-a"
    shutil.copytree(synth_corpus / "synth-a" / "a01f", moved / "a01f")
    utterances = scan_corpus("synth", moved).utterances[:2]
    build_image_dataset(utterances, tmp_path / "aug", from_dict(FeatureConfig, {"feature": "stats",
                                                                                "audio": {"duration": None}}),
                        augmentation=WaveformAugmentConfig(copies=2, noise_p=1.0, stretch_p=0.5), progress=False)
    rendered = sorted((tmp_path / "aug").rglob("*.npy"))
    assert len(rendered) == 4
    for path in rendered:
        np.testing.assert_array_equal(np.load(path), np.load(trees["stats",
                                                                   "aug"] / path.relative_to(tmp_path / "aug")))


def test_training_uses_copies_of_training_speakers_only(trees, tmp_path):
    config = experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "lda",
                        data={"train_augmented": [str(trees["stats", "aug"])]})
    trainer = Trainer(config, progress=False)
    trainer.fit()
    splits = trainer.run.splits
    training = splits.train.utterances
    assert "synth-a02m" not in {u.speaker for u in training}
    assert len(training) == 3 * len({u.path for u in training})  # each recording and its two copies
    assert all(u.speaker == "synth-a02m" for u in splits.val.utterances)
    assert len(splits.val) == len({u.path for u in splits.val.utterances})  # no copies


@pytest.mark.parametrize("where", ["train", "test"])
def test_an_augmented_tree_is_refused_outside_train_augmented(trees, tmp_path, where):
    plain, aug = str(trees["stats", "a"]), str(trees["stats", "aug"])
    data = {"train": [aug], "test": {"langb": str(trees["stats",
                                                        "b"])}} if where == "train" else {"test": {"copies": aug}}
    with pytest.raises(ConfigError, match="holds augmented copies, which may only train"):
        Trainer(experiment(tmp_path, plain, trees["stats", "b"], "lda", data=data), progress=False).fit()


def test_a_plain_tree_is_refused_as_augmented_copies(trees, tmp_path):
    plain = str(trees["stats", "a"])
    with pytest.raises(ConfigError, match="holds no augmented copies"):
        Trainer(experiment(tmp_path, plain, trees["stats", "b"], "lda", data={"train_augmented": [plain]}),
                progress=False).fit()


def test_images_cli_renders_copies_only_with_augment(synth_corpus, tmp_path, capsys):
    out = tmp_path / "copies"
    assert main(["images", "--corpus", f"synth={synth_corpus / 'synth-a'}", "--feature", "stats", "--augment",
                 "--set", "augment.copies=1", "--set", "augment.snr_db=[5, 5]", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "features.json").read_text())
    assert saved["augmentation"]["snr_db"] == [5.0, 5.0] and saved["features"]["feature"] == "stats"
    assert main(["images", "--corpus", f"synth={synth_corpus / 'synth-a'}", "--set", "augment.copies=2",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "augment settings given without --augment" in capsys.readouterr().err
    assert main(["images", "--corpus", f"synth={synth_corpus / 'synth-a'}", "--augment", "--set", "augment.rate=[1]",
                 "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "augment.rate=[1] must be a list of 2" in capsys.readouterr().err


# --------------------------------------------------------------------------- one table
def test_report_lists_baselines_and_cnns_with_macro_f1(trees, tmp_path):
    for model, tree in (("lda", "stats"), ("conv1d", "frames")):
        Trainer(experiment(tmp_path, trees[tree, "a"], trees[tree, "b"], model), progress=False).fit()
    rows = collect_results([tmp_path / "ck" / "lda", tmp_path / "ck" / "conv1d"])
    (header, cells), = comparison_tables(rows).values()
    assert {"val macro-F1 %", "langb macro-F1 % (95% CI)"} <= set(header)
    summary = json.loads((tmp_path / "ck" / "conv1d" / "summary.json").read_text())
    line = dict(zip(header, cells[1]))
    assert line["features"] == "frames" and line["langb macro-F1 % (95% CI)"].startswith(
        f"{100 * summary['test']['langb']['macro_f1']:.2f} (")


def test_time_masks_of_padded_sequences_stay_inside_each_utterance():
    from spectro.training.batch_augment import spec_augment

    x = torch.zeros(2, 15, 100)
    x[:, :, :20] = torch.arange(1, 21, dtype=torch.float)  # the second utterance is 20 frames long
    x[0, :, 20:] = 5.0
    lengths = torch.tensor([100, 20])
    out = spec_augment(x, time_masks=3, time_mask_width=0.5, freq_masks=0, freq_mask_width=0,
                       generator=torch.Generator().manual_seed(0), lengths=lengths)
    assert torch.all(out[1, :, 20:] == 0)  # padding untouched
    changed = (out[1] != x[1]).any(0)
    assert changed.any() and torch.all(out[1, :, changed] == 10.5)  # the mean of its 20 valid frames


def test_models_that_cannot_mask_refuse_utterances_of_different_lengths(trees, tmp_path):
    with pytest.raises(ConfigError, match="different lengths"):
        Trainer(experiment(tmp_path, trees["frames", "a"], trees["frames", "b"], "mfcc_cnn1"), progress=False).fit()


def test_evaluate_refuses_a_tree_of_augmented_copies(trees, tmp_path, capsys):
    Trainer(experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "lda"), progress=False).fit()
    assert main(["evaluate", str(tmp_path / "ck" / "lda" / "best.pt"), "--images", f"copies={trees['stats', 'aug']}",
                 "--out", str(tmp_path / "rep"), "--quiet"]) == 2
    assert "holds augmented training copies" in capsys.readouterr().err


def test_copies_that_match_no_training_recording_are_an_error(trees, tmp_path):
    config = experiment(tmp_path, trees["stats", "b"], trees["stats", "a"], "lda",
                        data={"train_augmented": [str(trees["stats", "aug"])], "val_speakers": ["synth-b02m"]})
    with pytest.raises(ConfigError, match="none of the .* augmented copies"):
        Trainer(config, progress=False).fit()


def test_internal_folds_keep_copies_of_one_recording_together(trees, tmp_path):
    config = experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "rf_mlp_ensemble",
                        data={"train_augmented": [str(trees["stats", "aug"])]})
    run = start_run(config, progress=False)
    group_internal_folds(run.net, run.splits.train)
    assert run.net.pipeline.get_params()["clf__mlp__early_stopping"] is False
    svm = start_run(experiment(tmp_path, trees["stats", "a"], trees["stats", "b"], "svm",
                               data={"train_augmented": [str(trees["stats", "aug"])]}), progress=False)
    group_internal_folds(svm.net, svm.splits.train)
    recordings = np.array([u.path for u in svm.splits.train.utterances])
    for train_idx, test_idx in svm.net.pipeline.get_params()["clf__cv"]:
        assert not set(recordings[train_idx]) & set(recordings[test_idx])
