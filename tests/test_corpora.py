"""Corpus parsers on small synthetic trees laid out as each distribution publishes its files."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from spectro.corpora import EMOTIONS, list_corpora, scan_corpus
from spectro.errors import ConfigError, DataError

IEMOCAP_LABELS = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
[10.0 - 11.5]\tSes01F_impro01_M001\texc\t[3.5000, 3.0000, 3.0000]
[12.0 - 13.5]\tSes01F_impro01_M002\tfru\t[2.0000, 3.5000, 3.0000]
[14.0 - 15.5]\tSes01F_impro01_F003\tang\t[1.5000, 4.0000, 4.0000]
"""


def make_tree(root: Path, files: dict[str, str] | list[str]) -> Path:
    """Create every relative path in `files` under `root`, with the given text (or empty)."""
    items = files.items() if isinstance(files, dict) else ((name, "") for name in files)
    for name, text in items:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def stems(scan) -> dict[str, object]:
    return {Path(u.path).stem: u for u in scan.utterances}


def reasons(scan) -> dict[str, str]:
    return {Path(path).name: reason for path, reason in scan.unmatched}


# One small, fully recognised tree per corpus; the cross-corpus tests run over all of them.
TREES = {
    "ravdess": ["Actor_01/03-01-05-01-01-01-01.wav", "Actor_02/03-01-01-01-02-01-02.flac"],
    "tess": ["OAF_angry/OAF_back_angry.wav", "YAF_pleasant_surprised/YAF_dog_ps.wav"],
    "savee": ["AudioData/DC/a01.wav", "KL_su02.wav"],
    "cremad": {"AudioWAV/1001_DFA_ANG_XX.wav": "", "AudioWAV/1002_IEO_HAP_HI.wav": "",
               "VideoDemographics.csv": "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
                                        "1002,21,Female,Caucasian,Not Hispanic\n"},
    "iemocap": {"Session1/dialog/EmoEvaluation/Ses01F_impro01.txt": IEMOCAP_LABELS,
                "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav": "",
                "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav": ""},
    "emodb": ["wav/03a01Fa.wav", "wav/08a02Wb.wav"],
    "folder": ["angry/spk03/a.wav", "happy/spk03/b.wav"],
}


@pytest.mark.parametrize("name", sorted(TREES))
def test_every_corpus_gives_canonical_utterances_with_safe_speakers(tmp_path, name):
    scan = scan_corpus(name, make_tree(tmp_path, TREES[name]))
    assert scan.corpus == name and len(scan.utterances) == 2 and not scan.unmatched
    for u in scan.utterances:
        assert u.corpus == name and u.emotion in EMOTIONS and u.gender in ("female", "male", "")
        assert Path(u.path).is_absolute() and Path(u.path).is_file()
        assert re.fullmatch(rf"{name}-[A-Za-z0-9-]+", u.speaker)
        assert re.fullmatch(r"[a-z]{2}|und", u.language)


def test_speakers_are_unique_across_corpora(tmp_path):
    owners = {}
    for name, files in TREES.items():
        for u in scan_corpus(name, make_tree(tmp_path / name, files)).utterances:
            owners.setdefault(u.speaker, set()).add(u.corpus)
    assert all(len(corpora) == 1 for corpora in owners.values())
    assert {"ravdess-01", "emodb-03", "folder-spk03"} <= set(owners)


def test_every_parser_is_registered():
    assert {"ravdess", "tess", "savee", "cremad", "iemocap", "emodb", "folder"} <= set(list_corpora())


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".WAV", ".FLAC"])
def test_wav_and_flac_in_any_case_are_read(tmp_path, suffix):
    scan = scan_corpus("emodb", make_tree(tmp_path, [f"03a01Fa{suffix}"]))
    assert [u.emotion for u in scan.utterances] == ["happy"]


def test_ravdess_labels_speakers_and_genders(tmp_path):
    scan = scan_corpus("ravdess", make_tree(tmp_path, [
        "Actor_01/03-01-05-02-01-01-01.wav", "Actor_12/03-01-02-01-01-01-12.flac",
        "actor_24/03-01-08-01-01-01-24.wav", "Actor_07/03-01-06-01-01-01-07.wav",
    ]))
    got = {(u.emotion, u.speaker, u.gender, u.language) for u in scan.utterances}
    assert got == {("angry", "ravdess-01", "male", "en"), ("calm", "ravdess-12", "female", "en"),
                   ("surprise", "ravdess-24", "female", "en"), ("fear", "ravdess-07", "male", "en")}


def test_ravdess_song_video_and_misnamed_files_are_unmatched_with_reason(tmp_path):
    scan = scan_corpus("ravdess", make_tree(tmp_path, [
        "Actor_01/03-01-01-01-01-01-01.wav", "Actor_01/03-02-03-01-01-01-01.wav",
        "Actor_01/01-01-03-01-01-01-01.wav", "Actor_01/02-01-03-01-01-01-01.wav",
        "Actor_01/03-01-04-01-01-01-02.wav", "Actor_01/03-01-09-01-01-01-01.wav", "Actor_01/take1.wav",
    ]))
    assert len(scan.utterances) == 1
    why = reasons(scan)
    assert "song" in why["03-02-03-01-01-01-01.wav"] and "vocal channel 02" in why["03-02-03-01-01-01-01.wav"]
    assert "video" in why["01-01-03-01-01-01-01.wav"] and "video" in why["02-01-03-01-01-01-01.wav"]
    assert "Actor_01" in why["03-01-04-01-01-01-02.wav"]
    assert "emotion" in why["03-01-09-01-01-01-01.wav"]
    assert "MM-VV-EE-II-SS-RR-AA" in why["take1.wav"]


def test_tess_spelling_variants_and_the_oa_file(tmp_path):
    scan = scan_corpus("tess", make_tree(tmp_path, [
        "OAF_Fear/OAF_back_fear.wav", "OAF_pleasant_surprise/OAF_back_ps.wav",
        "OAF_Pleasant_surprised/OAF_bar_pleasant_surprised.wav", "YAF_pleasant_surprised/YAF_dog_ps.wav",
        "YAF_disgust/YAF_dog_Disgust.wav", "OAF_neutral/OA_bite_neutral.wav", "YAF_sad/YAF_door_sad.wav",
    ]))
    got = {stem: (u.speaker, u.emotion) for stem, u in stems(scan).items()}
    assert got == {
        "OAF_back_fear": ("tess-OAF", "fear"), "OAF_back_ps": ("tess-OAF", "surprise"),
        "OAF_bar_pleasant_surprised": ("tess-OAF", "surprise"), "YAF_dog_ps": ("tess-YAF", "surprise"),
        "YAF_dog_Disgust": ("tess-YAF", "disgust"), "OA_bite_neutral": ("tess-OAF", "neutral"),
        "YAF_door_sad": ("tess-YAF", "sad"),
    }
    assert {(u.gender, u.language) for u in scan.utterances} == {("female", "en")}


def test_tess_unknown_speaker_or_emotion_is_unmatched(tmp_path):
    scan = scan_corpus("tess", make_tree(tmp_path, [
        "OAF_angry/OAF_back_angry.wav", "MAF_angry/MAF_back_angry.wav", "OAF_calm/OAF_back_calm.wav",
        "OAF_angry/OAF_angry.wav",
    ]))
    assert list(stems(scan)) == ["OAF_back_angry"]
    assert set(reasons(scan)) == {"MAF_back_angry.wav", "OAF_back_calm.wav", "OAF_angry.wav"}


def test_savee_both_layouts(tmp_path):
    scan = scan_corpus("savee", make_tree(tmp_path, [
        "AudioData/DC/a01.wav", "AudioData/JE/sa03.wav", "audiodata/jk/su15.wav", "flat/KL_n30.wav",
        "flat/DC_h02.wav", "AudioData/XY/a01.wav", "flat/KL_z01.wav", "AudioData/DC/info.wav",
    ]))
    got = {(u.speaker, u.emotion) for u in scan.utterances}
    assert got == {("savee-DC", "angry"), ("savee-JE", "sad"), ("savee-JK", "surprise"),
                   ("savee-KL", "neutral"), ("savee-DC", "happy")}
    assert {(u.gender, u.language) for u in scan.utterances} == {("male", "en")}
    assert len(scan.unmatched) == 3


@pytest.mark.parametrize("csv_at", ["", "meta/"])
def test_cremad_reads_genders_from_demographics(tmp_path, csv_at):
    files = dict(TREES["cremad"])
    files[f"{csv_at}VideoDemographics.csv"] = files.pop("VideoDemographics.csv")
    files["AudioWAV/1003_TIE_NEU_LO.wav"] = ""  # actor missing from the csv
    scan = scan_corpus("cremad", make_tree(tmp_path, files))
    got = {u.speaker: (u.emotion, u.gender, u.language) for u in scan.utterances}
    assert got == {"cremad-1001": ("angry", "male", "en"), "cremad-1002": ("happy", "female", "en"),
                   "cremad-1003": ("neutral", "", "en")}


def test_cremad_without_demographics_and_misnamed_files(tmp_path):
    scan = scan_corpus("cremad", make_tree(tmp_path, [
        "AudioWAV/1001_DFA_SAD_MD.wav", "AudioWAV/1001_DFA_XYZ_MD.wav", "AudioWAV/0999_DFA_SAD_MD.wav",
        "AudioWAV/1001_DFA_SAD.wav",
    ]))
    assert [(u.emotion, u.gender) for u in scan.utterances] == [("sad", "")]
    assert len(scan.unmatched) == 3


def iemocap_tree(root: Path, session="Session1", sentences="sentences/wav") -> Path:
    utterances = ["F000", "M001", "M002", "F003", "F009"]  # F009 has no label line
    files = {f"{session}/dialog/EmoEvaluation/Ses01F_impro01.txt": IEMOCAP_LABELS,
             f"{session}/dialog/wav/Ses01F_impro01.wav": ""}
    files.update({f"{session}/{sentences}/Ses01F_impro01/Ses01F_impro01_{u}.wav": "" for u in utterances})
    return make_tree(root, files)


def test_iemocap_merges_excited_into_happy_by_default(tmp_path):
    scan = scan_corpus("iemocap", iemocap_tree(tmp_path))
    got = {stem: (u.emotion, u.speaker, u.gender) for stem, u in stems(scan).items()}
    assert got == {"Ses01F_impro01_F000": ("neutral", "iemocap-Ses01F", "female"),
                   "Ses01F_impro01_M001": ("happy", "iemocap-Ses01M", "male"),
                   "Ses01F_impro01_F003": ("angry", "iemocap-Ses01F", "female")}
    assert scan.dropped == Counter({"fru": 1})


def test_iemocap_without_merge_drops_excited(tmp_path):
    scan = scan_corpus("iemocap", iemocap_tree(tmp_path), merge_excited=False)
    assert set(stems(scan)) == {"Ses01F_impro01_F000", "Ses01F_impro01_F003"}
    assert scan.dropped == Counter({"fru": 1, "exc": 1})


def test_iemocap_unlabelled_and_dialog_audio_is_unmatched(tmp_path):
    why = reasons(scan_corpus("iemocap", iemocap_tree(tmp_path)))
    assert why["Ses01F_impro01_F009.wav"] == "no label in EmoEvaluation"
    assert "sentences" in why["Ses01F_impro01.wav"]


def test_iemocap_folder_names_in_any_case(tmp_path):
    scan = scan_corpus("iemocap", iemocap_tree(tmp_path, session="session1", sentences="Sentences/WAV"))
    assert len(scan.utterances) == 3


def test_emodb_labels_speakers_and_layouts(tmp_path):
    scan = scan_corpus("emodb", make_tree(tmp_path, [
        "wav/03a01Fa.wav", "wav/08b10Lc.wav", "16a05Tb.flac", "wav/13b03Ed.wav", "wav/02a01Fa.wav",
        "wav/03a01Xa.wav", "wav/readme.wav",
    ]))
    got = {stem: (u.speaker, u.emotion, u.gender, u.language) for stem, u in stems(scan).items()}
    assert got == {"03a01Fa": ("emodb-03", "happy", "male", "de"), "08b10Lc": ("emodb-08", "boredom", "female", "de"),
                   "16a05Tb": ("emodb-16", "sad", "female", "de"), "13b03Ed": ("emodb-13", "disgust", "female", "de")}
    assert set(reasons(scan)) == {"02a01Fa.wav", "03a01Xa.wav", "readme.wav"}


def test_folder_aliases_unknown_labels_and_speaker_subfolders(tmp_path):
    scan = scan_corpus("folder", make_tree(tmp_path, [
        "Anger/spk1/a.wav", "happiness/spk1/b.wav", "JOY/spk2/c.wav", "sadness/spk2/d.wav",
        "fearful/spk1/e.wav", "Disgusted/spk1/f.wav", "ps/spk1/g.wav", "bored/spk1/h.wav", "Calm/spk1/i.wav",
        "xyz/spk1/j.wav", "loose.wav",
    ]), language="en")
    got = {stem: (u.emotion, u.speaker) for stem, u in stems(scan).items()}
    assert got == {"a": ("angry", "folder-spk1"), "b": ("happy", "folder-spk1"), "c": ("happy", "folder-spk2"),
                   "d": ("sad", "folder-spk2"), "e": ("fear", "folder-spk1"), "f": ("disgust", "folder-spk1"),
                   "g": ("surprise", "folder-spk1"), "h": ("boredom", "folder-spk1"), "i": ("calm", "folder-spk1")}
    assert {(u.language, u.gender, u.corpus) for u in scan.utterances} == {("en", "", "folder")}
    assert reasons(scan)["j.wav"] == "unknown label 'xyz'"
    assert "loose.wav" in reasons(scan)


def test_folder_without_speaker_folders_warns_and_keeps_files_apart(tmp_path, caplog):
    root = make_tree(tmp_path, ["angry/001.wav", "happy/001.wav", "happy/002.wav"])
    with caplog.at_level(logging.WARNING):
        scan = scan_corpus("folder", root, name="my-corpus")
    assert len({u.speaker for u in scan.utterances}) == 3
    assert {u.corpus for u in scan.utterances} == {"my-corpus"}
    assert all(u.speaker.startswith("my-corpus-") for u in scan.utterances)
    assert "speaker-independent" in caplog.text


@pytest.mark.parametrize(
    "options", [{"name": "My Corpus"}, {"name": "a/b"}, {"name": "ravdess"}, {"language": "en-US"}]
)
def test_folder_rejects_bad_options(tmp_path, options):
    with pytest.raises(ConfigError):
        scan_corpus("folder", make_tree(tmp_path, ["angry/s/a.wav"]), **options)


def test_unknown_corpus_name_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="ravdess"):
        scan_corpus("ravdes", tmp_path)


def test_unknown_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="merge_exited"):
        scan_corpus("iemocap", iemocap_tree(tmp_path), merge_exited=False)


def test_path_that_is_not_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError):
        scan_corpus("emodb", tmp_path / "missing")
    with pytest.raises(DataError):
        scan_corpus("emodb", make_tree(tmp_path, ["03a01Fa.wav"]) / "03a01Fa.wav")


def test_folder_without_audio_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no audio files"):
        scan_corpus("ravdess", make_tree(tmp_path, ["Actor_01/notes.txt"]))
