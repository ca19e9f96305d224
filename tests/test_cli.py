import csv

import pytest

from spectro.cli import main


def test_manifest_command_writes_rows_and_prints_counts(tmp_path, synth_corpus, capsys):
    out = tmp_path / "m.csv"
    assert main(["manifest", "--corpus", f"synth={synth_corpus}", "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32
    assert {"path", "corpus", "speaker", "emotion", "language", "gender"} <= set(rows[0])
    printed = capsys.readouterr().out
    assert "synth" in printed and "angry" in printed and "32" in printed


def test_class_setup_drops_and_counts_other_emotions(tmp_path, synth_corpus, capsys):
    from spectro.synth import generate_corpus

    generate_corpus(tmp_path / "c", emotions=("neutral", "happy", "fear"), speakers_per_language=1,
                    utterances_per_emotion=1, languages=("synth-a",))
    out = tmp_path / "m.csv"
    assert main(["manifest", "--corpus", f"synth={tmp_path / 'c'}", "--classes", "4", "--out", str(out)]) == 0
    assert "dropped 1 utterance(s) outside the classes: synth/fear 1" in capsys.readouterr().err
    with open(out, newline="") as handle:
        assert sorted(r["emotion"] for r in csv.DictReader(handle)) == ["happy", "neutral"]


def test_images_command_from_manifest(tmp_path, synth_corpus, capsys):
    manifest = tmp_path / "m.csv"
    main(["manifest", "--corpus", f"synth={synth_corpus}", "--out", str(manifest)])
    out = tmp_path / "img"
    args = ["images", "--manifest", str(manifest), "--out", str(out), "--set", "image.size=32", "--quiet",
            "--workers", "2"]
    assert main(args) == 0
    assert "32 recording(s) rendered" in capsys.readouterr().out
    assert len(list(out.rglob("*.png"))) == 32
    assert main(args) == 0
    assert "0 recording(s) rendered, 32 already present" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["manifest", "--corpus", "voxceleb={path}", "--out", "{tmp}/m.csv"], "corpus='voxceleb' is unknown"),
    (["manifest", "--corpus", "emodb={tmp}/missing", "--out", "{tmp}/m.csv"], "is not a folder"),
    (["images", "--corpus", "synth={path}", "--out", "{tmp}/i", "--set", "image.chanels=grey"],
     "unknown setting image.chanels"),
    (["images", "--manifest", "{tmp}/none.csv", "--out", "{tmp}/i"], "does not exist"),
    (["manifest", "--corpus", "iemocap={path}", "--corpus-option", "iemocap.merge=false", "--out", "{tmp}/m.csv"],
     "iemocap.merge is unknown"),
])
def test_user_errors_exit_2_with_a_clear_message(tmp_path, synth_corpus, capsys, argv, message):
    argv = [a.format(path=synth_corpus, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
