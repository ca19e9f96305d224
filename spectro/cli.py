"""The `spectro` command: each subcommand parses its arguments, calls the library, and prints."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import ConfigError, SpectroError

log = logging.getLogger("spectro")


def _corpus_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--corpus {text!r} must look like NAME=PATH, e.g. emodb=/data/EMO-DB")
    return name.strip().lower(), path


def _corpus_options(items: list[str]) -> dict[str, dict]:
    import yaml

    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        corpus, dot, option = key.partition(".")
        if not (sep and dot and corpus and option):
            raise ConfigError(f"--corpus-option {item!r} must look like NAME.OPTION=VALUE, e.g. iemocap.merge_excited=false")
        options.setdefault(corpus.lower(), {})[option] = yaml.safe_load(value)
    return options


def _add_corpus_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--corpus", action="append", type=_corpus_spec, default=[], required=required,
                        metavar="NAME=PATH", help="a corpus distribution; repeat for several")
    parser.add_argument("--corpus-option", action="append", default=[], metavar="NAME.OPTION=VALUE",
                        help="a parser option, e.g. iemocap.merge_excited=false")
    parser.add_argument("--classes", type=int, choices=[4, 5, 6, 7, 8],
                        help="keep only this class setup's emotions (others are dropped and counted)")


def _collect_utterances(args) -> list:
    from .manifest import count_table, read_manifest, scan_corpora, scan_report, select_classes

    if getattr(args, "manifest", None):
        utterances = read_manifest(args.manifest)
    else:
        scans = scan_corpora(args.corpus, _corpus_options(args.corpus_option))
        for scan in scans:
            report = scan_report(scan)
            if report:
                print(report, file=sys.stderr)
        utterances = [u for scan in scans for u in scan.utterances]
    if args.classes:
        utterances, dropped = select_classes(utterances, args.classes)
        if dropped:
            detail = ", ".join(f"{c}/{e} {n}" for (c, e), n in sorted(dropped.items()))
            print(f"dropped {sum(dropped.values())} utterance(s) outside the {args.classes}-class setup: {detail}",
                  file=sys.stderr)
    if not utterances:
        raise SpectroError("no utterances to work on")
    print(count_table(utterances))
    return utterances


def cmd_manifest(args) -> int:
    from .manifest import write_manifest

    utterances = _collect_utterances(args)
    write_manifest(utterances, args.out)
    print(f"wrote {len(utterances)} rows to {args.out}")
    return 0


def feature_config_from_args(args):
    """Feature settings and, with --augment, the waveform augmentation (the YAML/--set section ``augment``)."""
    from .config import FeatureConfig, WaveformAugmentConfig, apply_overrides, from_dict, load_yaml

    data = apply_overrides(load_yaml(args.config) if args.config else {}, args.set)
    if args.feature:
        data["feature"] = args.feature
    augment = data.pop("augment", None)
    if augment is not None and not args.augment:
        raise ConfigError("augment settings given without --augment; augmented copies go into their own tree")
    return (from_dict(FeatureConfig, data),
            from_dict(WaveformAugmentConfig, augment, prefix="augment.") if args.augment else None)


def cmd_images(args) -> int:
    from .images import build_image_dataset

    config, augmentation = feature_config_from_args(args)  # fail on bad settings before scanning anything
    utterances = _collect_utterances(args)
    result = build_image_dataset(utterances, args.out, config, augmentation=augmentation, workers=args.workers,
                                 progress=not args.quiet, verify=args.verify)
    print(f"{result.written} image(s) written, {result.skipped} already present, {len(result.rejected)} rejected "
          f"-> {result.out_dir}")
    if result.rejected:
        print(f"rejected files and reasons: {result.out_dir / 'rejected.csv'}")
    return 0


def cmd_train(args) -> int:
    from .config import load_experiment
    from .train import Trainer

    config = load_experiment(args.config, args.set)
    if args.run:
        config.run.name = args.run
    summary = Trainer(config, progress=not args.quiet).fit(resume=args.resume)
    run_dir = Path(config.run.checkpoint_dir) / config.run.name
    print(f"best epoch {summary['best_epoch']}: validation accuracy {summary['validation']['accuracy']:.3f}, "
          f"UAR {summary['validation']['uar']:.3f}")
    print(f"checkpoints: {run_dir}/best.pt, {run_dir}/last.pt; summary: {run_dir}/summary.json")
    print(f"TensorBoard: tensorboard --logdir {Path(config.run.log_dir) / config.run.name}")
    return 0


def _named_trees(items: list[str]) -> dict[str, str]:
    trees = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--images {item!r} must look like NAME=DIR, e.g. emodb=images/mel/emodb")
        trees[name] = path
    return trees


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(args.checkpoint, args.out, corpora=args.corpus, image_trees=_named_trees(args.images),
                                 corpus_options=_corpus_options(args.corpus_option), workers=args.workers,
                                 device=args.device, progress=not args.quiet)
    for name, m in report["corpora"].items():
        ci = m["ci95"]
        print(f"{name}: n {m['n']}  accuracy {m['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}]  "
              f"UAR {m['uar']:.3f} [{ci['uar'][0]:.3f}, {ci['uar'][1]:.3f}]  macro-F1 {m['macro_f1']:.3f}  "
              f"kappa {m['kappa']:.3f}  MCC {m['mcc']:.3f}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_report(args) -> int:
    from .report import collect_results, comparison_table, write_comparison

    rows = collect_results(args.paths)
    md, csv_path = write_comparison(rows, args.out)
    header, cells = comparison_table(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
    print(f"written: {md}, {csv_path}")
    return 0


def cmd_predict(args) -> int:
    import json

    from .inference import Predictor
    from .predict import expand_inputs, plot_probabilities

    paths = expand_inputs(args.inputs)
    if not paths:
        raise SpectroError(f"no audio files in {args.inputs}")
    predictor = Predictor.load(args.checkpoint, device=args.device, batch_size=args.batch_size, cache=not args.no_cache)
    failed = 0
    for prediction in predictor.predict_files(paths):
        failed += prediction.error is not None
        if args.json:
            print(json.dumps(_prediction_record(prediction, windows=args.segments)), flush=True)
        elif prediction.error:
            print(f"{prediction.path}: error: {prediction.error}", flush=True)
        else:
            _print_prediction(prediction, windows=args.segments)
        if args.plot and prediction.error is None:
            plot_probabilities(prediction, args.plot / f"{Path(prediction.path).stem}.png")
    if failed:
        print(f"{failed} of {len(paths)} file(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0


def _print_prediction(prediction, *, windows: bool) -> None:
    probs = "  ".join(f"{c} {p:.3f}" for c, p in prediction.probabilities.items())
    print(f"{prediction.path or 'recording'}: {prediction.label}  ({probs})", flush=True)
    for w in prediction.windows if windows else []:
        print(f"  {w.start:7.2f}-{w.end:7.2f} s  {w.label} {w.probabilities[w.label]:.3f}", flush=True)


def cmd_listen(args) -> int:
    from . import listen
    from .inference import Predictor

    if args.list_inputs:
        print("\n".join(listen.input_devices()) or "no audio input devices")
        return 0
    if args.checkpoint is None:
        raise ConfigError("spectro listen needs a CHECKPOINT (or --list-inputs)")
    predictor = Predictor.load(args.checkpoint, device=args.device)
    window = predictor.audio.duration or 3.0
    with listen.Microphone(args.input) as source, listen.optional_recorder(args.save, source.sample_rate) as recorder:
        if args.seconds:
            print(f"recording {args.seconds:g} s ...", file=sys.stderr, flush=True)
            prediction = predictor.predict(listen.record(source, seconds=args.seconds, recorder=recorder),
                                           source.sample_rate)
            _print_prediction(prediction, windows=True)
            if args.plot:
                from .predict import plot_probabilities

                plot_probabilities(prediction, args.plot)
        else:
            print(f"listening: the last {window:g} s every {args.hop:g} s; Ctrl-C stops", file=sys.stderr, flush=True)
            _listen_rolling(predictor, source, recorder, args, window)
    if args.save:
        print(f"audio saved to {args.save}")
    return 0


def _listen_rolling(predictor, source, recorder, args, window: float) -> None:
    from . import listen

    readings = []
    try:
        for reading in listen.rolling(predictor, source, hop=args.hop, window=window, gate_db=args.gate_db,
                                      recorder=recorder):
            readings.append(reading)
            p = reading.prediction
            print(f"{reading.time:8.1f} s  " + (f"{p.label:<9} {p.probabilities[p.label]:.2f}" if p else
                                                 f"(quiet, {reading.level_db:.0f} dBFS)"), flush=True)
            if args.plot:
                listen.plot_readings(readings, predictor.classes, args.plot)
    except KeyboardInterrupt:
        pass
    if args.plot and readings:
        listen.plot_readings(readings, predictor.classes, args.plot)


def _prediction_record(prediction, *, windows: bool) -> dict:
    """A Prediction as JSON-ready data, probabilities rounded to 6 decimals."""
    import dataclasses

    rounded = lambda p: {c: round(v, 6) for c, v in p.items()}  # noqa: E731
    record = {k: v for k, v in dataclasses.asdict(prediction).items() if v is not None and k != "windows"}
    if "probabilities" in record:
        record["probabilities"] = rounded(record["probabilities"])
    if windows and prediction.windows is not None:
        record["windows"] = [{"start": round(w.start, 3), "end": round(w.end, 3), "label": w.label,
                              "probabilities": rounded(w.probabilities)} for w in prediction.windows]
    return record


def cmd_export(args) -> int:
    from .export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, format=args.format)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.format})")
    return 0


def cmd_synth(args) -> int:
    from .synth import generate_corpus

    paths = generate_corpus(args.out, speakers_per_language=args.speakers,
                            utterances_per_emotion=args.utterances, seed=args.seed)
    print(f"{len(paths)} synthetic utterances in {args.out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectro", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("manifest", help="list a corpus's utterances with their labels as CSV")
    _add_corpus_arguments(p, required=True)
    p.add_argument("--out", required=True, type=Path, metavar="FILE.csv")
    p.set_defaults(handler=cmd_manifest)

    p = sub.add_parser("images", help="render utterances as 224x224x3 PNGs (or .npy matrices) in an ImageFolder tree")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, metavar="FILE.csv")
    source.add_argument("--corpus", action="append", type=_corpus_spec, metavar="NAME=PATH")
    p.add_argument("--corpus-option", action="append", default=[], metavar="NAME.OPTION=VALUE")
    p.add_argument("--classes", type=int, choices=[4, 5, 6, 7, 8])
    p.add_argument("--feature", help="feature to render (default: mel, or the --config file's)")
    p.add_argument("--config", type=Path, help="YAML file of feature settings (audio, spectrogram, image)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a feature setting, e.g. image.channels=grey")
    p.add_argument("--augment", action="store_true",
                   help="render randomly augmented training copies (settings: augment.*) instead of the recordings")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--verify", action="store_true",
                   help="first open every finished file of the tree and render the unreadable ones again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_images)

    p = sub.add_parser("train", help="fine-tune a model on image trees, as set by a YAML config")
    p.add_argument("config", type=Path, metavar="CONFIG.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. train.epochs=3 (repeatable)")
    p.add_argument("--run", help="run name (default: the config file's name)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on test corpora; write report.md/json, plots, predictions")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.pt")
    p.add_argument("--corpus", action="append", type=_corpus_spec, default=[], metavar="NAME=PATH",
                   help="a corpus to render with the checkpoint's feature settings and score")
    p.add_argument("--corpus-option", action="append", default=[], metavar="NAME.OPTION=VALUE")
    p.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                   help="an existing image tree made with the checkpoint's feature settings")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--workers", type=int, help="processes for rendering (default: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("report", help="one comparison table across runs, beside the published numbers")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_REPORT_DIR",
                   help="checkpoints/<run> folders (summary.json) or evaluate --out folders (report.json)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("predict", help="emotion probabilities for new recordings")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.pt")
    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_FOLDER")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--segments", action="store_true", help="also each window's result (times in the file's clock)")
    p.add_argument("--plot", type=Path, metavar="DIR", help="save a probability bar chart per file")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=8,
                   help="windows scored at once; larger is faster on a GPU, smaller needs less memory (default: 8)")
    p.add_argument("--no-cache", action="store_true",
                   help="build the model from the checkpoint instead of reading its cached traced copy")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("export", help="a checkpoint as a slim checkpoint, an ONNX graph or a TorchScript module")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.pt")
    p.add_argument("--format", required=True, choices=["slim", "onnx", "torchscript"],
                   help="slim: weights and feature settings only (predict, evaluate and Predictor read it); "
                        "onnx, torchscript: a graph from feature arrays to class probabilities per window")
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("listen", help="live emotion from a microphone (needs the listen extra: sounddevice)")
    p.add_argument("checkpoint", type=Path, nargs="?", metavar="CHECKPOINT.pt")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between readings of the rolling window (default: 0.5)")
    p.add_argument("--seconds", type=float, metavar="N", help="record N seconds, then score the recording once")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="keep a confidence chart: refreshed every hop while listening, final at the end")
    p.add_argument("--save", type=Path, metavar="FILE.wav", help="keep the audio heard")
    p.add_argument("--gate-db", type=float, default=-45.0,
                   help="windows quieter than this RMS level (dBFS) are reported as quiet, not scored (default: -45)")
    p.add_argument("--input", metavar="DEVICE", help="audio input device, by index or name (default: the system's)")
    p.add_argument("--list-inputs", action="store_true", help="list the audio input devices and exit")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the model runs (default: auto)")
    p.set_defaults(handler=cmd_listen)

    p = sub.add_parser("synth", help="write the built-in synthetic emotional-speech corpus")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--speakers", type=int, default=4, help="speakers per language")
    p.add_argument("--utterances", type=int, default=8, help="utterances per speaker and emotion")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("demo", help="the whole pipeline on the built-in synthetic corpus")
    p.add_argument("--out", type=Path, default=Path("checkpoints/demo"), metavar="DIR")
    p.add_argument("--workers", type=int, help="processes for image generation (default: all cores)")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # spectro's own messages at INFO (DEBUG with -v); other libraries' only when they warn
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.handler(args)
    except SpectroError as error:
        print(f"spectro {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the machine, not the input: a full disk, a read-only or vanished folder
        where = f" {error.filename}" if error.filename else ""
        print(f"spectro {args.command}: error:{where}: {error.strerror or error}; fix this and run the same command "
              "again (finished work is kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # a stopped training run says itself how to continue
        print(f"spectro {args.command}: {stop or 'interrupted; ' + RESUME_HINTS.get(args.command, RESUME_HINTS['images'])}",
              file=sys.stderr)
        return 130


RESUME_HINTS = {
    "train": "continue from the last saved state with the same command and --resume",
    "images": "run the same command again: finished work is kept and not redone",
}


if __name__ == "__main__":
    sys.exit(main())
