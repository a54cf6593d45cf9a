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
import threading
from pathlib import Path

from fastapi import Body, Depends, FastAPI, HTTPException, Request

from atom.data.formats import resolve_task_image
from atom.data.report import ImportReport
from atom.labelstudio.project import predict_results


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


def create_app(detector, model_version: str, document_root: Path, token: str):
    if not token:
        raise ValueError("the ML backend needs a token (ATOM_ML_BACKEND_TOKEN or serve.token)")
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
        report = ImportReport()
        tasks = body.get("tasks") or []
        images = [resolve_task_image(t.get("data", {}), Path(document_root).resolve(), f"task {t.get('id')}", report)
                  for t in tasks]
        readable = [i for i in images if i is not None]
        with lock:
            predicted = iter(predict_results(detector, readable, report))
        results = []
        for image in images:
            p = next(predicted) if image is not None else None
            results.append({**(p or {"result": [], "score": 0.0}), "model_version": model_version})
        return {"results": results, "model_version": model_version}

    return app
