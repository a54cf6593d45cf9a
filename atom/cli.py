"""The `atom` command. Only argparse loads at start-up; each subcommand imports what it needs when it runs.

This is the one place that dispatches upward into recipes/ and exporters/ (by module name, lazily)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from atom import PROJECT_ROOT

DATASETS_DIR = Path(os.environ.get("ATOM_DATASETS", PROJECT_ROOT / "datasets"))


def _print_summary(version, report, new: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from atom.data.report import PROBLEM_KINDS

    card = version.card
    console = Console()
    splits = Table(title=f"dataset {card['name']} version {card['version']}" + ("" if new else " (unchanged)"))
    splits.add_column("split")
    splits.add_column("images", justify="right")
    splits.add_column("boxes", justify="right")
    for c in card["classes"]:
        splits.add_column(c, justify="right")
    for s, info in card["splits"].items():
        splits.add_row(s, str(info["images"]), str(info["boxes"]), *map(str, info["boxes_per_class"].values()))
    console.print(splits)
    if report.problems:
        problems = Table(title="problems by kind")
        problems.add_column("kind")
        problems.add_column("count", justify="right")
        problems.add_column("what happens")
        for kind, count in report.counts().items():
            problems.add_row(kind, str(count), PROBLEM_KINDS[kind])
        console.print(problems)
        for p in report.problems[:20]:
            console.print(f"  {p.kind}: {p.file}: {p.reason}", soft_wrap=True, highlight=False)
        if len(report.problems) > 20:
            console.print(f"  ... {len(report.problems) - 20} more in report.json")
    else:
        console.print("no problems found")
    console.print(f"fingerprint {card['fingerprint']}\nwritten to {version.root} (report: report.json)")


def cmd_data_import(args) -> int:
    from atom.data import remote
    from atom.data.formats import read_source
    from atom.data.version import DatasetError, write_version

    try:
        source = read_source(args.format, Path(args.path), images_root=args.images_root)
        classes = args.classes.split(",") if args.classes else None
        ratios = tuple(float(x) for x in args.split.split(","))
        if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6:
            raise DatasetError(f"--split {args.split!r}: give three ratios (train,val,test) that sum to 1")
        version, new = write_version(source, Path(args.datasets), args.name, classes, ratios)
        tracked = None if args.no_dvc else remote.track(version)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_summary(version, source.report, new)
    if tracked:
        print(f"tracked by DVC: {tracked} (commit it; `atom data push` uploads the version)")
    return 0


def cmd_data_sample(args) -> int:
    from atom.data.synthetic import make_sample

    print(make_sample(Path(args.out), args.images, args.seed))
    return 0


def _redactor(args):
    from atom import tracking
    from atom.privacy import PrivacyPolicy, Redactor

    plates = None
    if args.plates_model:
        tracking.configure(args.output_dir)
        plates = tracking.load_detector(tracking.resolve_model(args.plates_model))
    policy = PrivacyPolicy(face_threshold=args.face_threshold, plates_model=args.plates_model,
                           plate_classes=tuple(args.plate_classes.split(",")), mode=args.redact_mode)
    return Redactor(policy, plates)


def cmd_data_frames(args) -> int:
    from atom.data.frames import CONTACT_SHEET, Sampling, extract, parse_duration
    from atom.errors import AtomError

    try:
        every = parse_duration(args.every) if args.every else (None if args.count else 2.0)
        sampling = Sampling(every_s=every, count=args.count, min_change=args.min_change)
        redactor = _redactor(args) if args.redact else None
        results = extract(Path(args.path), Path(args.out), sampling, args.camera, not args.no_progress, redactor)
    except AtomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.source}: {r.status}, {r.decoded} frames decoded, {r.sampled} sampled, {r.kept} kept, "
              f"{r.duplicates} near-duplicates dropped")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    out = Path(args.out)
    print(f"{sum(r.kept for r in results)} frames in {out}: manifest {out / 'frames.jsonl'}, report "
          f"{out / 'frames-report.json'}, contact sheet {out / CONTACT_SHEET}")
    return 1 if failed else 0


def cmd_data_export(args) -> int:
    from atom.data.export import export_version
    from atom.data.version import open_version
    from atom.errors import AtomError

    try:
        version = open_version(Path(args.datasets), *_name_at(args.dataset))
        redactor = None if args.no_redact else _redactor(args)
        card = export_version(version, Path(args.out), redactor)
    except AtomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {version.name}@{version.root.name} to {args.out}: {card['exported']['images']} images, "
          f"{card['exported']['redacted_boxes']} regions redacted")
    return 0


def cmd_data_list(args) -> int:
    root = Path(args.datasets)
    for pointer in sorted(root.glob("*/latest")):
        versions = sorted(p.name for p in pointer.parent.iterdir() if (p / "card.json").exists())
        print(f"{pointer.parent.name}: latest {pointer.read_text().strip()} (versions: {', '.join(versions)})")
    return 0


def cmd_data_show(args) -> int:
    from atom.data.version import DatasetError, open_version

    name, _, version = args.dataset.partition("@")
    try:
        print(json.dumps(open_version(Path(args.datasets), name, version or "latest").card, indent=1))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_data_push(args) -> int:
    from atom.data import remote
    from atom.data.version import DatasetError, open_version

    try:
        versions = [open_version(Path(args.datasets), *_name_at(d)) for d in args.datasets_to_push]
        remote.push(versions, args.remote)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for v in versions:
        print(f"pushed {v.name}@{v.root.name} ({remote.dvc_file(v)})")
    return 0


def cmd_data_pull(args) -> int:
    from atom import tracking
    from atom.data import remote
    from atom.errors import AtomError

    try:
        if args.model:
            tracking.configure(args.output_dir)
            tags = tracking.resolve_model(args.model).tags
            if "dataset.version" not in tags:
                raise AtomError(f"model {args.model} has no dataset lineage tags")
            name, version_id = tags["dataset.name"], tags["dataset.version"]
            extra = {"dvc_hash": tags.get("dataset.dvc_hash"), "fingerprint": tags.get("dataset.fingerprint")}
        elif args.dataset:
            name, version_id = _name_at(args.dataset)
            extra = {}
        else:
            raise AtomError("give NAME@VERSION or --model NAME@ALIAS")
        version = remote.pull(Path(args.datasets), name, version_id, args.remote, **extra)
    except AtomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"restored {version.name}@{version.root.name} at {version.root} (fingerprint {version.fingerprint}, "
          f"every image checked)")
    return 0


def _name_at(text: str) -> tuple[str, str]:
    name, _, version = text.partition("@")
    return name, version or "latest"


def cmd_models(args) -> int:
    from atom import registry, tracking
    from atom.errors import AtomError

    tracking.configure(args.output_dir)
    try:
        if args.models_command == "list":
            rows = registry.list_versions(args.name)
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                _print_versions(rows, tracking.tracking_uri(args.output_dir))
        elif args.models_command == "show":
            print(json.dumps(registry.show(args.model), indent=1))
        elif args.models_command == "promote":
            print(registry.promote(args.name, args.version, args.alias, args.force))
        else:
            from exporters import FORMATS

            if args.format not in FORMATS:
                raise AtomError(f"unknown export format {args.format!r}; choose one of {sorted(FORMATS)}")
            print(registry.pull(args.model, args.format, Path(args.to)))
    except AtomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _print_versions(rows: list[dict], uri: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"registered detectors at {uri.split('@')[-1]}")
    for column in ("model", "version", "aliases", "held-out", "dataset", "base model", "bundles", "commit"):
        table.add_column(column)
    for r in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["metrics"].items()) if k.endswith("AP50"))
        dataset = f"{r['dataset'].get('name', '?')}/{r['dataset'].get('fingerprint', '?')[:12]}"
        table.add_row(r["name"], r["version"], ", ".join(r["aliases"]), metrics, dataset, r["base_model"] or "",
                      ", ".join(r["bundles"]), (r["git_commit"] or "")[:10])
    Console().print(table)


# The commands that are Hydra applications: name -> (recipes module, function, root config).
RECIPES = {
    "train": ("train", "train", "train"),
    "evaluate": ("evaluate", "evaluate", "evaluate"),
    "export": ("export", "export", "export"),
    "adapt": ("adapt", "adapt", "adapt"),
    **{f"label {name}": ("label", function, "label") for name, function in [
        ("init", "init"), ("import", "import_labels"), ("pull", "pull"), ("predict", "predict"),
        ("queue", "queue"), ("serve", "serve"), ("feedback", "feedback")]},
}


def _recipe(command: str, argv: list[str]) -> int:
    """Run recipes.<module>.<function> as a Hydra application (recipes/entry.py) with argv."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import importlib

    from recipes import entry

    module, function, config = RECIPES[command]
    if command == "label feedback" and argv and "=" not in argv[0] and not argv[0].startswith("-"):
        # `atom label feedback FILE scene=...`: the file as a word, as the other file-reading commands take it
        argv = [f"feedback.file={Path(argv[0]).resolve()}", *argv[1:]]
    return entry.run(command, config, getattr(importlib.import_module(f"recipes.{module}"), function), argv)


def cmd_demo(args) -> int:
    import subprocess

    import yaml

    # The stages call `atom`: put this environment's scripts first on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    rc = subprocess.call([sys.executable, "-m", "dvc", "repro"], cwd=PROJECT_ROOT, env=env)
    if rc:
        return rc
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    runs = PROJECT_ROOT / params["paths"]["output_dir"] / "runs"
    base = json.loads((runs / params["run_name"] / "metrics.json").read_text())
    adapted = json.loads((runs / params["adapt"]["run_name"] / "metrics.json").read_text())
    served = json.loads((PROJECT_ROOT / params["output"] / "metrics.json").read_text())
    model = json.loads((PROJECT_ROOT / params["model"]).read_text())
    bundle = PROJECT_ROOT / params["paths"]["bundles"] / model["name"] / f"v{model['version']}" / params["runtime"]
    ap = {c: f"{v['AP50']:.3f}" for c, v in adapted["per_class"].items()}
    print(f"\nbase detector ({', '.join(base['per_class'])}): {base['split']} mAP50 {base['mAP50']:.3f}")
    print(f"adapted with {params['adapt']['shots']} shots per new class: {adapted['split']} mAP50 "
          f"{adapted['mAP50']:.3f}, AP50 per class {ap}; the exported bundle through atom.runtime: mAP50 "
          f"{served['mAP50']:.3f}")
    print(f"MLflow model: {model['name']} version {model['version']}  ({model['uri']})")
    print(f"bundle: {bundle}" + ("" if (bundle / "manifest.json").exists() else "  (missing!)"))
    print(f"browse runs: mlflow ui --backend-store-uri sqlite:///{runs.parent / 'mlflow.db'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atom", description="ATOM: city-scene detector production platform",
                                epilog="atom -v COMMAND ...: show the libraries' own log lines and notices too")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset versions: import, list, show, push, pull, make the synthetic sample")
    dsub = data.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import", help="validate a labeled source and write it as a dataset version")
    imp.add_argument("path", help="dataset folder or file (YOLO data.yaml folder, VOC root, COCO JSON, LS export)")
    imp.add_argument("--format", required=True, choices=["yolo", "voc", "coco", "labelstudio"])
    imp.add_argument("--name", required=True, help="dataset name (versions go to DATASETS/NAME/)")
    imp.add_argument("--classes", help="comma-separated class list; labels outside it are reported and dropped")
    imp.add_argument("--images-root", help="Label Studio local-files root that image URLs resolve against")
    imp.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test ratios when the source has no splits")
    imp.add_argument("--datasets", default=str(DATASETS_DIR), help="where dataset versions live")
    imp.add_argument("--no-dvc", action="store_true",
                     help="do not track the version with DVC (e.g. inside a dvc.yaml stage that outputs it)")
    imp.set_defaults(func=cmd_data_import)
    smp = dsub.add_parser("sample", help="write the synthetic street-scene sample as a Label Studio export")
    smp.add_argument("out", nargs="?", default=str(PROJECT_ROOT / "datasets" / "sample-src"))
    smp.add_argument("--images", type=int, default=240)
    smp.add_argument("--seed", type=int, default=0)
    smp.set_defaults(func=cmd_data_sample)
    redaction = argparse.ArgumentParser(add_help=False)  # what `frames --redact` and `export` blur (atom/privacy.py)
    redaction.add_argument("--redact-mode", default="blur", choices=["blur", "pixelate"])
    redaction.add_argument("--face-threshold", type=float, default=0.2, help="CenterFace score to redact at (0.2)")
    redaction.add_argument("--plates-model", help="a registered ATOM model (NAME@ALIAS) whose --plate-classes "
                           "boxes are licence plates to redact")
    redaction.add_argument("--plate-classes", default="plate", help="comma-separated class names of --plates-model")
    redaction.add_argument("--output-dir", default=str(PROJECT_ROOT / "outputs"),
                           help="the embedded MLflow store's folder, for --plates-model")
    frm = dsub.add_parser("frames", parents=[redaction], help="sample frames from camera footage, near-duplicates dropped, with a "
                          "manifest of camera, source and time (atom/data/frames.py)")
    frm.add_argument("path", metavar="VIDEO_OR_FOLDER", help="a video, or a folder of them (one subfolder per camera)")
    frm.add_argument("--out", required=True, help="where the frames, frames.jsonl and the report go")
    every = frm.add_mutually_exclusive_group()
    every.add_argument("--every", default=None, help="time between sampled frames: 2s (default), 500ms, 1m")
    every.add_argument("--count", type=int, help="about this many frames spread over each video instead")
    frm.add_argument("--min-change", type=float, default=0.01,
                     help="percent of the frame that must differ from every frame kept for the camera (default "
                          "0.01: a distant pedestrian moves ~0.02; 0 drops only frames identical to a kept one)")
    frm.add_argument("--camera", help="camera id for every video (default: subfolder or file name)")
    frm.add_argument("--redact", action="store_true",
                     help="the frames leave the trusted zone: blur faces (CenterFace) and, with --plates-model, "
                          "licence plates before writing (atom/privacy.py)")
    frm.add_argument("--no-progress", action="store_true")
    frm.set_defaults(func=cmd_data_frames)
    exp = dsub.add_parser("export", parents=[redaction], help="write a version out of the trusted zone (COCO "
                          "JSON + images), faces and plates redacted by default")
    exp.add_argument("dataset", metavar="NAME[@VERSION]")
    exp.add_argument("--out", required=True, help="a new folder")
    exp.add_argument("--no-redact", action="store_true", help="images as they are (the export stays inside the zone)")
    exp.add_argument("--datasets", default=str(DATASETS_DIR))
    exp.set_defaults(func=cmd_data_export)
    lst = dsub.add_parser("list", help="list datasets and their versions")
    lst.add_argument("--datasets", default=str(DATASETS_DIR))
    lst.set_defaults(func=cmd_data_list)
    show = dsub.add_parser("show", help="print a dataset version's card (NAME or NAME@VERSION)")
    show.add_argument("dataset")
    show.add_argument("--datasets", default=str(DATASETS_DIR))
    show.set_defaults(func=cmd_data_show)
    push = dsub.add_parser("push", help="upload DVC-tracked versions (NAME or NAME@VERSION) to the DVC remote")
    push.add_argument("datasets_to_push", nargs="+", metavar="NAME[@VERSION]")
    push.add_argument("-r", "--remote", help="a DVC remote name (default: the repository's default remote)")
    push.add_argument("--datasets", default=str(DATASETS_DIR))
    push.set_defaults(func=cmd_data_push)
    dpull = dsub.add_parser("pull", help="restore a version from the DVC remote, every image checked: NAME@VERSION, "
                            "or the data a registered model was trained on (--model NAME@ALIAS)")
    dpull.add_argument("dataset", nargs="?", metavar="NAME@VERSION")
    dpull.add_argument("--model", help="a registered model (NAME@ALIAS or NAME/VERSION): restore its training data")
    dpull.add_argument("-r", "--remote", help="a DVC remote name (default: the repository's default remote)")
    dpull.add_argument("--datasets", default=str(DATASETS_DIR))
    dpull.add_argument("--output-dir", default=str(PROJECT_ROOT / "outputs"),
                       help="the embedded MLflow store's folder (MLFLOW_TRACKING_URI, when set, names a server)")
    dpull.set_defaults(func=cmd_data_pull)

    # Listed here for `atom --help`; main() hands them to Hydra before argparse sees them.
    for name, text in [
        ("train", "train, evaluate and register a detector: experiment=NAME, detector=lite0|lite1|lite2, ..."),
        ("evaluate", "evaluate a registered model: model=NAME@ALIAS"),
        ("export", "export a registered model to a verified bundle: model=NAME@ALIAS [export=FORMAT]"),
        ("adapt", "few-shot: adapt a registered detector to a new scene's classes: "
         "model=NAME@ALIAS data=SCENE shots=K [mode=novel] [export=onnx]"),
    ]:
        sub.add_parser(name, help=f"{text} (a Hydra application: `atom {name} --help` lists its config groups)")

    label = sub.add_parser("label", help="Label Studio: scene projects, pre-annotations, pulls into dataset versions")
    lsub = label.add_subparsers(dest="label_command", required=True)
    for name, text in [
        ("init", "create or update the scene's project, storage and tasks (idempotent): scene=NAME"),
        ("import", "existing labels as pre-annotations: scene=NAME source.format=F source.path=P"),
        ("pull", "write the scene's submitted annotations as a new dataset version: scene=NAME"),
        ("predict", "push a registered model's predictions: scene=NAME model=NAME@ALIAS"),
        ("queue", "order unlabeled tasks by usefulness for annotators: scene=NAME model=NAME@ALIAS"),
        ("serve", "ML backend for interactive predictions (needs ATOM_ML_BACKEND_TOKEN): model=NAME@ALIAS"),
        ("feedback", "serving feedback as tasks with the model's predictions, corrected: FILE scene=NAME"),
    ]:
        lsub.add_parser(name, help=f"{text} (a Hydra application; the server comes from LABEL_STUDIO_URL and "
                        "LABEL_STUDIO_API_KEY)")

    models = sub.add_parser("models", help="registered detectors: list, show, promote an alias, pull a bundle")
    msub = models.add_subparsers(dest="models_command", required=True)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--output-dir", default=str(PROJECT_ROOT / "outputs"),
                       help="the embedded MLflow store's folder (MLFLOW_TRACKING_URI, when set, names a server)")
    mlist = msub.add_parser("list", parents=[store], help="versions with aliases, held-out metrics, dataset, "
                            "base model and bundles")
    mlist.add_argument("name", nargs="?", help="only this registered model")
    mlist.add_argument("--json", action="store_true")
    mshow = msub.add_parser("show", parents=[store], help="one version (NAME@ALIAS or NAME/VERSION) as JSON")
    mshow.add_argument("model")
    promote = msub.add_parser("promote", parents=[store], help="point an alias at a version: refused without a "
                              "verified bundle or with a lower held-out mAP50 than the alias's holder")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="production")
    promote.add_argument("--force", action="store_true", help="promote despite the checks (they are printed)")
    pull = msub.add_parser("pull", parents=[store], help="download a version's bundle, every file checked against "
                           "the manifest's sha256")
    pull.add_argument("model", help="NAME@ALIAS or NAME/VERSION")
    pull.add_argument("--format", default="onnx")
    pull.add_argument("--to", required=True, help="the folder to write the bundle to (new, or a bundle)")
    for parser in (mlist, mshow, promote, pull):
        parser.set_defaults(func=cmd_models)

    demo = sub.add_parser("demo", help="run the sample pipeline (dvc repro: prepare, train, evaluate, export)")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-v"], ["--verbose"]):  # libraries' own log lines and notices too (atom/logs.py)
        os.environ["ATOM_VERBOSE"] = "1"
        argv = argv[1:]
    for words in (2, 1):  # `atom label pull ...`, `atom train ...`: everything after the command goes to Hydra
        command = " ".join(argv[:words])
        if len(argv) >= words and command in RECIPES:
            return _recipe(command, argv[words:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
