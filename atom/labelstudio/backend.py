"""A Label Studio ML backend (the /health, /setup, /predict protocol of label-studio-ml) serving a registered
detector, so annotators get predictions when they open a task.

It requires a token on /setup and /predict: `Authorization: Bearer <token>` or `Token <token>`, or HTTP Basic
auth with the token as password (what Label Studio sends when the model connection has basic auth set).
It binds to 127.0.0.1 unless told otherwise. FastAPI types are imported at module level: it resolves the
endpoints' annotations by name.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
from pathlib import Path

from fastapi import Body, Depends, FastAPI, HTTPException, Request

from atom.data.formats import resolve_task_image
from atom.data.report import ImportReport
from atom.errors import ConfigError
from atom.inference import predict_images
from atom.labelstudio.project import Preannotation, control_names, to_prediction

log = logging.getLogger(__name__)


def _authorized(header: str | None, token: str) -> bool:
    if not header or " " not in header:
        return False
    scheme, value = header.split(" ", 1)
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value).decode().split(":", 1)[-1]
        except (ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() not in ("bearer", "token"):
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def create_app(detector, model_version: str, document_root: Path, token: str, shown: Preannotation | None = None):
    if not token:
        raise ConfigError("the ML backend needs a token (ATOM_ML_BACKEND_TOKEN or serve.token)")
    shown = shown or Preannotation()
    app = FastAPI(title="ATOM Label Studio ML backend")
    lock = threading.Lock()  # one inference at a time: the detector is not shared across threads

    def require_token(request: Request):
        if not _authorized(request.headers.get("authorization"), token):
            raise HTTPException(status_code=401, detail="missing or wrong token")

    @app.get("/health")
    @app.get("/")
    def health():
        return {"status": "UP", "model_class": "atom.Detector", "model_version": model_version}

    @app.post("/setup", dependencies=[Depends(require_token)])
    def setup(body: dict = Body(default_factory=dict)):  # noqa: B008  (FastAPI's way)
        return {"model_version": model_version}

    @app.post("/predict", dependencies=[Depends(require_token)])
    def predict(body: dict = Body(default_factory=dict)):  # noqa: B008
        """One result per task, in the names of the request's label config. A task whose image cannot be used
        (outside the document root, missing, unreadable, a remote URL) gets an empty result with an "error";
        when no task can be served the answer is 422 with the reasons, which Label Studio shows."""
        report = ImportReport()
        tasks = body.get("tasks") or []
        names = control_names(body.get("label_config") or (body.get("project") or {}).get("label_config"))
        images = [resolve_task_image(t.get("data", {}), Path(document_root).resolve(), f"task {t.get('id')}", report)
                  for t in tasks]
        with lock:
            predicted = iter(predict_images(detector, [i for i in images if i is not None], report))
        reasons = {p.file: p.reason for p in report.problems}
        results, errors = [], []
        for task, image in zip(tasks, images):
            d = next(predicted) if image is not None else None
            if d is None:
                why = reasons.get(f"task {task.get('id')}") or reasons.get(str(image), "image cannot be read")
                errors.append(f"task {task.get('id')}: {why}")
                log.warning("ML backend: %s", errors[-1])
                results.append({"result": [], "score": 0.0, "model_version": model_version, "error": errors[-1]})
                continue
            results.append({**to_prediction(shown.select(d), shown.class_map, names), "model_version": model_version})
        if tasks and len(errors) == len(tasks):
            raise HTTPException(status_code=422, detail="; ".join(errors))
        return {"results": results, "model_version": model_version}

    return app
