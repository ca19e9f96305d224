#!/usr/bin/env python
"""Evidence for the default image channel mapping: colour map vs grey vs mel/delta/delta-delta.

For each mapping it renders the corpora, embeds every image with the frozen ImageNet
EfficientNet-Lite0 (the packaged weights, where fine-tuning starts), and fits a logistic
regression on the training speakers. Mappings are judged on held-out validation speakers;
the test corpus is reported beside them, never used to choose.

    python scripts/compare_channel_mappings.py --train ravdess=../shared/data/RAVDESS \
        --train tess=../shared/data/TESS --test emodb=../shared/data/EMO-DB --work /tmp/mappings
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

MAPPINGS = ("colormap", "grey", "deltas")


@torch.no_grad()
def embed(model, image_set, batch_size: int = 64) -> np.ndarray:
    """Pooled penultimate features of every image."""
    model.eval()
    out = []
    for start in range(0, len(image_set), batch_size):
        x, _ = image_set.batch(torch.arange(start, min(start + batch_size, len(image_set))))
        out.append(model.net.forward_head(model.net.forward_features((x - model.mean) / model.std), pre_logits=True))
    return torch.cat(out).numpy()


def main() -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from spectro.cli import _corpus_spec
    from spectro.config import FeatureConfig, ImageConfig
    from spectro.corpora import class_names
    from spectro.data import ImageSet, speaker_split
    from spectro.images import build_image_dataset, image_relpath
    from spectro.manifest import scan_corpora, select_classes
    from spectro.metrics import classification_metrics
    from spectro.models import create_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="append", type=_corpus_spec, required=True, metavar="NAME=PATH")
    parser.add_argument("--test", action="append", type=_corpus_spec, default=[], metavar="NAME=PATH")
    parser.add_argument("--work", type=Path, required=True, help="where the image trees go")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    classes = class_names(args.classes)
    train, _ = select_classes([u for s in scan_corpora(args.train) for u in s.utterances], args.classes)
    tests = {name: select_classes(scan_corpora([(name, path)])[0].utterances, args.classes)[0]
             for name, path in args.test}
    train_idx, val_idx = speaker_split(train, val_fraction=0.2, seed=args.seed)
    model = create_model("efficientnet_lite0", len(classes), pretrained=True)

    print(f"{'mapping':<10} {'val acc':>8} {'val UAR':>8}" + "".join(f" {n + ' acc':>10} {n + ' UAR':>10}" for n in tests))
    for mapping in MAPPINGS:
        config = FeatureConfig(image=ImageConfig(channels=mapping))
        tree = args.work / mapping
        splits = {"train": [train[i] for i in train_idx], "val": [train[i] for i in val_idx], **tests}
        build_image_dataset([u for us in splits.values() for u in us], tree, config, progress=False)
        features, labels = {}, {}
        for name, utterances in splits.items():
            image_set = ImageSet([tree / image_relpath(u) for u in utterances], utterances, classes, progress=False)
            features[name], labels[name] = embed(model, image_set), image_set.labels.numpy()
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, class_weight="balanced", max_iter=3000))
        classifier.fit(features["train"], labels["train"])
        scores = {name: classification_metrics(labels[name], classifier.predict(features[name]),
                                               labels=range(len(classes))) for name in splits if name != "train"}
        print(f"{mapping:<10} {scores['val']['accuracy']:>8.3f} {scores['val']['uar']:>8.3f}"
              + "".join(f" {scores[n]['accuracy']:>10.3f} {scores[n]['uar']:>10.3f}" for n in tests), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
