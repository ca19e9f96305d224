"""Levers for the CNN's transfer across corpora: LP-FT, WiSE-FT, self-training, acoustic randomisation."""

import numpy as np
import pytest
import torch
from conftest import fit, run_config

from spectro.checkpoint_file import load_checkpoint
from spectro.config import ExperimentConfig, FeatureConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.images import build_image_dataset
from spectro.training import start_run

SMALL = from_dict(FeatureConfig, {"image": {"size": 32}})


@pytest.fixture(scope="module")
def trees(synth_corpus, tmp_path_factory):
    """Pictures of synth-a (training, speakers a01f/a02m) and of synth-b (a corpus never trained on)."""
    root = tmp_path_factory.mktemp("transfer")
    utterances = scan_corpus("synth", synth_corpus).utterances
    for language in ("a", "b"):
        build_image_dataset([u for u in utterances if u.language == f"synth-{language}"], root / language, SMALL,
                            workers=1, progress=False)
    return root


def test_lp_ft_starts_fine_tuning_from_the_fitted_linear_probe(trees, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from spectro.training.linear_probe import GlobalScaler, pooled_features

    data = run_config([str(trees / "a")], tmp_path, name="lpft", train={"lp_ft": True, "class_balance": "none"})
    config = from_dict(ExperimentConfig, data)
    run = start_run(config, progress=False)
    chosen = run.state.linear_probe["C"]
    X = pooled_features(run.net, run.splits.train, device=run.device)
    scaler = GlobalScaler().fit(X)
    probe = LogisticRegression(C=chosen, max_iter=3000).fit(scaler.transform(X), run.splits.train.window_labels)
    inputs, _, _ = run.splits.train.batch(torch.arange(run.splits.train.n_windows))
    run.net.eval()
    with torch.no_grad():
        logits = run.net(inputs["image"]).numpy()
    np.testing.assert_allclose(logits, probe.decision_function(scaler.transform(X)), atol=1e-3)
    head = {id(p) for p in run.net.net.get_classifier().parameters()}
    group = next(g for g in run.optim.optimizer.param_groups if any(id(p) in head for p in g["params"]))
    assert group["lr"] == pytest.approx(config.optim.lr * config.optim.backbone_lr_scale)  # the head starts fitted

    summary = fit(data)
    lp, best = (load_checkpoint(tmp_path / "ck" / "lpft" / f) for f in ("lp.pt", "best.pt"))
    assert best["linear_probe"]["C"] == chosen and lp["epoch"] == 0
    for key, value in lp["model"].items():  # lp.pt is the model before fine-tuning: the probe's head exactly
        if "classifier" in key:
            torch.testing.assert_close(value, run.net.state_dict()[key])
    assert summary["epochs_run"] == 2


def test_lp_ft_refuses_a_model_without_pooled_features(trees, tmp_path):
    from spectro.errors import ConfigError
    from spectro.models import create_model
    from spectro.training.linear_probe import fit_linear_probe

    config = from_dict(ExperimentConfig, run_config([str(trees / "a")], tmp_path, model="lstm", train={"lp_ft": True}))
    with pytest.raises(ConfigError, match="lp_ft fits a linear head on pooled features"):
        fit_linear_probe(create_model("lstm", 4, in_channels=15), None, config=config, device=torch.device("cpu"))


def test_checkpoints_without_the_lp_record_still_resume(trees, tmp_path):
    from spectro.training.state import RunState

    state = RunState()
    saved = state.state_dict()
    del saved["linear_probe"]  # a last.pt written before LP-FT existed
    state.load_state_dict(saved)
    assert state.linear_probe is None


@pytest.fixture(scope="module")
def lp_ft_run(trees, tmp_path_factory):
    """A finished LP-FT run on synth-a, validated on held-out speaker synth-a02m."""
    root = tmp_path_factory.mktemp("lpft")
    fit(run_config([str(trees / "a")], root, name="lpft", train={"lp_ft": True, "epochs": 3}))
    return root / "ck" / "lpft"


def test_wise_ft_at_0_predicts_as_the_lp_model_and_at_1_as_the_fine_tuned_one(lp_ft_run, trees, tmp_path, synth_corpus):
    from spectro import Predictor
    from spectro.cli import main

    clip = next(u.path for u in scan_corpus("synth", synth_corpus).utterances if u.language == "synth-b")
    for alpha, same_as in ((0, "lp.pt"), (1, "best.pt")):
        out = tmp_path / f"wise{alpha}.pt"
        assert main(["interpolate", str(lp_ft_run / "best.pt"), "--alpha", str(alpha), "--out", str(out)]) == 0
        mixed, reference = (Predictor.load(p, cache=False).predict(clip) for p in (out, lp_ft_run / same_as))
        assert mixed.probabilities == reference.probabilities
        assert load_checkpoint(out)["wise_ft"]["alpha"] == alpha
    half = Predictor.load(tmp_path / "wise0.pt", cache=False)
    assert main(["interpolate", str(lp_ft_run / "best.pt"), "--alpha", "0.5", "--out", str(tmp_path / "h.pt")]) == 0
    between = Predictor.load(tmp_path / "h.pt", cache=False).predict(clip)
    assert between.probabilities != half.predict(clip).probabilities


def test_wise_ft_chooses_alpha_on_validation_speakers_and_applies_it(lp_ft_run, synth_corpus, tmp_path, capsys):
    from spectro.cli import main

    out = tmp_path / "chosen.pt"
    assert main(["interpolate", str(lp_ft_run / "best.pt"), "--validation", f"synth={synth_corpus / 'synth-a'}",
                 "--step", "0.5", "--bn", "interpolate", "reestimate", "--apply-to", str(lp_ft_run / "best.pt"),
                 "--out", str(out), "--workers", "1", "--quiet"]) == 0
    record = load_checkpoint(out)["wise_ft"]
    tried = {(c["alpha"], c["bn"]) for c in record["chosen_by"]["candidates"]}
    assert tried == {(a, b) for a in (0.0, 0.5, 1.0) for b in ("interpolate", "reestimate")}
    best = max(c["uar"] for c in record["chosen_by"]["candidates"])
    assert record["chosen_by"]["uar"] == best and (record["alpha"], record["bn"]) in tried
    assert "validation UAR" in capsys.readouterr().out


def _shuffled_labels(tree, copy):
    """A copy of an image tree whose manifest gives every recording another recording's emotion."""
    import csv
    import shutil

    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".packed", ".lock"))
    with open(copy / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    recordings = sorted({r["recording"] for r in rows})
    emotion = {r["recording"]: r["emotion"] for r in rows}
    moved = dict(zip(recordings, np.random.default_rng(0).permutation([emotion[k] for k in recordings])))
    assert any(moved[k] != emotion[k] for k in recordings)
    for r in rows:
        r["emotion"] = moved[r["recording"]]
    with open(copy / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_self_training_never_reads_the_target_labels_and_is_recorded(trees, tmp_path, trained):
    from spectro.cli import main

    _shuffled_labels(trees / "b", tmp_path / "b_shuffled")
    students = {}
    for name, tree in (("plain", trees / "b"), ("shuffled", tmp_path / "b_shuffled")):
        labels = tmp_path / f"{name}.csv"
        assert main(["pseudo-label", str(trained[1]), "--images", f"b={tree}", "--threshold", "0.25", "--out",
                     str(labels), "--quiet"]) == 0
        data = run_config([str(trees / "a")], tmp_path, name=name, data={"pseudo": [{"tree": str(tree),
                                                                                     "labels": str(labels)}]})
        fit(data)
        students[name] = (labels.read_text(), load_checkpoint(tmp_path / "ck" / name / "best.pt"))
    (plain_csv, plain), (shuffled_csv, shuffled) = students["plain"], students["shuffled"]
    assert plain_csv == shuffled_csv  # the same recordings (source paths), pseudo-labels and confidences
    for key, value in plain["model"].items():
        torch.testing.assert_close(shuffled["model"][key], value, rtol=0, atol=0)
    kept = sum(line.endswith(",1") for line in plain_csv.splitlines())
    assert kept > 0 and plain["pseudo_labelled"] == {"synth": kept}
    assert any("self-training on" in t for t in plain["transductive"])


def test_each_domain_randomisation_is_replayable_for_a_seed_and_recording():
    from conftest import tone

    from spectro.config import WaveformAugmentConfig
    from spectro.waveform_augment import augment_waveform, band_limit, change_speed, copy_rng, reverberate

    y = tone(220, seconds=1.0) + 0.05 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    config = WaveformAugmentConfig(noise_p=0, pitch_p=0, stretch_p=0, gain_p=0, trim_p=0, speed_p=1, reverb_p=1,
                                   channel_p=1)
    first, again = (augment_waveform(y, sr=16000, config=config, rng=copy_rng("c__s__clip", 1, 0)) for _ in range(2))
    other = augment_waveform(y, sr=16000, config=config, rng=copy_rng("c__s__clip", 2, 0))
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.allclose(first, other)
    assert change_speed(y, sr=16000, factor=1.1).size == pytest.approx(y.size / 1.1, abs=2)
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    for changed in (reverberate(y, sr=16000, rt60=0.5, rng=np.random.default_rng(1)),
                    band_limit(y, sr=16000, bandwidth_hz=(3000, 3000), rng=np.random.default_rng(2))):
        assert changed.shape == y.shape and rms(changed) == pytest.approx(rms(y), rel=1e-3)
        assert not np.allclose(changed, y, atol=1e-3)


def test_vtlp_warps_training_pictures_only_and_replays_from_its_generator(trees, tmp_path, monkeypatch):
    import spectro.training.loop as loop
    from spectro.training.batch_augment import vtlp

    x = torch.rand(4, 3, 32, 16)
    warped = [vtlp(x, p=1.0, alpha=(0.8, 1.2), generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    torch.testing.assert_close(warped[0], warped[1], rtol=0, atol=0)
    assert not torch.allclose(warped[0], x)
    torch.testing.assert_close(vtlp(x, p=1.0, alpha=(1.0, 1.0), generator=torch.Generator()), x)
    calls = []
    real = loop.vtlp
    monkeypatch.setattr(loop, "vtlp", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    run = start_run(from_dict(ExperimentConfig, run_config([str(trees / "a")], tmp_path,
                                                           augment={"vtlp_p": 1.0})), progress=False)
    loop.validate(run)
    assert calls == []
    loop.train_one_epoch(run, 0)
    assert len(calls) == len(loop.EpochSampler(run.splits.train.n_windows, 4, seed=0).batches)


def test_class_balanced_fractions_keep_each_class_s_most_confident_share_even_from_a_flat_teacher():
    from spectro.errors import ConfigError
    from spectro.pseudo_label import choose

    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 20 + [2] * 10)  # what the teacher predicts, unevenly
    flat = np.full((70, 3), 0.3)
    flat[np.arange(70), labels] = 0.4 - rng.uniform(0, 0.05, 70)  # never confident: top probability < 0.4
    assert not choose(flat, threshold=0.5).any()
    unbalanced = choose(flat, fraction=0.5, balanced=False)
    assert [int(unbalanced[labels == c].sum()) for c in range(3)] == [20, 10, 5]
    for c in range(3):  # the kept ones are each class's most confident
        assert flat[unbalanced & (labels == c), c].min() >= flat[~unbalanced & (labels == c), c].max()
    balanced = choose(flat, fraction=0.5)
    assert [int(balanced[labels == c].sum()) for c in range(3)] == [5, 5, 5] and not (balanced & ~unbalanced).any()
    with pytest.raises(ConfigError):
        choose(flat, threshold=0.5, fraction=0.5)
    with pytest.raises(ConfigError):
        choose(flat, fraction=0)
