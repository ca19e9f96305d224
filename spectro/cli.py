"""The `spectro` command: each subcommand parses its arguments, calls the library, and prints."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .allocator import keep_freed_memory
from .errors import ConfigError, SpectroError

log = logging.getLogger("spectro")

DESCRIPTION = """\
Speech emotion recognition by transfer learning from ImageNet CNNs.

Recordings become spectrogram pictures (images); an ImageNet network learns emotions from them
(train); it is scored on corpora and languages it has never heard (evaluate, report), and it labels
new audio (predict, listen, serve, or `from spectro import Predictor`). Start with `spectro demo`, which
runs the whole pipeline on a built-in synthetic corpus, and `spectro COMMAND --help`."""


def corpus_spec(text: str) -> tuple[str, str]:
    """An argparse type: ``NAME=PATH`` as (corpus name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--corpus {text!r} must look like NAME=PATH, e.g. emodb=/data/EMO-DB")
    return name.strip().lower(), path


def _corpus_options(items: list[str]) -> dict[str, dict]:
    from .config import parse_yaml

    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        corpus, dot, option = key.partition(".")
        if not (sep and dot and corpus and option):
            raise ConfigError(f"--corpus-option {item!r} must look like NAME.OPTION=VALUE, e.g. "
                              "iemocap.merge_excited=false")
        options.setdefault(corpus.lower(), {})[option] = parse_yaml(value, f"--corpus-option {item!r}")
    return options


def _feature_names() -> list[str]:
    from .features import list_features

    return list_features()


def _corpus_names() -> list[str]:
    from .corpora import list_corpora

    return list_corpora()


def _class_spec(text: str) -> int | list[str]:
    """--classes 4, or --classes neutral,happy,sad,angry,boredom."""
    from .corpora import class_names

    spec = int(text) if text.strip().isdigit() else [c.strip() for c in text.split(",") if c.strip()]
    try:
        class_names(spec)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return spec


def _label_map(text: str) -> dict[str, str]:
    """--map happy=positive,angry=negative."""
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    if not pairs or any(not sep or not a.strip() or not b.strip() for a, sep, b in pairs):
        raise argparse.ArgumentTypeError(f"--map {text!r} must look like FROM=TO,FROM=TO, e.g. "
                                         "happy=positive,sad=negative")
    return {a.strip(): b.strip() for a, _, b in pairs}


def _collect_utterances(args) -> list:
    """The utterances a manifest or corpora give, relabelled by --map and kept by --classes; what is left
    out is counted per corpus and label."""
    from .corpora import check_names, describe_drops, select_labels
    from .manifest import count_table, read_manifest, scan_corpora, scan_report

    if getattr(args, "manifest", None):
        utterances = read_manifest(args.manifest)
    else:
        scans = scan_corpora(args.corpus, _corpus_options(args.corpus_option))
        for scan in scans:
            report = scan_report(scan)
            if report:
                print(report, file=sys.stderr)
        utterances = [u for scan in scans for u in scan.utterances]
    absent = check_names(utterances, args.classes, args.map)
    if absent:
        print(f"warning: no recording of class(es) {absent} in these corpora", file=sys.stderr)
    utterances, dropped = select_labels(utterances, args.classes, args.map)
    if dropped:
        print(f"dropped {sum(dropped.values())} utterance(s) outside the classes: {describe_drops(dropped)}",
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
    from .image_tree import read_normalisation
    from .images import Shard, build_image_dataset

    config, augmentation = feature_config_from_args(args)  # fail on bad settings before scanning anything
    shard = Shard.parse(args.shard) if args.shard else None
    utterances = _collect_utterances(args)
    result = build_image_dataset(utterances, args.out, config, augmentation=augmentation, workers=args.workers,
                                 progress=not args.quiet, verify=args.verify, storage=args.format, shard=shard)
    print(f"{result.written} recording(s) rendered, {result.skipped} already present, {len(result.rejected)} "
          f"rejected -> {result.out_dir}" + (f" (shard {shard.index} of {shard.count}; a plain run without --shard "
                                            "writes the manifest once every shard is done)" if shard else ""))
    if result.rejected:
        print(f"rejected files and reasons: {result.out_dir / 'rejected.csv'}")
    grouping = read_normalisation(result.out_dir) if not shard else None
    for corpus, guard in (grouping or {}).get("guard", {}).items():
        value = "undefined" if guard["value"] is None else f"{guard['value']:.3f}"
        print(f"normalisation guard, {corpus}: {guard['groups']} group(s), {value} of the band-mean variance between "
              f"them against {guard['threshold']:.3f}: " + ("fired, corpus statistics used" if guard["fired"] else
                                                            "quiet"))
    return 0


def cmd_unpack(args) -> int:
    from .packed import unpack_tree

    written = unpack_tree(args.tree)
    print(f"{written} PNG(s) written into {args.tree}")
    return 0


def cmd_train(args) -> int:
    import json

    from .config import load_experiment
    from .training import Trainer

    overrides = args.set + ([f"train.device={args.device}"] if args.device else [])
    overrides += [f"run.name={json.dumps(args.run)}"] if args.run else []  # quoted: a name is text, whatever it is
    config = load_experiment(args.config, overrides)
    from .metrics import describe_scores
    from .training.run_folder import RunFolder

    summary = Trainer(config, progress=not args.quiet).fit(resume=args.resume)
    if int(os.environ.get("RANK", "0")):  # one of several torchrun processes: the first one reports
        return 0
    folder = RunFolder(config.run)
    print(f"best epoch {summary['best_epoch']}: validation {describe_scores(summary['validation'])}")
    print(f"checkpoints: {folder.best}, {folder.last}; summary: {folder.summary}")
    print(f"TensorBoard: tensorboard --logdir {folder.logs}")
    return 0


def cmd_ensemble(args) -> int:
    from .ensemble import build_ensemble

    path, weights, uar = build_ensemble(args.checkpoints, args.out, validation=args.validation, speakers=args.speakers,
                                        step=args.step, apply_to=args.apply_to, adabn=args.adabn,
                                        corpus_options=_corpus_options(args.corpus_option),
                                        workers=args.workers, device=args.device, progress=not args.quiet)
    for checkpoint, weight in zip(args.apply_to or args.checkpoints, weights):
        print(f"{weight:.2f}  {checkpoint}")
    print(f"validation UAR {uar:.3f}; ensemble: {path} (give it to spectro evaluate or predict like a checkpoint)")
    return 0


def cmd_interpolate(args) -> int:
    from .interpolate import Pair, write_interpolated

    pair = Pair.of(args.checkpoint, args.lp)
    final = Pair.of(args.apply_to, args.apply_lp) if args.apply_to else None
    alphas = [round(a * args.step, 6) for a in range(int(round(1 / args.step)) + 1)]
    out, record = write_interpolated(pair, args.out, alpha=args.alpha, bn=args.bn[0], validation=args.validation,
                                     alphas=alphas, bn_modes=args.bn, apply_to=final,
                                     corpus_options=_corpus_options(args.corpus_option), workers=args.workers,
                                     device=args.device, progress=not args.quiet)
    chosen = record.get("chosen_by")
    if chosen:
        for c in chosen["candidates"]:
            print(f"alpha {c['alpha']:.2f}  bn {c['bn']:<11}  validation UAR {c['uar']:.3f}")
    print(f"alpha {record['alpha']:.2f}, BatchNorm {record['bn']}" + (f" (validation UAR {chosen['uar']:.3f})"
                                                                     if chosen else "") + f" -> {out}")
    return 0


def cmd_pseudo_label(args) -> int:
    from .pseudo_label import pseudo_label

    threshold = 0.8 if args.threshold is None and args.fraction is None else args.threshold
    record = pseudo_label(args.models, args.out, threshold=threshold, fraction=args.fraction,
                          balanced=not args.unbalanced,
                          adabn=args.adabn, device=args.device, corpora=args.corpus,
                          image_trees=_named_trees(args.images), corpus_options=_corpus_options(args.corpus_option),
                          workers=args.workers, progress=not args.quiet)
    counts = ", ".join(f"{c} {n}" for c, n in record["per_class"].items())
    print(f"{record['kept']} of {record['scored']} recordings kept ({counts}) -> {args.out}")
    return 0


def cmd_config_show(args) -> int:
    import yaml

    from .config import load_experiment, to_dict

    print(yaml.safe_dump(to_dict(load_experiment(args.config, args.set)), sort_keys=False), end="")
    return 0


def _named_trees(items: list[str]) -> dict[str, str]:
    trees = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--images {item!r} must look like NAME=DIR, e.g. emodb=images/mel/emodb")
        if name in trees:
            raise ConfigError(f"--images names {name!r} twice; each tree needs a name of its own")
        trees[name] = path
    return trees


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_checkpoint
    from .metrics import describe_scores

    report = evaluate_checkpoint(args.checkpoints, args.out, corpora=args.corpus, image_trees=_named_trees(args.images),
                                 corpus_options=_corpus_options(args.corpus_option), workers=args.workers,
                                 device=args.device, progress=not args.quiet, adabn=args.adabn,
                                 present_classes=args.present_classes, normalise=args.set)
    for name, m in report["corpora"].items():
        print(f"{name}: {describe_scores(m, extra=('kappa', 'mcc'))}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_explore(args) -> int:
    from .explore import OUTPUTS, describe_separability, explore_checkpoint

    report = explore_checkpoint(args.checkpoint, args.out, corpora=args.corpus, image_trees=_named_trees(args.images),
                                corpus_options=_corpus_options(args.corpus_option), method=args.method,
                                seed=args.seed, folds=args.folds, workers=args.workers, device=args.device,
                                progress=not args.quiet)
    for name, corpus in report["corpora"].items():
        left_out = sum(corpus["dropped"].values()) + corpus["rejected"]
        print(f"{name}: {corpus['recordings']} recording(s), {corpus['speakers']} speaker(s)"
              + (f", {left_out} left out (other classes or rejected)" if left_out else ""))
    print(describe_separability(report))
    print(f"written: {', '.join(str(Path(args.out) / f) for f in OUTPUTS)}")
    return 0


def cmd_report(args) -> int:
    from .report import collect_results, comparison_tables, write_comparison

    rows = collect_results(args.paths)
    md, csv_path = write_comparison(rows, args.out)
    for title, (header, cells) in comparison_tables(rows).items():
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
        print(title)
        for line in [header, *cells]:
            print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
        print()
    print(f"written: {md}, {csv_path}")
    return 0


def cmd_predict(args) -> int:
    import json

    from .inference import load_predictor
    from .predict import expand_inputs, plot_paths, plot_probabilities, prediction_record

    paths = expand_inputs(args.inputs)
    if not paths:
        raise SpectroError(f"no audio files in {args.inputs}")
    plots = plot_paths(paths, args.plot) if args.plot else {}
    predictor = load_predictor(args.checkpoint.split(","), device=args.device, batch_size=args.batch_size,
                               cache=not args.no_cache, reference=expand_inputs(args.normalise_with))
    if set(predictor.checkpoint.get("train_corpora", [])) == {"synth"}:
        print("warning: this checkpoint learnt from the synthetic demo corpus only; its predictions say nothing "
              "about real speech", file=sys.stderr)
    failed, grouping = 0, None
    for prediction in predictor.predict_files(paths, speakers=args.speakers):
        failed += prediction.error is not None
        grouping = grouping or prediction.normalisation
        if args.json:
            print(json.dumps(prediction_record(prediction, windows=args.segments)), flush=True)
        elif prediction.error:
            print(f"{prediction.path}: error: {prediction.error}", flush=True)
        else:
            _print_prediction(prediction, windows=args.segments)
        if args.plot and prediction.error is None:
            plot_probabilities(prediction, plots[prediction.path])
    if grouping and args.speakers != "files" and not args.json:
        print(f"normalisation: {_grouping_summary(grouping)}")
    if failed:
        print(f"{failed} of {len(paths)} file(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0


def _grouping_summary(record: dict) -> str:
    """How the inputs were grouped for normalisation (a Prediction's `normalisation`), in a line."""
    if "speakers" not in record:  # an ensemble: per member
        return "; ".join(f"{member}: {_grouping_summary(r)}" for member, r in record.items())
    parts = []
    for name, g in record["inputs"].items():
        guard = g["guard"] or {}
        note = (f"guard fired ({guard['value']:.3f} > {guard['threshold']:.3f}): one group of all inputs"
                if guard.get("fired") else "guard quiet" if guard else "")
        parts.append(f"{name}: {g['groups']} group(s) over {g['recordings']} file(s)" + (f", {note}" if note else ""))
    return f"speakers={record['speakers']}; " + "; ".join(parts)


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
            _status(args, f"recording {args.seconds:g} s ...")
            prediction = predictor.predict(listen.record(source, seconds=args.seconds, recorder=recorder),
                                           source.sample_rate)
            _print_prediction(prediction, windows=True)
            if args.plot:
                from .predict import plot_probabilities

                plot_probabilities(prediction, args.plot)
        else:
            _status(args, f"listening: the last {window:g} s every {args.hop:g} s; Ctrl-C stops")
            _listen_rolling(predictor, source, recorder, args, window)
    if args.save:
        print(f"audio saved to {args.save}")
    return 0


def _status(args, message: str) -> None:
    """A line about what a command is doing, on stderr, unless --quiet."""
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


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


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .serve.app import ServeSettings, create_app
    except ModuleNotFoundError as missing:
        raise ConfigError(f"spectro serve needs {missing.name}: pip install 'spectro-ser[serve]' (or, in a checkout "
                          "of spectro, pip install -e '.[serve]')") from None
    from .inference import load_predictor
    from .predict import expand_inputs

    token = args.token or os.environ.get("SPECTRO_TOKEN") or None
    for flag, value in (("--max-mb", args.max_mb), ("--batch-size", args.batch_size), ("--queue", args.queue)):
        if value <= 0:
            raise ConfigError(f"{flag} {value:g} must be positive")
    if token is None and not _is_loopback(args.host):
        print(f"warning: serving on {args.host} without --token: anyone who reaches this port can use the model; set "
              "SPECTRO_TOKEN (or --token) and put a TLS proxy in front", file=sys.stderr)
    predictor = load_predictor(args.model.split(","), device=args.device, batch_size=args.batch_size,
                               cache=not args.no_cache, reference=expand_inputs(args.normalise_with))
    settings = ServeSettings(token=token, max_bytes=int(args.max_mb * 2**20), cors=tuple(args.cors),
                             max_windows=args.batch_size, max_wait=args.max_wait_ms / 1000, max_requests=args.queue,
                             workers=args.workers)
    _status(args, f"serving {args.model} at http://{args.host}:{args.port}/ (API docs at /docs"
                  f"{'; a token is required' if token else ''}); Ctrl-C stops")
    uvicorn.run(create_app(predictor, settings), host=args.host, port=args.port, root_path=args.root_path,
                server_header=False, log_level="warning" if args.quiet else "info", access_log=not args.quiet)
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: only localhost is known to stay on this machine
        return host == "localhost"


def cmd_export(args) -> int:
    from .export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, format=args.format, device=args.device or "cpu")
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

    run_demo(Path(args.out), workers=args.workers, device=args.device, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectro", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(quiet=False)
    parser.add_argument("--version", action="version", version=f"spectro {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_manifest, _add_images, _add_unpack, _add_train, _add_config, _add_evaluate, _add_explore,
                _add_ensemble, _add_interpolate, _add_pseudo_label, _add_report, _add_predict, _add_serve,
                _add_listen, _add_export, _add_synth, _add_demo):
        add(sub)
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text or not action.option_strings or default is None or default is False or default == [] \
                or default == argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


def _command(sub, name: str, help: str, handler, *, progress: bool = False, device: bool | str = False):
    """A subcommand parser with the options every command shares: -v, and --quiet and --device where
    they mean something. `device` as text says what the default is instead of "auto"."""
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_HelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debugging detail")
    if progress:
        p.add_argument("--quiet", action="store_true", help="no progress bars; only warnings and errors")
    if device:
        p.add_argument("--device", default=None if isinstance(device, str) else "auto",
                       choices=["auto", "cpu", "cuda", "mps"],
                       help="where the model runs; auto picks CUDA, then Apple MPS, then the CPU"
                            + (f" (default: {device})" if isinstance(device, str) else ""))
    p.set_defaults(handler=handler, quiet=False)
    return p


def add_corpus_arguments(parser, *, flag: str = "--corpus", required: bool = False, help: str | None = None,
                         options_to=None) -> None:
    """`flag` NAME=PATH (repeatable) on `parser`, and --corpus-option on `options_to` (default: `parser`)."""
    parser.add_argument(flag, action="append", type=corpus_spec, default=[], required=required, metavar="NAME=PATH",
                        help=help or f"a corpus distribution ({', '.join(_corpus_names())}); repeatable")
    (options_to or parser).add_argument(
        "--corpus-option", action="append", default=[], metavar="NAME.OPTION=VALUE",
        help="a parser option, e.g. iemocap.merge_excited=false, folder.language=fr or folder.name=mine; repeatable")


def _add_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=_class_spec, metavar="N|LABEL,LABEL,...",
                        help="keep these classes: a numbered setup (4 = neutral, happy, sad, angry; 5 = +fear; 6 = "
                             "+disgust; 7 = +surprise; 8 = +calm) or a list such as "
                             "neutral,happy,sad,angry,fear,disgust,boredom; others are dropped and counted (default: "
                             "all)")
    parser.add_argument("--map", type=_label_map, default={}, metavar="FROM=TO,...",
                        help="relabel first, e.g. happy=positive,angry=negative,sad=negative (default: none)")


def _add_manifest(sub) -> None:
    p = _command(sub, "manifest", "list the utterances of corpora with their labels, as CSV", cmd_manifest)
    add_corpus_arguments(p, required=True)
    _add_label_arguments(p)
    p.add_argument("--out", required=True, type=Path, metavar="FILE.csv", help="the manifest to write")


def _add_images(sub) -> None:
    p = _command(sub, "images", "render recordings as 224x224x3 PNGs (or .npy matrices) in an ImageFolder tree",
                 cmd_images, progress=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, metavar="FILE.csv",
                        help="the utterances to render, from `spectro manifest` or your own CSV")
    add_corpus_arguments(source, options_to=p)
    _add_label_arguments(p)
    p.add_argument("--feature", help=f"the feature to render: {', '.join(_feature_names())} (default: mel, or the "
                                     "--config file's)")
    p.add_argument("--config", type=Path, metavar="FILE.yaml", help="feature settings (audio, spectrogram, image, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a feature setting, e.g. image.channels=grey; repeatable")
    p.add_argument("--augment", action="store_true",
                   help="render randomly augmented training copies (settings: augment.*) instead of the recordings")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the image tree to write or complete")
    p.add_argument("--workers", type=int, help="processes (default: every core)")
    p.add_argument("--verify", action="store_true",
                   help="first open every finished file of the tree and render the unreadable ones again")
    p.add_argument("--format", choices=["png", "packed"], default="png",
                   help="png: a 224x224 PNG per window (an ImageFolder tree); packed: the windows straight into the "
                        "packed store that training reads, no PNG encoded (pictures only; `spectro unpack` writes "
                        "the PNGs later)")
    p.add_argument("--shard", metavar="K/N",
                   help="render only shard K of N of the recordings (one of N machines or array tasks sharing --out); "
                        "a final run without --shard writes the manifest")


def _add_unpack(sub) -> None:
    p = _command(sub, "unpack", "write the PNGs of a tree rendered with --format packed, for people to look at",
                 cmd_unpack)
    p.add_argument("tree", type=Path, metavar="DIR", help="the image tree")


def _add_train(sub) -> None:
    p = _command(sub, "train", "fine-tune a model on image trees, as a YAML config says", cmd_train,
                 progress=True, device="the config's train.device, auto unless set")
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="the experiment (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. train.epochs=3; repeatable")
    p.add_argument("--run-name", "--run", dest="run", metavar="NAME",
                   help="run name (default: the config file's name); --run is the same, but torchrun's own parser "
                        "takes it for its --run-path, so use --run-name there")
    p.add_argument("--resume", action="store_true", help="continue the run from its last.pt")


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="inspect experiment configs", description="Inspect experiment configs.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = _command(actions, "show", "print a config resolved: defaults, extends, the file and --set", cmd_config_show)
    show.add_argument("config", type=Path, metavar="CONFIG.yaml", help="the experiment")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting; repeatable")


def _add_evaluate(sub) -> None:
    p = _command(sub, "evaluate", "score a checkpoint on test corpora; write report.md/json, plots and predictions",
                 cmd_evaluate, progress=True, device=True)
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT",
                   help="a checkpoint (full or slim), several (their probabilities averaged) or an ensemble file")
    add_corpus_arguments(p, help="a corpus to render with the checkpoint's feature settings and score; repeatable")
    p.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                   help="an existing image tree made with the checkpoint's feature settings; repeatable")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the report goes")
    p.add_argument("--workers", type=int, help="processes for rendering (default: every core)")
    p.add_argument("--adabn", action="store_true",
                   help="re-estimate BatchNorm statistics on each test corpus's unlabelled audio first (transductive; "
                        "the report says so)")
    p.add_argument("--present-classes", action="store_true",
                   help="decide among the classes each test corpus has (probabilities renormalised over them); the "
                        "report lists the classes left out of the decision")
    p.add_argument("--set", action="append", default=[], metavar="normalise.KEY=VALUE",
                   help="render the test corpora with this normalisation setting instead of the checkpoint's (e.g. "
                        "normalise.unknown_speakers=encoder, normalise.guard=none); repeatable; recorded in the report")


def _add_explore(sub) -> None:
    p = _command(sub, "explore", "map corpora's embeddings to 2-D and measure how separable the corpora are",
                 cmd_explore, progress=True, device=True)
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a checkpoint of a single-input ImageNet CNN")
    add_corpus_arguments(p, help="a corpus to render with the checkpoint's feature settings; repeatable")
    p.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                   help="an existing image tree made with the checkpoint's feature settings; repeatable")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="where embedding.csv, by_corpus.png, by_emotion.png and separability.json/png go")
    p.add_argument("--method", choices=["tsne", "umap", "pca"], default="tsne",
                   help="the map to 2-D: t-SNE (scikit-learn), UMAP (needs umap-learn) or the first two principal "
                        "components")
    p.add_argument("--folds", type=int, default=5, help="speaker-grouped folds of the domain classifier")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes the map (UMAP's layout; t-SNE starts from the principal components)")
    p.add_argument("--workers", type=int, help="processes for rendering (default: every core)")


def _add_report(sub) -> None:
    p = _command(sub, "report", "tables of training runs and evaluations, beside the published numbers", cmd_report)
    p.add_argument("paths", nargs="+", metavar="RUN_OR_REPORT_DIR",
                   help="checkpoints/<run> folders (summary.json) or evaluate --out folders (report.json)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="where comparison.md and the CSVs go")


def _add_predict(sub) -> None:
    p = _command(sub, "predict", "emotion probabilities for new recordings", cmd_predict, progress=True, device=True)
    p.add_argument("checkpoint", metavar="CHECKPOINT[,CHECKPOINT...]",
                   help="a checkpoint (full or slim), several separated by commas (probabilities averaged), or an "
                        "ensemble file")
    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_FOLDER", help="audio files, or folders searched for them")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--segments", action="store_true", help="also each window's result (times in the file's clock)")
    p.add_argument("--plot", type=Path, metavar="DIR", help="save a probability bar chart per file (default: none)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="windows scored at once; larger is faster on a GPU, smaller needs less memory")
    p.add_argument("--no-cache", action="store_true",
                   help="build the model from the checkpoint instead of reading its cached traced copy")
    p.add_argument("--normalise-with", nargs="+", default=[], metavar="AUDIO_OR_FOLDER",
                   help="for a model trained with speaker or corpus normalisation: recordings of the same speaker or "
                        "setting whose pooled statistics normalise every input (default: each recording's own)")
    p.add_argument("--speakers", choices=("files", "one", "pseudo"), default="files",
                   help="for a model trained with speaker or corpus normalisation, who the inputs are: independent "
                        "files, each normalised with its own statistics (default); one speaker or source (their "
                        "pooled statistics); or unknown speakers, grouped into pseudo-speakers by a speaker encoder "
                        "and guarded, as evaluation groups a corpus without speaker labels (needs the speakers "
                        "extra). one and pseudo read every input first; the JSON output's normalisation says what "
                        "was done")


def _add_serve(sub) -> None:
    p = _command(sub, "serve", "an HTTP API and a web page for emotion recognition (needs the serve extra)", cmd_serve,
                 progress=True, device=True)
    p.add_argument("model", metavar="CHECKPOINT[,CHECKPOINT...]",
                   help="a checkpoint (full or slim), several separated by commas (probabilities averaged), or an "
                        "ensemble file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 opens the port to the network (give a token then)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN on every endpoint but /healthz (default: the "
                                   "SPECTRO_TOKEN environment variable, which other users cannot read in ps)")
    p.add_argument("--max-mb", type=float, default=20.0, help="largest request body in MB; more gets 413")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="let pages from this origin (https://app.example.org) call the API; repeatable (default: no "
                        "CORS)")
    p.add_argument("--root-path", default="", metavar="PREFIX",
                   help="the path a reverse proxy serves this under (/emotion), for the links of /docs")
    p.add_argument("--batch-size", type=int, default=32,
                   help="most windows in one forward pass; concurrent requests share passes")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a pass waits at most for requests still preparing their windows")
    p.add_argument("--queue", type=int, default=64,
                   help="recordings in hand at once; one more gets 503 with Retry-After")
    p.add_argument("--workers", type=int, help="threads that decode uploads and draw pictures (default: every core)")
    p.add_argument("--no-cache", action="store_true",
                   help="build the model from the checkpoint instead of reading its cached traced copy")
    p.add_argument("--normalise-with", nargs="+", default=[], metavar="AUDIO_OR_FOLDER",
                   help="for a model trained with speaker or corpus normalisation: recordings whose pooled statistics "
                        "normalise every request (default: each recording's own)")


def _add_ensemble(sub) -> None:
    p = _command(sub, "ensemble", "choose ensemble weights on validation recordings and write the ensemble file",
                 cmd_ensemble, progress=True, device=True)
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT", help="the members, of any family")
    add_corpus_arguments(p, flag="--validation", required=True,
                         help="a corpus holding validation speakers (rendered with each member's settings); repeatable")
    p.add_argument("--speakers", type=lambda t: [s.strip() for s in t.split(",") if s.strip()], default=[],
                   metavar="S1,S2,...", help="validation speakers (default: those every member held out)")
    p.add_argument("--step", type=float, default=0.1, help="the weight grid's step")
    p.add_argument("--apply-to", nargs="+", type=Path, default=[], metavar="CHECKPOINT",
                   help="the members to write, one per CHECKPOINT, which are then stand-ins that choose the "
                        "weights (e.g. the same recipes trained with a training corpus held out)")
    p.add_argument("--adabn", action="store_true",
                   help="choose the weights with BatchNorm statistics re-estimated on the validation corpus's "
                        "unlabelled audio, for an ensemble to be evaluated with --adabn")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.json", help="the ensemble file to write")
    p.add_argument("--workers", type=int, help="processes for rendering (default: every core)")


def _add_interpolate(sub) -> None:
    p = _command(sub, "interpolate", "WiSE-FT: weights between a run's LP model and its fine-tuned one, alpha given or "
                 "chosen on validation recordings", cmd_interpolate, progress=True, device=True)
    p.add_argument("checkpoint", type=Path, metavar="FT.pt", help="a fine-tuned checkpoint of a train.lp_ft run")
    p.add_argument("--lp", type=Path, help="its LP model (default: lp.pt beside it)")
    p.add_argument("--alpha", type=float,
                   help="0: the LP model, 1: the fine-tuned one (default: chosen on --validation)")
    add_corpus_arguments(p, flag="--validation",
                         help="a corpus holding the checkpoint's validation speakers, on which alpha is chosen")
    p.add_argument("--step", type=float, default=0.1, help="the grid of alphas tried: 0, step, ..., 1")
    p.add_argument("--bn", nargs="+", choices=["interpolate", "reestimate"], default=["interpolate"],
                   help="BatchNorm statistics interpolated too, or re-estimated on the model's own training "
                        "recordings; with --validation, each one given is tried")
    p.add_argument("--apply-to", type=Path, metavar="FINAL_FT.pt",
                   help="write the interpolation of this checkpoint instead, with the alpha chosen for the first "
                        "(a stand-in: the same recipe trained with a training corpus held out)")
    p.add_argument("--apply-lp", type=Path, help="the LP model of --apply-to (default: lp.pt beside it)")
    p.add_argument("--workers", type=int, help="processes for rendering (default: every core)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.pt", help="the checkpoint to write")


def _add_pseudo_label(sub) -> None:
    p = _command(sub, "pseudo-label", "confident predictions on an unlabelled corpus, class-balanced, as training "
                 "labels for self-training (data.pseudo); transductive", cmd_pseudo_label, progress=True, device=True)
    p.add_argument("models", nargs="+", type=Path, metavar="CHECKPOINT",
                   help="a checkpoint, several (probabilities averaged) or an ensemble file")
    add_corpus_arguments(p, help="an unlabelled corpus, rendered with each member's settings (its labels are not "
                                 "read); repeatable")
    p.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                   help="an existing tree made with the (single) model's settings; repeatable")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--threshold", type=float, help="the top probability a recording must reach (default: 0.8)")
    chosen.add_argument("--fraction", type=float,
                        help="instead, keep the most confident FRACTION of the recordings predicted as each class "
                             "(class-balanced self-training; for a teacher whose probabilities are not calibrated)")
    p.add_argument("--unbalanced", action="store_true",
                   help="keep every confident recording, not the same number per class")
    p.add_argument("--adabn", action="store_true",
                   help="re-estimate BatchNorm statistics on the unlabelled corpus first (for an ensemble chosen so)")
    p.add_argument("--workers", type=int, help="processes for rendering (default: every core)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.csv", help="the labels to write (and FILE.json)")


def _add_listen(sub) -> None:
    p = _command(sub, "listen", "live emotion from a microphone (needs the listen extra: sounddevice)", cmd_listen,
                 progress=True, device=True)
    p.add_argument("checkpoint", type=Path, nargs="?", metavar="CHECKPOINT.pt", help="a checkpoint (full or slim)")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between readings of the rolling window")
    p.add_argument("--seconds", type=float, metavar="N", help="record N seconds, then score the recording once")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="keep a confidence chart: refreshed every hop while listening, final at the end")
    p.add_argument("--save", type=Path, metavar="FILE.wav", help="keep the audio heard")
    p.add_argument("--gate-db", type=float, default=-45.0,
                   help="windows quieter than this RMS level (dBFS) are reported as quiet, not scored")
    p.add_argument("--input", metavar="DEVICE", help="audio input device, by index or name (default: the system's)")
    p.add_argument("--list-inputs", action="store_true", help="list the audio input devices and exit")


def _add_export(sub) -> None:
    p = _command(sub, "export", "a checkpoint as a slim checkpoint, an ONNX graph or a TorchScript module", cmd_export,
                 progress=True, device="cpu, where every exported graph runs")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.pt", help="the checkpoint to export")
    p.add_argument("--format", required=True, choices=["slim", "onnx", "torchscript"],
                   help="slim: weights and feature settings only (predict, evaluate and Predictor read it); "
                        "onnx, torchscript: a graph from feature arrays to class probabilities per window")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write")


def _add_synth(sub) -> None:
    p = _command(sub, "synth", "write the built-in synthetic emotional-speech corpus", cmd_synth)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the corpus goes")
    p.add_argument("--speakers", type=int, default=4, help="speakers per language")
    p.add_argument("--utterances", type=int, default=8, help="utterances per speaker and emotion")
    p.add_argument("--seed", type=int, default=0, help="the corpus is fixed by this seed")


def _add_demo(sub) -> None:
    p = _command(sub, "demo", "the whole pipeline on the built-in synthetic corpus", cmd_demo, progress=True,
                 device=True)
    p.add_argument("--out", type=Path, default=Path("checkpoints/demo"), metavar="DIR",
                   help="where the corpus, images, checkpoints and logs go")
    p.add_argument("--workers", type=int, help="processes for image generation (default: every core)")


def main(argv: list[str] | None = None) -> int:
    # File names that are not valid UTF-8 are printed byte for byte, as ls prints them, never a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    # spectro's own messages at INFO (DEBUG with -v, WARNING with --quiet); other libraries' only when they warn
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    keep_freed_memory()
    try:
        return args.handler(args)
    except SpectroError as error:
        print(f"spectro {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # the machine, not the input: a full disk, a read-only or vanished folder
        where = f"{error.filename}: " if error.filename else ""
        print(f"spectro {args.command}: error: {where}{error.strerror or error}; fix this and run the same command "
              "again (finished work is kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # a stopped training run says itself how to continue
        hint = RESUME_HINTS.get(args.command, RESUME_HINTS["images"])
        print(f"spectro {args.command}: {str(stop) or 'interrupted; ' + hint}", file=sys.stderr)
        return 130


RESUME_HINTS = {
    "train": "continue from the last saved state with the same command and --resume",
    "images": "run the same command again: finished work is kept and not redone",
    "evaluate": "run the same command again: the images rendered so far are kept",
}


if __name__ == "__main__":
    sys.exit(main())
