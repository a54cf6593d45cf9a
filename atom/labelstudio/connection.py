"""Finding and calling the Label Studio server.

The server comes from the conventional LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY variables, or from a KEY=VALUE
file outside git (ATOM_LABEL_STUDIO_CONFIG, default ~/.config/atom/labelstudio.env). The key never appears in
reprs, logs or exception messages: every error passes through `redact`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from atom.errors import AtomError

T = TypeVar("T")
CONFIG_FILE = Path(os.environ.get("ATOM_LABEL_STUDIO_CONFIG", Path.home() / ".config/atom/labelstudio.env"))


class LabelStudioError(AtomError):
    """A Label Studio operation failed; the message says which and why, without credentials."""


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str = field(repr=False)
    retries: int = 3  # attempts per call; the SDK's own retry loop makes them (connection errors, 5xx, 429)

    def client(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.api_key, timeout=60, max_retries=max(self.retries - 1, 0))

    def redact(self, text: object) -> str:
        return str(text).replace(self.api_key, "***") if self.api_key else str(text)

    def call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs), an SDK call (which retries transient failures itself, `retries` attempts in all);
        a failure becomes a LabelStudioError that says what failed and why, without the key."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return fn(*args, **kwargs)
        except (httpx.TransportError, ApiError) as e:
            status = getattr(e, "status_code", None)
            reason = f"HTTP {status}: {getattr(e, 'body', '')}" if status else f"{type(e).__name__}: {e}"
            transient = status is None or status >= 500 or status == 429
            tries = f" after {self.retries} attempts" if transient else ""
            raise LabelStudioError(self.redact(f"{what} failed at {self.url}{tries} ({reason})")) from None


def _read_config_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs}


def connect(url: str | None = None, api_key: str | None = None, retries: int = 3) -> Connection:
    stored = _read_config_file(CONFIG_FILE)
    url = url or os.environ.get("LABEL_STUDIO_URL") or stored.get("LABEL_STUDIO_URL")
    api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY") or stored.get("LABEL_STUDIO_API_KEY")
    if not url or not api_key:
        raise LabelStudioError(f"no Label Studio server configured: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                               f"(or put them in {CONFIG_FILE})")
    return Connection(url.rstrip("/"), api_key, retries)
