"""Rendering at scale: straight into the packed store, and shards of one job on several machines."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tone, write_audio

from spectro.config import FeatureConfig, ImageConfig
from spectro.corpora import Utterance, scan_corpus
from spectro.data import ImageSet
from spectro.errors import DataError
from spectro.image_tree import read_image_manifest
from spectro.images import Shard, build_image_dataset
from spectro.packed import unpack_tree

SMALL = FeatureConfig(image=ImageConfig(size=32))


@pytest.fixture(scope="module")
def utterances(synth_corpus, tmp_path_factory):
    """The synthetic corpus plus two long recordings (several windows each)."""
    long = tmp_path_factory.mktemp("long")
    extra = [Utterance(write_audio(long / f"long{i}.wav", tone(180 + 40 * i, seconds=5.0 + i)), "synth", "synth-a01f",
                       "sad", "synth-a", "female") for i in range(2)]
    return scan_corpus("synth", synth_corpus).utterances + extra


def _stored(tree):
    rows = read_image_manifest(tree)
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], None, progress=False)
    stored, _, _ = images.stored(torch.arange(images.n_windows))
    return [u for _, u in rows], images.owner, stored["image"]


def _files(tree):
    """Every file a person or another program reads (not the hidden store, journals and locks)."""
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tree).parts)}


def test_a_packed_tree_holds_the_windows_a_png_tree_holds_and_unpacks_to_the_same_pngs(tmp_path, utterances):
    build_image_dataset(utterances, tmp_path / "png", SMALL, workers=2, progress=False)
    result = build_image_dataset(utterances, tmp_path / "packed", SMALL, workers=2, progress=False, storage="packed")
    assert result.written == len(utterances) and not list((tmp_path / "packed").rglob("*.png"))
    png, packed = _stored(tmp_path / "png"), _stored(tmp_path / "packed")
    assert png[0] == packed[0] and torch.equal(png[1], packed[1]) and torch.equal(png[2], packed[2])
    assert len(png[1]) > len(utterances)  # the long recordings gave several windows
    assert (tmp_path / "png" / "manifest.csv").read_bytes() == (tmp_path / "packed" / "manifest.csv").read_bytes()
    assert unpack_tree(tmp_path / "packed") == len(png[1])
    pngs = {k: v for k, v in _files(tmp_path / "png").items() if k.endswith(".png")}
    assert {k: v for k, v in _files(tmp_path / "packed").items() if k.endswith(".png")} == pngs
    again = build_image_dataset(utterances, tmp_path / "packed", SMALL, workers=1, progress=False, storage="packed")
    assert (again.written, again.skipped) == (0, len(utterances))
    with pytest.raises(DataError, match="storage: 'png' there, 'packed' now"):
        build_image_dataset(utterances, tmp_path / "png", SMALL, workers=1, progress=False, storage="packed")


def test_a_packed_job_killed_midway_resumes_to_the_same_store(tmp_path, utterances, synth_corpus):
    tree = tmp_path / "killed"
    slow = ("import sys, time; import spectro.rendering as r; from spectro.cli import main; real = r.render; "
            "r.render = lambda task: (time.sleep(0.05), real(task))[1]; sys.exit(main(sys.argv[1:]))")
    args = ["images", "--corpus", f"synth={synth_corpus}", "--out", str(tree), "--set", "image.size=32", "--format",
            "packed", "--workers", "1", "--quiet"]
    job = subprocess.Popen([sys.executable, "-c", slow, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tree / ".journal.all.csv"
    while (not journal.is_file() or len(journal.read_text().splitlines()) < 6) and job.poll() is None:
        pass
    job.kill()
    job.wait()
    finished = len(journal.read_text().splitlines()) - 1
    result = build_image_dataset(scan_corpus("synth", synth_corpus).utterances, tree, SMALL, workers=1,
                                 progress=False, storage="packed")
    assert result.written == 32 - finished >= 0 and result.skipped == finished > 0
    build_image_dataset(scan_corpus("synth", synth_corpus).utterances, tmp_path / "whole", SMALL, workers=1,
                        progress=False, storage="packed")
    killed, whole = _stored(tree), _stored(tmp_path / "whole")
    order = [killed[0].index(u) for u in whole[0]]
    assert sorted(order) == list(range(len(order)))
    assert torch.equal(killed[2][torch.tensor(order)], whole[2])  # one window per recording here


@pytest.mark.parametrize("storage", ["png", "packed"])
def test_two_shards_and_a_final_run_equal_one_whole_run(tmp_path, synth_corpus, storage):
    whole = tmp_path / "whole"
    args = ["images", "--corpus", f"synth={synth_corpus}", "--set", "image.size=32", "--workers", "1", "--quiet",
            "--format", storage]
    subprocess.run([sys.executable, "-m", "spectro", *args, "--out", str(whole)], check=True)
    shards = [subprocess.Popen([sys.executable, "-m", "spectro", *args, "--out", str(tmp_path / "sharded"), "--shard",
                                f"{k}/2"], stdout=subprocess.PIPE, text=True) for k in (1, 2)]
    outputs = [s.communicate()[0] for s in shards]
    assert [s.returncode for s in shards] == [0, 0] and all("shard" in out for out in outputs)
    assert not (tmp_path / "sharded" / "manifest.csv").exists()  # the final run writes it
    final = build_image_dataset(scan_corpus("synth", synth_corpus).utterances, tmp_path / "sharded", SMALL, workers=1,
                                progress=False, storage=storage)
    assert (final.written, final.skipped) == (0, 32)
    assert _files(tmp_path / "sharded") == _files(whole)
    sharded, single = _stored(tmp_path / "sharded"), _stored(whole)
    assert sharded[0] == single[0] and torch.equal(sharded[2], single[2])
    assert not list((tmp_path / "sharded").glob(".journal.*"))


def test_a_shard_holds_a_fixed_share_whatever_the_order():
    keys = [f"happy/c__s__{i}" for i in range(400)]
    shards = [Shard(k, 3) for k in (1, 2, 3)]
    owners = [[s.holds(key) for s in shards] for key in keys]
    assert all(sum(o) == 1 for o in owners)  # each recording in exactly one shard
    assert np.sum(owners, axis=0).min() > 100  # about a third each
    with pytest.raises(Exception, match="K/N"):
        Shard.parse("3/2")


def test_shards_refuse_group_normalisation(tmp_path, utterances):
    from spectro.config import from_dict

    speaker = from_dict(FeatureConfig, {"image": {"size": 32}, "normalise": {"mode": "speaker"}})
    with pytest.raises(Exception, match="--shard cannot render normalise.mode='speaker'"):
        build_image_dataset(utterances, tmp_path / "t", speaker, shard=Shard(1, 2), progress=False)
