"""The analyzer's SDK: send feedback safely, calibrate locally, never fail the hot path.

    client = CalibrationClient("http://127.0.0.1:8000", api_key=None, segment="default")
    client.send_feedback([{"score": 0.91, "label": True}])
    client.calibrate([0.2, 0.91])        # local apply of the cached active calibrator
    client.refresh()                     # If-None-Match revalidation; True when a new version came
    client.train(force=True, wait=True)  # the finished run

Only numpy, httpx and ``app.calibration`` are imported: no web framework, no database.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.calibration import Calibrator, identity_calibrator, load_calibrator
from app.calibration.segments import POOLED_SEGMENT

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
FINAL_RUN_STATUSES = frozenset({"deployed", "rejected", "skipped", "failed"})


class CalibrationServiceError(RuntimeError):
    """The service answered with an error that retrying will not fix."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


@dataclass
class FeedbackSummary:
    """What a ``send_feedback`` call achieved, over all its batches."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: list[int] = field(default_factory=list)
    external_ids: list[str] = field(default_factory=list)


class CalibrationClient:
    """Thread-safe client of the calibration service.

    Parameters
    ----------
    base_url : str
        Where the service listens, e.g. ``http://127.0.0.1:8000``.
    api_key : str, optional
        Sent as ``Authorization: Bearer``.
    segment : str
        The segment whose calibrator ``calibrate`` applies and whose runs ``train`` starts.
    batch_size : int
        Records per ``POST /v1/feedback/batch`` (the service accepts up to 10,000).
    max_retries : int
        Retries of connection errors, 429 and 5xx-unavailable answers, with capped
        exponential backoff that honours ``Retry-After``.
    cache_path : path, optional
        Where the last artifact is kept on disk, so a restarted analyzer calibrates while the
        service is down.
    refresh_interval : float, optional
        Seconds between background revalidations (a daemon thread); off by default.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        segment: str = "default",
        *,
        timeout: float = 10.0,
        batch_size: int = 1000,
        max_retries: int = 5,
        backoff_base: float = 0.25,
        backoff_max: float = 10.0,
        cache_path: str | os.PathLike[str] | None = None,
        refresh_interval: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10000")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.segment = segment
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.cache_path = Path(cache_path) if cache_path else None
        self._lock = threading.Lock()
        self._calibrator: Calibrator | None = None
        self._artifact: dict[str, Any] | None = None
        self._etag: str | None = None
        self._reachable = True
        self._last_attempt = float("-inf")
        self._retry_unreachable_after = 30.0
        self._stop_refresh = threading.Event()
        self._refresher: threading.Thread | None = None
        self._load_disk_cache()
        if refresh_interval:
            self.start_background_refresh(refresh_interval)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.stop_background_refresh()
        self._http.close()

    def __enter__(self) -> CalibrationClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = min(self.backoff_max, self.backoff_base * 2**attempt)
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not security
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                delay = min(self.backoff_max, float(retry_after))
        time.sleep(delay)

    def _request(
        self, method: str, path: str, *, retry: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """One call, retried on connection errors and 429/502/503/504 when ``retry``."""
        attempts = self.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt + 1 == attempts:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt + 1 == attempts:
                    return response
            self._sleep_before_retry(attempt, response)
        raise AssertionError("unreachable")

    @staticmethod
    def _json_or_raise(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise CalibrationServiceError(response.status_code, detail)
        return response.json()

    # ------------------------------------------------------------------ feedback

    def send_feedback(self, records: Iterable[Mapping[str, Any]]) -> FeedbackSummary:
        """Send records in batches; each gets an ``external_id`` first, so retries are safe.

        ``conflicts`` in the summary are indices into ``records`` whose ``external_id`` was
        already stored with another body. Raises ``CalibrationServiceError`` on a rejected
        batch (e.g. 422 naming the item) after the batches before it were stored.
        """
        summary = FeedbackSummary()
        batch: list[dict[str, Any]] = []
        offset = 0
        for record in records:
            item = dict(record)
            item.setdefault("segment", self.segment)
            if not item.get("external_id"):
                item["external_id"] = uuid.uuid4().hex
            summary.external_ids.append(item["external_id"])
            batch.append(item)
            if len(batch) == self.batch_size:
                self._send_batch(batch, offset, summary)
                offset += len(batch)
                batch = []
        if batch:
            self._send_batch(batch, offset, summary)
        return summary

    def _send_batch(
        self, batch: list[dict[str, Any]], offset: int, summary: FeedbackSummary
    ) -> None:
        result = self._json_or_raise(
            self._request("POST", "/v1/feedback/batch", json={"items": batch})
        )
        summary.inserted += result["inserted"]
        summary.duplicates += result["duplicates"]
        summary.conflicts.extend(offset + index for index in result["conflicts"])

    # ------------------------------------------------------------------ calibration

    @property
    def model_version(self) -> int | None:
        """The version of the calibrator ``calibrate`` applies (``None``: identity)."""
        artifact = self._artifact
        return artifact.get("version") if artifact else None

    @property
    def calibrator_segment(self) -> str | None:
        """Whose calibrator ``calibrate`` applies: this segment's, ``"_pooled"`` (the service's
        fallback for a segment without a model of its own), or ``None`` (identity)."""
        artifact = self._artifact
        return artifact.get("segment") if artifact else None

    def calibrate(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Calibrated probabilities, computed locally; never raises because the service is down.

        Without a cached calibrator, one fetch is tried (and again at most every 30 s);
        meanwhile scores pass through unchanged (identity), which is logged.
        """
        calibrator = self._calibrator
        if calibrator is None:
            now = time.monotonic()
            if now - self._last_attempt >= self._retry_unreachable_after:
                self._last_attempt = now
                try:
                    self.refresh()
                except Exception:  # the hot path must not fail
                    logger.exception("fetching the calibrator failed")
            calibrator = self._calibrator
            if calibrator is None:
                calibrator = identity_calibrator()
        return calibrator.predict(scores)

    def refresh(self) -> bool:
        """Revalidate the cached calibrator; ``True`` when a new version was installed.

        While the service is unreachable the cached calibrator stays in use (logged once).
        """
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            response = self._request(
                "GET",
                "/v1/models/active/artifact",
                params={"segment": self.segment},
                headers=headers,
                retry=False,
            )
        except httpx.TransportError as exc:
            self._mark_unreachable(f"{type(exc).__name__}: {exc}")
            return False
        if response.status_code in RETRY_STATUSES:
            self._mark_unreachable(f"HTTP {response.status_code}")
            return False
        self._mark_reachable()
        if response.status_code == 304:
            return False
        if response.status_code == 404:
            logger.info("segment '%s' has no active calibrator yet", self.segment)
            return False
        artifact = self._json_or_raise(response)
        self._install(artifact, response.headers.get("ETag"))
        self._save_disk_cache()
        return True

    def _install(self, artifact: dict[str, Any], etag: str | None) -> None:
        calibrator = load_calibrator(artifact)
        with self._lock:
            self._calibrator, self._artifact, self._etag = calibrator, artifact, etag
        logger.info(
            "calibrator for '%s' is '%s' version %s (%s)",
            self.segment,
            artifact.get("segment", self.segment),
            artifact.get("version"),
            artifact.get("method"),
        )

    def _mark_unreachable(self, why: str) -> None:
        if self._reachable:
            using = (
                f"cached calibrator version {self.model_version}"
                if self._calibrator is not None
                else "identity (no calibrator was ever fetched)"
            )
            logger.warning("calibration service unreachable (%s); using %s", why, using)
        self._reachable = False

    def _mark_reachable(self) -> None:
        if not self._reachable:
            logger.info("calibration service reachable again")
        self._reachable = True

    def _load_disk_cache(self) -> None:
        if self.cache_path is None or not self.cache_path.exists():
            return
        try:
            cached = json.loads(self.cache_path.read_text())
            # The service may have answered with the pooled calibrator (no model of our own yet).
            cached_segment = cached.get("artifact", {}).get("segment", self.segment)
            if cached_segment not in (self.segment, POOLED_SEGMENT):
                return
            self._install(cached["artifact"], cached.get("etag"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable calibrator cache %s: %s", self.cache_path, exc)

    def _save_disk_cache(self) -> None:
        if self.cache_path is None or self._artifact is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"artifact": self._artifact, "etag": self._etag})
        # Write then rename: a crash never leaves a half-written cache behind.
        with tempfile.NamedTemporaryFile(
            "w", dir=self.cache_path.parent, delete=False, suffix=".tmp"
        ) as handle:
            handle.write(payload)
        os.replace(handle.name, self.cache_path)

    def start_background_refresh(self, interval: float) -> None:
        """Revalidate every ``interval`` seconds in a daemon thread."""
        if self._refresher is not None:
            return
        self._stop_refresh.clear()

        def loop() -> None:
            while not self._stop_refresh.wait(interval):
                try:
                    self.refresh()
                except Exception:
                    logger.exception("background refresh failed")

        self._refresher = threading.Thread(target=loop, name="calibration-refresh", daemon=True)
        self._refresher.start()

    def stop_background_refresh(self) -> None:
        self._stop_refresh.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
            self._refresher = None

    # ------------------------------------------------------------------ service calls

    def calibrate_remote(self, scores: Sequence[float]) -> dict[str, Any]:
        """Ask the service to calibrate (``POST /v1/calibrate``)."""
        body = {"scores": [float(s) for s in scores], "segment": self.segment}
        return self._json_or_raise(self._request("POST", "/v1/calibrate", json=body))

    def train(
        self,
        force: bool = False,
        wait: bool = True,
        *,
        segment: str | None = None,
        timeout: float = 600.0,
        poll_interval: float = 0.5,
    ) -> dict[str, Any]:
        """Start a training run; with ``wait``, poll until it finishes and return it."""
        body = {"segment": segment or self.segment, "force": force}
        run = self._json_or_raise(self._request("POST", "/v1/training-runs", json=body))
        deadline = time.monotonic() + timeout
        while wait and run["status"] not in FINAL_RUN_STATUSES:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"training run {run['id']} still {run['status']} after {timeout}s"
                )
            time.sleep(poll_interval)
            run = self._json_or_raise(self._request("GET", f"/v1/training-runs/{run['id']}"))
        return run

    def list_models(self, segment: str | None = None) -> list[dict[str, Any]]:
        """Stored versions, newest first (all segments unless one is given)."""
        params = {"segment": segment} if segment else {}
        return self._json_or_raise(self._request("GET", "/v1/models", params=params))["items"]

    def activate_model(
        self,
        segment: str,
        version: int,
        *,
        expected_active_version: int | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Promote or roll back; with ``expected_active_version``, only if that one is live."""
        body: dict[str, Any] = {}
        if expected_active_version is not None:
            body["expected_active_version"] = expected_active_version
        if reason:
            body["reason"] = reason
        path = f"/v1/models/{segment}/{version}/activate"
        return self._json_or_raise(self._request("POST", path, json=body))

    def export_feedback(
        self, *, fmt: str = "ndjson", segment: str | None = None, since: str | None = None
    ) -> Iterator[bytes]:
        """Stream every matching record as CSV or NDJSON bytes, never all in memory."""
        params = {"format": fmt}
        if segment:
            params["segment"] = segment
        if since:
            params["since"] = since
        with self._http.stream("GET", "/v1/feedback/export", params=params, timeout=None) as r:
            if r.status_code != 200:
                r.read()
                self._json_or_raise(r)
            yield from r.iter_bytes()

    def health(self) -> dict[str, Any]:
        """The health report (also when the service says it is unhealthy)."""
        response = self._request("GET", "/health")
        if response.status_code == 503:
            return response.json()
        return self._json_or_raise(response)
