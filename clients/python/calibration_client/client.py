"""The analyzer's SDK: send feedback safely, calibrate locally, never fail the hot path.

    client = CalibrationClient("http://127.0.0.1:8000", api_key=None, segment="default")
    client.send_feedback([{"score": 0.91, "label": True}])
    client.calibrate([0.2, 0.91])        # local apply of the cached active calibrator
    client.refresh()                     # If-None-Match revalidation; True when a new version came
    client.train(force=True, wait=True)  # the finished run; a deployed one is fetched at once

Only numpy and httpx are imported: no web framework, no database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray

from calibration_client.artifact import ArtifactCalibrator, identity, load_artifact
from calibration_client.files import CountingLines, file_format, read_records, same_instant
from calibration_client.results import (
    CalibrateResult,
    FeedbackSummary,
    HealthReport,
    ImportSummary,
    ModelVersion,
    ShadowComparison,
    TrainingRun,
)

# The service's segment of the calibrator trained on all feedback; it answers for a segment
# without a model of its own.
POOLED_SEGMENT = "_pooled"

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The service's own limit on items per batch request.
MAX_BATCH_SIZE = 10_000


class CalibrationServiceError(RuntimeError):
    """The service answered with an error that retrying will not fix."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


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
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
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
        self._calibrator: ArtifactCalibrator | None = None
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
    def calibrator_segment(self) -> str | None:
        """Whose calibrator ``calibrate`` applies: this segment's, ``"_pooled"`` (the service's
        fallback for a segment without a model of its own), or ``None`` (identity)."""
        artifact = self._artifact
        return artifact.get("segment") if artifact else None

    @property
    def model_version(self) -> int | None:
        """The version of the calibrator ``calibrate`` applies (``None``: identity)."""
        artifact = self._artifact
        return artifact.get("version") if artifact else None

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
                calibrator = identity()
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
        calibrator = load_artifact(artifact)
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

    def calibrate_interval(
        self, scores: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
        """The cached calibrator's pointwise band at ``scores``: ``(low, high)``.

        ``None`` when the cached artifact carries no ``band`` (or nothing was fetched yet).
        """
        calibrator = self._calibrator
        if calibrator is None or calibrator.band is None:
            return None
        return calibrator.predict_interval(scores)

    def calibrate_remote(self, scores: Sequence[float]) -> CalibrateResult:
        """Ask the service to calibrate (``POST /v1/calibrate``)."""
        body = {"scores": [float(s) for s in scores], "segment": self.segment}
        return CalibrateResult.from_json(
            self._json_or_raise(self._request("POST", "/v1/calibrate", json=body))
        )

    def train(
        self,
        force: bool = False,
        wait: bool = True,
        *,
        segment: str | None = None,
        timeout: float = 600.0,
        poll_interval: float = 0.5,
    ) -> TrainingRun:
        """Start a training run; with ``wait``, poll until it finishes and return it.

        When the finished run deployed a new calibrator for this client's segment, the client
        fetches it before returning, so ``calibrate`` applies it at once.
        """
        body = {"segment": segment or self.segment, "force": force}
        run = TrainingRun.from_json(
            self._json_or_raise(self._request("POST", "/v1/training-runs", json=body))
        )
        deadline = time.monotonic() + timeout
        while wait and not run.finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"training run {run.id} still {run.status} after {timeout}s")
            time.sleep(poll_interval)
            run = TrainingRun.from_json(
                self._json_or_raise(self._request("GET", f"/v1/training-runs/{run.id}"))
            )
        if run.status == "deployed" and run.segment == self.segment:
            self.refresh()
        return run

    def get_run(self, run_id: int) -> TrainingRun:
        """One training run."""
        return TrainingRun.from_json(
            self._json_or_raise(self._request("GET", f"/v1/training-runs/{run_id}"))
        )

    def list_models(self, segment: str | None = None) -> list[ModelVersion]:
        """Stored versions, newest first (all segments unless one is given)."""
        params = {"segment": segment} if segment else {}
        items = self._json_or_raise(self._request("GET", "/v1/models", params=params))["items"]
        return [ModelVersion.from_json(item) for item in items]

    def activate_model(
        self,
        segment: str,
        version: int,
        *,
        expected_active_version: int | None = None,
        reason: str | None = None,
    ) -> ModelVersion:
        """Promote or roll back; with ``expected_active_version``, only if that one is live."""
        body: dict[str, Any] = {}
        if expected_active_version is not None:
            body["expected_active_version"] = expected_active_version
        if reason:
            body["reason"] = reason
        path = f"/v1/models/{segment}/{version}/activate"
        return ModelVersion.from_json(self._json_or_raise(self._request("POST", path, json=body)))

    def shadow(self, segment: str | None = None) -> ShadowComparison:
        """The segment's latest champion/challenger comparison (n, interval, status, ...)."""
        path = f"/v1/models/{segment or self.segment}/shadow"
        return ShadowComparison.from_json(self._json_or_raise(self._request("GET", path)))

    def start_shadow(self, version: int, *, segment: str | None = None) -> ShadowComparison:
        """Compare ``version`` with the active model on feedback from now on (admin scope)."""
        path = f"/v1/models/{segment or self.segment}/{version}/shadow"
        return ShadowComparison.from_json(self._json_or_raise(self._request("POST", path)))

    def stop_shadow(self, segment: str | None = None) -> ShadowComparison:
        """Stop the segment's running comparison (admin scope)."""
        path = f"/v1/models/{segment or self.segment}/shadow"
        return ShadowComparison.from_json(self._json_or_raise(self._request("DELETE", path)))

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

    def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        fmt: str | None = None,
        segment: str | None = None,
        batch_size: int = 5000,
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> ImportSummary:
        """Send every record of a CSV or NDJSON file; lines the service refuses are reported.

        The format is ``fmt``, else ``files.file_format``'s guess (``format_note`` says when it
        was a guess). Rows without a segment get ``segment`` (default: the client's). A record
        without an ``external_id`` gets one derived from the file name, line and content, so
        importing the same file twice stores nothing twice. The service judges every record
        (its 422 names the item and field): refused lines are left out and listed in
        ``rejected``. A record of this service's own export whose ``occurred_at`` merely
        repeats its ``received_at`` was stored without one; if it conflicts, it is offered
        again that way, and then counts as the duplicate it is. ``on_progress(bytes_read,
        file_bytes, rows)`` follows each batch.
        """
        file = Path(path)
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        chosen, note = file_format(file, fmt)
        summary = ImportSummary(format=chosen, format_note=note)
        total_bytes = file.stat().st_size
        batch: list[_ImportItem] = []
        with file.open(newline="", encoding="utf-8") as handle:
            counted = CountingLines(handle)
            for line_no, record, received_at in read_records(counted, chosen):
                summary.rows += 1
                if isinstance(record, str):
                    summary.rejected.append((line_no, record))
                    continue
                record.setdefault("segment", segment or self.segment)
                if not record.get("external_id"):
                    digest = hashlib.sha256(
                        f"{file.name}:{line_no}:{json.dumps(record, sort_keys=True)}".encode()
                    )
                    record["external_id"] = f"import-{digest.hexdigest()[:32]}"
                unfilled = None
                if same_instant(record.get("occurred_at"), received_at):
                    unfilled = {k: v for k, v in record.items() if k != "occurred_at"}
                batch.append(_ImportItem(line_no, record, unfilled))
                if len(batch) >= batch_size:
                    self._import_batch(batch, summary)
                    batch = []
                    if on_progress is not None:
                        on_progress(counted.bytes, total_bytes, summary.rows)
            if batch:
                self._import_batch(batch, summary)
        if on_progress is not None:
            on_progress(total_bytes, total_bytes, summary.rows)
        summary.rejected.sort()
        return summary

    def _post_valid(
        self, batch: list[_ImportItem], records: list[dict[str, Any]], summary: ImportSummary
    ) -> tuple[list[_ImportItem], list[dict[str, Any]], dict[str, Any]]:
        """Post ``records`` (one per item); refused items are dropped and reported.

        The service names every invalid item of a batch in one 422 (nothing is stored), so a
        batch takes one request, or two. Returns the items and records it stored or skipped,
        and the service's answer for them.
        """
        while records:
            response = self._request("POST", "/v1/feedback/batch", json={"items": records})
            refused = _refused_items(response) if response.status_code == 422 else {}
            if not refused:
                return batch, records, self._json_or_raise(response)
            summary.rejected.extend((batch[index].line, why) for index, why in refused.items())
            batch = [item for index, item in enumerate(batch) if index not in refused]
            records = [record for index, record in enumerate(records) if index not in refused]
        return [], [], {"inserted": 0, "duplicates": 0, "conflicts": []}

    def _import_batch(self, batch: list[_ImportItem], summary: ImportSummary) -> None:
        batch, _, result = self._post_valid(batch, [item.record for item in batch], summary)
        summary.inserted += result["inserted"]
        summary.duplicates += result["duplicates"]
        conflicts = [batch[index] for index in result["conflicts"]]
        again = [item for item in conflicts if item.unfilled is not None]
        if again:
            # Records this service exported: sent without occurred_at, they are stored without
            # one. Offered again that way, they are the duplicates they are.
            conflicts = [item for item in conflicts if item.unfilled is None]
            again, _, retried = self._post_valid(
                again, [item.unfilled for item in again if item.unfilled is not None], summary
            )
            summary.inserted += retried["inserted"]
            summary.duplicates += retried["duplicates"]
            conflicts += [again[index] for index in retried["conflicts"]]
        summary.conflicts += len(conflicts)
        summary.rejected.extend(
            (item.line, "external_id stored with a different body") for item in conflicts
        )

    def health(self) -> HealthReport:
        """The health report (also when the service says it is unhealthy)."""
        response = self._request("GET", "/health")
        if response.status_code == 503:
            return HealthReport.from_json(response.json())
        return HealthReport.from_json(self._json_or_raise(response))


@dataclass(frozen=True)
class _ImportItem:
    line: int
    record: dict[str, Any]
    # The record without occurred_at, when an export wrote it from received_at.
    unfilled: dict[str, Any] | None


def _refused_items(response: httpx.Response) -> dict[int, str]:
    """Item index -> "field: reason" from a batch's 422 (empty if it names no item)."""
    try:
        errors = response.json().get("detail")
    except ValueError:
        return {}
    refused: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        loc = error.get("loc", [])
        if len(loc) >= 3 and loc[:2] == ["body", "items"] and isinstance(loc[2], int):
            field = ".".join(str(part) for part in loc[3:]) or "item"
            refused.setdefault(loc[2], f"{field}: {error.get('msg', 'invalid')}")
    return refused
