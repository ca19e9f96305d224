#!/usr/bin/env python
"""Evidence for default feature settings, judged without touching the test corpus.

Each variant (a set of feature overrides) renders the corpora, every recording is embedded by the
frozen ImageNet EfficientNet-Lite0 (the packaged weights, where fine-tuning starts: the mean over its
windows of the pooled features, ``spectro.scoring.recording_embeddings``, as `spectro explore`), and logistic
regressions are scored two ways: on held-out speakers of the pooled training corpora, and across
training corpora (fit on one, score on each other). The test corpus is reported beside them,
never used to choose.

    python scripts/compare_feature_settings.py --train ravdess=../shared/data/RAVDESS \
        --train tess=../shared/data/TESS --test emodb=../shared/data/EMO-DB --work /tmp/variants \
        --variant colormap:image.channels=colormap --variant grey:image.channels=grey \
        --variant deltas:image.channels=deltas
"""

from __future__ import annotations

import argparse
import sys
from itertools import permutations
from pathlib import Path

import numpy as np


def main() -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from spectro.cli import corpus_spec
    from spectro.config import FeatureConfig, apply_overrides, from_dict
    from spectro.corpora import class_names, select_labels
    from spectro.data import ImageSet, speaker_split
    from spectro.image_tree import recording_key
    from spectro.images import build_image_dataset
    from spectro.manifest import scan_corpora
    from spectro.metrics import classification_metrics
    from spectro.models import create_model
    from spectro.scoring import recording_embeddings, resolve_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="append", type=corpus_spec, required=True, metavar="NAME=PATH")
    parser.add_argument("--test", action="append", type=corpus_spec, default=[], metavar="NAME=PATH")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="feature overrides to compare, e.g. grey:image.channels=grey")
    parser.add_argument("--work", type=Path, required=True, help="where the image trees go")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="the frozen ImageNet network: efficientnet_lite0, efficientnet_lite1 or "
                             "efficientnet_lite2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    classes = class_names(args.classes)
    by_corpus = {name: select_labels(scan_corpora([(name, path)])[0].utterances, args.classes)[0]
                 for name, path in [*args.train, *args.test]}
    train_names, test_names = [n for n, _ in args.train], [n for n, _ in args.test]
    pooled = [u for n in train_names for u in by_corpus[n]]
    train_idx, val_idx = speaker_split(pooled, val_fraction=0.2, seed=args.seed)
    device = resolve_device("auto")
    model = create_model(args.backbone, len(classes), pretrained=True).to(device)

    cross = [f"{a}->{b}" for a, b in permutations(train_names, 2)]
    print(f"UAR of frozen ImageNet {args.backbone} features + logistic regression ({args.classes} classes)")
    print(f"{'variant':<16} {'val':>6} " + " ".join(f"{c:>16}" for c in cross) + f" {'cross mean':>10} "
          + " ".join(f"{'(' + t + ')':>10}" for t in test_names))
    for variant in args.variant:
        name, _, overrides = variant.partition(":")
        config = from_dict(FeatureConfig, apply_overrides({}, [o for o in overrides.split(",") if o]))
        tree = args.work / name
        build_image_dataset([u for us in by_corpus.values() for u in us], tree, config, progress=False)
        cache = args.work / f"{name}.{args.backbone}.{args.classes}.npz"  # embeddings: the slow part
        if cache.is_file():
            saved = np.load(cache)
            features = {c: saved[f"x_{c}"] for c in by_corpus}
            labels = {c: saved[f"y_{c}"] for c in by_corpus}
        else:
            features, labels = {}, {}
            for corpus, utterances in by_corpus.items():
                image_set = ImageSet([tree / recording_key(u) for u in utterances], utterances, classes, progress=False)
                features[corpus] = recording_embeddings(model, image_set, device=device).numpy()
                labels[corpus] = image_set.labels.numpy()
            np.savez(cache, **{f"x_{c}": v for c, v in features.items()}, **{f"y_{c}": v for c, v in labels.items()})
        X = np.concatenate([features[n] for n in train_names])
        y = np.concatenate([labels[n] for n in train_names])

        def fit_score(fit_x, fit_y, tests):
            classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, class_weight="balanced",
                                                                            max_iter=3000))
            classifier.fit(fit_x, fit_y)
            return [classification_metrics(ty, classifier.predict(tx), labels=range(len(classes)))["uar"] for tx,
                    ty in tests]

        val, *held_out = fit_score(X[train_idx], y[train_idx], [(X[val_idx], y[val_idx]),
                                                                 *((features[t], labels[t]) for t in test_names)])
        cross_scores = [fit_score(features[a], labels[a], [(features[b], labels[b])])[0]
                        for a, b in permutations(train_names, 2)]
        print(f"{name:<16} {val:>6.3f} " + " ".join(f"{s:>16.3f}" for s in cross_scores)
              + f" {np.mean(cross_scores):>10.3f} " + " ".join(f"{s:>10.3f}" for s in held_out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
