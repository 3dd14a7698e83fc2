"""agegender-serve's bounds, light to import: --help shows their defaults at once."""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("A", "B", "ensemble")  # what a client may name; never a file


@dataclass(frozen=True)
class Limits:
    upload_mb: float = 20.0  # a larger body gets 413 before it is read to the end
    seconds: float = 30.0  # per request: upload, wait for a turn and analysis together
    in_flight: int = 2  # images analysed at once (TensorFlow uses every core for each)
    waiting: int = 16  # requests waiting for a turn; more get 503 at once

    @property
    def upload_bytes(self) -> int:
        return int(self.upload_mb * 2**20)
