"""Test infrastructure: free ports, waiting for a server, a local S3-compatible server (moto), and a local headless
Label Studio server for tests and benchmarks (its own virtual environment, 127.0.0.1 only), started as the README
tells users to start theirs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from atom import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Wait until GET url answers 200; fail early, with the log's tail, if the process exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} answered: {tail}")
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def start_s3(folder: Path, bucket: str) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on 127.0.0.1 with one bucket; the credentials it accepts are put in the environment, where
    DVC (boto) reads them. Returns the process and the endpoint URL; the log goes to folder/s3.log."""
    import boto3

    port = free_port()
    log = open(Path(folder) / "s3.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/moto-api/", proc, 60, Path(folder) / "s3.log")
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
    return proc, url


LABEL_STUDIO_BIN = Path(os.environ.get("ATOM_LABEL_STUDIO_BIN", PROJECT_ROOT / ".venv-labelstudio/bin/label-studio"))


class LocalServer:
    """A real Label Studio server (its own virtual environment) on 127.0.0.1, headless, with a fixed token."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.document_root = root / "files"
        self.document_root.mkdir(parents=True)
        self.token = os.urandom(20).hex()
        self.username, self.password = "atom@example.com", os.urandom(12).hex()  # the web UI's login
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 180) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "LABEL_STUDIO_URL")}
        env.update({
            "LABEL_STUDIO_USERNAME": self.username, "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "LABEL_STUDIO_BASE_DATA_DIR": str(self.root / "data"),
            "DJANGO_DB": "sqlite", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false",
            # As the README says: Label Studio refuses ML backends in 127.0.0.0/8 (SSRF protection) unless told.
            "USE_DEFAULT_BANNED_SUBNETS": "false"})
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(LABEL_STUDIO_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "WARNING"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_healthy(f"{self.url}/health", self.proc, timeout, self.root / "server.log")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.log.close()
