"""`spectro demo`: the whole pipeline on the built-in synthetic corpus, no downloads needed.

Synthesise two "languages", render their log-mel images, fine-tune ImageNet EfficientNet-Lite0
on language A (validation on held-out speakers of A), then test on unseen language B.
Rerunning resumes: finished stages are not redone.
"""

from __future__ import annotations

from pathlib import Path

from .config import DataConfig, ExperimentConfig, FeatureConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from .corpora import scan_corpus
from .images import build_image_dataset
from .manifest import count_table, write_manifest
from .synth import generate_corpus
from .training import Trainer


def demo_config(out: Path, *, device: str = "auto") -> ExperimentConfig:
    return ExperimentConfig(
        data=DataConfig(train=[str(out / "images" / "synth-a")], test={"synth-b": str(out / "images" / "synth-b")},
                        classes=4),
        model=ModelConfig(name="efficientnet_lite0", pretrained=True, drop_rate=0.2),
        optim=OptimConfig(lr=2e-3, backbone_lr_scale=0.25, warmup_epochs=0.5),
        train=TrainConfig(epochs=6, batch_size=16, freeze_epochs=1, early_stopping_patience=0, device=device),
        run=RunConfig(name="demo", checkpoint_dir=str(out / "checkpoints"), log_dir=str(out / "runs")),
    )


def run_demo(out: Path, *, workers: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Run (or resume) every stage of the demo under `out`; returns the training summary."""
    corpus_dir = out / "corpus"
    print(f"1/3 synthetic corpus -> {corpus_dir}")
    generate_corpus(corpus_dir)
    utterances = scan_corpus("synth", corpus_dir).utterances
    write_manifest(utterances, out / "manifest.csv")
    print(count_table(utterances))

    print(f"2/3 log-mel images -> {out / 'images'}")
    for language in ("synth-a", "synth-b"):
        subset = [u for u in utterances if u.language == language]
        result = build_image_dataset(subset, out / "images" / language, FeatureConfig(), workers=workers,
                                     progress=progress)
        print(f"  {language}: {result.written} written, {result.skipped} already present, "
              f"{len(result.rejected)} rejected")

    config = demo_config(out, device=device)
    print("3/3 fine-tune ImageNet EfficientNet-Lite0 on synth-a, test on synth-b")
    summary = Trainer(config, progress=progress).fit(resume=True)
    val, test = summary["validation"], summary["test"]["synth-b"]
    print(f"\nvalidation (held-out synth-a speakers): accuracy {val['accuracy']:.3f}  UAR {val['uar']:.3f}")
    print(f"test (unseen language synth-b, n={test['n']}): accuracy {test['accuracy']:.3f}  UAR {test['uar']:.3f}  "
          f"macro-F1 {test['macro_f1']:.3f}  (chance 0.25)")
    print(f"checkpoints: {Path(config.run.checkpoint_dir) / 'demo'}")
    print(f"TensorBoard: tensorboard --logdir {Path(config.run.log_dir)}")
    return summary
