"""Training beyond one process: 2 DDP ranks on CPU (gloo), launched by torchrun as the README shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import tiny_overrides
from tests.servers import free_port


@pytest.mark.slow
def test_two_ddp_ranks_shard_the_data_and_write_one_model(project, tmp_path, monkeypatch):
    """The ranks trained on disjoint halves of the training split, one checkpoint set and one model version were
    written (by rank 0), and the validation mAP gathered across the ranks equals a single-process evaluation of
    the checkpoint."""
    import torch

    from atom import tracking
    from atom.evaluation import evaluate
    from atom.training.module import DetectionModule

    outputs = tmp_path / "outputs"
    # every training image once (batches of 4 per rank), so that the shards can be checked against the split
    overrides = [o for o in tiny_overrides({**project, "outputs": outputs}, "ddp")
                 if not o.startswith("trainer.limit_train_batches")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "recipes.train", "experiment=sample", "trainer=ddp",
         "trainer.devices=2", "threads=1", *overrides],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run_dir = outputs / "runs" / "ddp"
    ranks = [json.loads((run_dir / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    seen = [set(r["image_ids"]) for r in ranks]
    train_ids = {im["id"] for im in project["version"].coco("train")["images"]}
    shard = -(-len(train_ids) // 2)  # each rank's share; the sampler pads an odd split with one repeated image
    batch = 4
    for s in seen:  # a rank's last incomplete batch is dropped (atom/training/datamodule.py)
        assert s <= train_ids and len(s) == shard // batch * batch
    assert len(seen[0] & seen[1]) <= len(train_ids) % 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    # MLflow exports the store it is pointed at as MLFLOW_TRACKING_URI: set here, it is undone after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{outputs.resolve()}/mlflow.db")
    tracking.configure(outputs)
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions("name='atom-sample'")
    assert len(versions) == 1

    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    module = DetectionModule(ckpt["hyper_parameters"]["spec"])
    module.load_state_dict(ckpt["state_dict"])
    detector = module.detector.eval()
    single, _, _ = evaluate(detector, detector.spec, project["version"], "val")
    assert metrics["best_val_mAP50"] == pytest.approx(single["mAP50"], abs=1e-6)
