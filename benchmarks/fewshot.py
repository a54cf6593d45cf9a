"""Seeded K-shot benchmark of `atom adapt` on ../shared/datasets (the few-shot detection protocol).

For each K and seed: K images per novel class are drawn from the train split, the base detector (trained on the
train split with the novel classes' boxes removed) is adapted, and the result is scored on val+test. Printed per
variant and K: mean ± std over seeds of nAP50 (novel classes) and bAP50 (base classes), and the wall time of one
adaptation. References: the base detector before adaptation, and the same detector trained on the full train
split with every class (full data). Every run and reference is recorded in benchmarks/results/fewshot.jsonl as it
finishes (benchmarks/history.py); the table covers the recorded runs of the current commit (or of --commit).

    .venv/bin/python benchmarks/fewshot.py vehicles                       # K 1 5 10 30, 5 seeds, main variants
    .venv/bin/python benchmarks/fewshot.py bccd --shots 10 --seeds 3 --variants generalized unfreeze mosaic
    .venv/bin/python benchmarks/fewshot.py vehicles --base atom-vehicles-base@candidate --full atom-vehicles-full/1
    .venv/bin/python benchmarks/fewshot.py vehicles --base ... --full ... --shots 10 --first-seed 5 --seeds 2
    .venv/bin/python benchmarks/fewshot.py vehicles --base ... --full ... --report [--commit 08354d0]
    .venv/bin/python benchmarks/fewshot.py vehicles --base ... --full ... --override fewshot.steps_per_sqrt_image=40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atom import PROJECT_ROOT  # noqa: E402
from benchmarks import history, shared  # noqa: E402

DATASETS = {  # novel classes, base-training experiment (conf/experiment/); the others are base classes
    "vehicles": {"novel": ["Motorcycle", "Ambulance"], "experiment": "vehicles_base"},
    "bccd": {"novel": ["Platelets"], "experiment": "bccd_base"},
    "street": {"novel": ["biker", "cyclist"], "experiment": "street_base"},
}
VARIANTS = {  # name -> adapt overrides; the first two are the protocol's, the rest measure the recipe's choices
    "generalized": [],  # the default recipe: base + novel classes
    # reference: the plain fine-tune of the same shots from ImageNet weights (conf/fewshot/finetune.yaml): no base
    # detector, no base data, the backbone trained too
    "plain": ["mode=novel", "fewshot=finetune"],
    # the default recipe's frozen ImageNet backbone without the base (the reference before 'plain')
    "imagenet": ["mode=novel", "fewshot.negatives=0", "fewshot.head_init=fresh"],
    "novel": ["mode=novel"],  # the default recipe keeping only the novel classes (one backbone at inference)
    "no-negatives": ["fewshot.negatives=0"],  # without the base data's boxes as known background
    "fresh-head": ["fewshot.head_init=fresh"],  # the new head's FPN, towers and box regression start random
    "detector": ["fewshot.transfer=detector"],  # the novel head starts from the base detector (TFA-style)
    "novel-detector": ["mode=novel", "fewshot.transfer=detector"],
    "cosine": ["fewshot.classifier=cosine"],
    "unfreeze": ["fewshot.unfreeze_backbone=true"],
    "light-aug": ["fewshot.policy=light"],
    "mosaic": ["fewshot.mosaic=0.5"],
    "copy-paste": ["fewshot.copy_paste=0.5"],
}
EVAL_SPLIT = "val+test"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 30])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="add seeds to earlier runs of the same commit")
    ap.add_argument("--report", action="store_true", help="only print the table of this commit's logged runs")
    ap.add_argument("--commit", help="the commit (a prefix) whose recorded runs the table shows (default: this one)")
    ap.add_argument("--variants", nargs="+", default=["generalized", "plain"], choices=sorted(VARIANTS))
    ap.add_argument("--base", help="a registered base model to reuse (default: train it)")
    ap.add_argument("--full", help="a registered full-data model to reuse (default: train it; 'skip': none)")
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "fewshot"))
    ap.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra adapt override for every run (repeatable); the table covers runs with the same")
    args = ap.parse_args()
    if not shared.available(args.dataset):
        print(f"skipped: {shared.SHARED / args.dataset} not found (the benchmark needs it)")
        return 0

    from atom import tracking
    from atom.evaluation import evaluate
    from omegaconf import OmegaConf

    from recipes import compose
    from recipes.adapt import adapt
    from recipes.train import train

    setup = DATASETS[args.dataset]
    out = Path(args.output)
    common = [f"paths.datasets={out / 'datasets'}", f"paths.output_dir={out}"]
    version = shared.import_shared(args.dataset, out / "datasets")
    tracking.configure(out)

    def reference(ref: str | None, name: str, extra: list[str]) -> str:
        if ref:
            return ref
        t = time.perf_counter()
        result = train(compose("train", [f"experiment={setup['experiment']}", *common, "callbacks.rich_progress=false",
                                         f"run_name={name}", f"tracking.model_name={name}", *extra]))
        print(f"trained {name}: {(time.perf_counter() - t) / 60:.1f} min")
        return f"{result['model_name']}/{result['model_version']}"

    base_ref = reference(args.base, f"atom-{args.dataset}-base", [])
    full_ref = None if args.full == "skip" else reference(args.full, f"atom-{args.dataset}-full", ["data.classes=null"])
    refs = {}  # a reference model's AP50 per class, evaluated once and recorded in the history
    recorded = history.load("fewshot")
    for label, ref in [("base", base_ref)] + ([("full", full_ref)] if full_ref else []):
        model = tracking.resolve_model(ref)
        key = {"dataset": args.dataset, "reference": label, "model": model.uri, "run_id": model.run_id,
               "split": EVAL_SPLIT, "fingerprint": version.fingerprint}
        row = next((r for r in recorded if r["setup"] == key), None)
        if row is None:
            detector = tracking.load_detector(model)
            metrics = evaluate(detector, detector.spec, version, EVAL_SPLIT)[0]
            row = history.record("fewshot", key, {f"AP50_{c}": round(v["AP50"], 4)
                                                    for c, v in metrics["per_class"].items()},
                                 {"trained_at": model.tags.get("git.commit")})
        refs[label] = {"model": ref, "trained_at": row["config"].get("trained_at"),
                       "AP50": {k.removeprefix("AP50_"): v for k, v in row["numbers"].items()}}
    base_classes = [c for c in version.classes if c not in setup["novel"]]
    mean_ap = lambda ap, classes: statistics.fmean(ap[c] for c in classes)  # noqa: E731
    full_nap = mean_ap(refs["full"]["AP50"], setup["novel"]) if full_ref else float("nan")
    full_bap = mean_ap(refs["full"]["AP50"], base_classes) if full_ref else float("nan")
    base_bap = mean_ap(refs["base"]["AP50"], base_classes)
    print(f"references on {EVAL_SPLIT}: base detector bAP50 {base_bap:.3f}; full data nAP50 {full_nap:.3f} "
          f"bAP50 {full_bap:.3f}  {json.dumps(refs)}")

    commit = args.commit or tracking.git_commit()
    for variant in [] if args.report else args.variants:
        for k in args.shots:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                cfg = compose("adapt", [f"model={base_ref}", f"data={args.dataset}", f"shots={k}", f"seed={seed}",
                                        "progress=false", f"eval_split={EVAL_SPLIT}", *common,
                                        f"run_name=fewshot-{variant}-k{k}-s{seed}",
                                        f"tracking.model_name=atom-{args.dataset}-fewshot-{variant}",
                                        f"classes=[{','.join(setup['novel'])}]", *VARIANTS[variant], *args.overrides])
                t = time.perf_counter()
                result = adapt(cfg)
                numbers = {"nAP50": round(result["nAP50"], 4), "wall_s": round(time.perf_counter() - t, 1),
                           "steps": result["steps"], "shot_images": result["shot_images"],
                           "exported": "bundle" in result}  # wall_s includes the verified export
                if "bAP50" in result:
                    numbers["bAP50"] = round(result["bAP50"], 4)
                row = history.record("fewshot", {"dataset": args.dataset, "variant": variant, "shots": k,
                                                 "overrides": args.overrides, "seed": seed}, numbers,
                                     {"base": base_ref, "full": full_ref, "adapt": OmegaConf.to_container(cfg)})
                print(json.dumps(row["setup"] | row["numbers"]), flush=True)

    rows = [{**r["setup"], **r["numbers"]} for r in history.load("fewshot")
            if r["commit"].startswith(commit) and "variant" in r["setup"] and r["setup"]["dataset"] == args.dataset
            and r["setup"].get("overrides", []) == args.overrides]
    n_eval = len(version.coco(EVAL_SPLIT)["images"])
    print(f"\n{args.dataset}, runs of commit {commit[:10]}: {EVAL_SPLIT} ({n_eval} images), novel {setup['novel']}, "
          f"base {base_classes}")
    print(f"full-data nAP50 {full_nap:.3f} (80% = {0.8 * full_nap:.3f}), base bAP50 before {base_bap:.3f}")
    print(f"{'variant':<14} {'K':>3} {'seeds':>5} {'nAP50':>14} {'% of full':>9} {'bAP50':>14} {'ΔbAP50':>7} "
          f"{'wall s':>7}")
    fmt = lambda v: history.mean_std(v) if v else "-"  # noqa: E731
    for variant in args.variants:
        for k in args.shots:
            group = [r for r in rows if r["variant"] == variant and r["shots"] == k]
            if not group:
                continue
            nap = [r["nAP50"] for r in group]
            bap = [r["bAP50"] for r in group if r.get("bAP50") is not None]
            delta = f"{statistics.fmean(bap) - base_bap:+.3f}" if bap else "-"
            print(f"{variant:<14} {k:>3} {len(group):>5} {fmt(nap):>14} {statistics.fmean(nap) / full_nap:>8.0%} "
                  f"{fmt(bap):>14} {delta:>7} {statistics.fmean(r['wall_s'] for r in group):>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
