"""Shadow rules: start, score fresh feedback in id order, decide once, stop on a manual change.

The per-record Brier differences (challenger - champion) feed an anytime-valid confidence
sequence (``app.calibration.paired_confidence_sequence``; Waudby-Smith and Ramdas 2023), so the
decision may be re-checked after every record without inflating false promotions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from app.calibration import ConfidenceSequenceState, extend_confidence_sequence
from app.config import Settings
from app.db import Database, utcnow
from app.errors import ConflictError, NotFoundError
from app.feedback import repository as feedback
from app.registry import artifacts
from app.registry import service as registry
from app.registry.models import ModelVersion
from app.shadow import repository
from app.shadow.models import ShadowComparison
from app.shadow.schemas import ShadowComparisonRead

logger = logging.getLogger(__name__)

REASON_SHADOW = "shadow"
# Records scored per write transaction: bounds the time a SQLite writer waits on us.
CHUNK = 2000
_LOG_CLIP = 1e-15
TRACE_POINTS = 256
_POINTS_PER_CHUNK = 16


class _Starts:
    """Comparisons started by this process, so its updater notices them without polling."""

    count = 0


def starts_in_process() -> int:
    return _Starts.count


@dataclass(frozen=True)
class ShadowPolicy:
    """The settings that govern decisions."""

    max_records: int = 20_000
    auto_promote: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ShadowPolicy:
        return cls(
            max_records=settings.shadow_max_records, auto_promote=settings.shadow_auto_promote
        )


def to_read(comparison: ShadowComparison) -> ShadowComparisonRead:
    n = comparison.n
    return ShadowComparisonRead(
        segment=comparison.segment,
        challenger_version=comparison.challenger_version,
        champion_version=comparison.champion_version,
        status=comparison.status,
        started_at=comparison.started_at,
        decided_at=comparison.decided_at,
        n=n,
        brier_difference=comparison.brier_sum / n if n else None,
        log_loss_difference=comparison.log_loss_sum / n if n else None,
        interval=(comparison.interval_low, comparison.interval_high),
        alpha=comparison.alpha,
        reason=comparison.reason,
        trace=[(int(n), low, high) for n, low, high in comparison.trace],
    )


def start(
    session: Session, *, segment: str, version: int, actor: str, alpha: float
) -> ShadowComparison:
    """Compare ``version`` (challenger) with the active model on feedback from now on."""
    challenger = registry.get_version(session, segment=segment, version=version)
    champion = registry.find_active(session, segment=segment)
    if champion is None:
        raise ConflictError(f"segment '{segment}' has no active model to compare version with")
    if champion.id == challenger.id:
        raise ConflictError(f"version {version} is the active model of segment '{segment}'")
    watermark = feedback.max_id(session, segment) or 0
    comparison = repository.insert_running(
        session,
        segment=segment,
        challenger_id=challenger.id,
        challenger_version=challenger.version,
        champion_id=champion.id,
        champion_version=champion.version,
        alpha=alpha,
        started_by=actor[:128],
        started_at=utcnow(),
        start_feedback_id=watermark,
        last_feedback_id=watermark,
        n=0,
        brier_sum=0.0,
        log_loss_sum=0.0,
        interval_low=-1.0,
        interval_high=1.0,
        state=ConfidenceSequenceState(alpha=alpha).to_dict(),
        trace=[],
    )
    _Starts.count += 1
    if comparison is None:
        open_one = repository.running(session, segment)
        detail = f"a shadow comparison is already running in segment '{segment}'"
        if open_one:
            detail += f" (challenger version {open_one[0].challenger_version}); stop it first"
        raise ConflictError(detail)
    logger.info(
        "shadow comparison in '%s': version %s challenges version %s",
        segment,
        challenger.version,
        champion.version,
    )
    return comparison


def challenge(
    session: Session,
    *,
    segment: str,
    version: int,
    expected_champion_version: int,
    actor: str,
    alpha: float,
) -> ShadowComparison | None:
    """A new candidate replaces any running challenger; ``None`` if the champion changed."""
    champion = registry.find_active(session, segment=segment)
    if champion is None or champion.version != expected_champion_version:
        return None
    for comparison in repository.running(session, segment):
        repository.end(
            session,
            comparison.id,
            status="stopped",
            decided_at=utcnow(),
            reason=f"superseded by version {version} ({actor})",
        )
    return start(session, segment=segment, version=version, actor=actor, alpha=alpha)


def find_latest(session: Session, *, segment: str) -> ShadowComparisonRead | None:
    """The segment's latest comparison as stored (not advanced), or ``None``."""
    comparison = repository.latest(session, segment)
    return to_read(comparison) if comparison is not None else None


def latest_per_segment(session: Session) -> list[ShadowComparisonRead]:
    """The newest comparison of every segment that has had one, as stored."""
    return [to_read(comparison) for comparison in repository.latest_per_segment(session)]


def latest(session: Session, *, segment: str) -> ShadowComparison:
    comparison = repository.latest(session, segment)
    if comparison is None:
        raise NotFoundError(f"segment '{segment}' has never had a shadow comparison")
    return comparison


def stop(session: Session, *, segment: str, actor: str) -> ShadowComparison:
    """Stop the segment's running comparison; an ended one is returned unchanged."""
    comparison = latest(session, segment=segment)
    if comparison.status == "running":
        repository.end(
            session, comparison.id, status="stopped", decided_at=utcnow(), reason=f"by {actor}"
        )
        session.refresh(comparison)
    return comparison


def _champion_replaced(comparison: ShadowComparison, active: ModelVersion | None) -> str | None:
    """Why the comparison no longer stands: the champion is not (or no longer) the live model."""
    if active is None:
        return f"version {comparison.champion_version} is no longer active"
    if active.id != comparison.champion_id:
        return f"version {active.version} was activated (manual activation or rollback)"
    if active.activated_at is not None and active.activated_at > comparison.started_at:
        return f"version {active.version} was re-activated after the comparison started"
    return None


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = np.clip(probs, _LOG_CLIP, 1.0 - _LOG_CLIP)
    return -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))


@dataclass(frozen=True)
class _Step:
    """What one chunk of feedback changes, computed outside the write transaction."""

    fields: dict[str, object]
    promote: bool
    more: bool


def _score_chunk(
    session: Session, comparison: ShadowComparison, policy: ShadowPolicy
) -> _Step | None:
    limit = min(CHUNK, policy.max_records - comparison.n)
    ids, scores, labels = feedback.oldest_after(
        session,
        segment=comparison.segment,
        after_id=comparison.last_feedback_id,
        limit=max(limit, 0),
    )
    if ids.shape[0] == 0:
        if comparison.n >= policy.max_records:
            # The limit was lowered below n: end it as the limit says.
            fields = _outcome(
                policy,
                n=comparison.n,
                promote=False,
                retire=False,
                high=comparison.interval_high,
            )
            return _Step(fields, promote=False, more=False)
        return None
    segment = comparison.segment
    champion = registry.get_version(session, segment=segment, version=comparison.champion_version)
    challenger = registry.get_version(
        session, segment=segment, version=comparison.challenger_version
    )
    q_champion = artifacts.calibrator_for(champion).predict(scores)
    q_challenger = artifacts.calibrator_for(challenger).predict(scores)
    brier = (q_challenger - labels) ** 2 - (q_champion - labels) ** 2
    log_loss = _log_loss(q_challenger, labels) - _log_loss(q_champion, labels)

    state = ConfidenceSequenceState.from_dict(comparison.state)
    new_state, low, high = extend_confidence_sequence(state, brier)
    # Promotion: every Brier difference from 0 upwards is excluded; retirement: from 0 down.
    better = (high <= 0.0) & policy.auto_promote
    decided = better | (low >= 0.0)
    count = ids.shape[0]
    if decided.any():
        count = int(np.argmax(decided)) + 1
        new_state, _, _ = extend_confidence_sequence(state, brier[:count])
    n = comparison.n + count
    fields: dict[str, object] = {
        "last_feedback_id": int(ids[count - 1]),
        "n": n,
        "brier_sum": comparison.brier_sum + float(brier[:count].sum()),
        "log_loss_sum": comparison.log_loss_sum + float(log_loss[:count].sum()),
        "interval_low": float(low[count - 1]),
        "interval_high": float(high[count - 1]),
        "state": new_state.to_dict(),
        "trace": _traced(comparison.trace, comparison.n, low[:count], high[:count]),
    }
    promote = bool(decided.any() and better[count - 1])
    retire = bool(decided.any() and not promote)
    fields.update(_outcome(policy, n=n, promote=promote, retire=retire, high=high[count - 1]))
    more = "status" not in fields and count == limit
    return _Step(fields, promote=promote, more=more)


def _traced(
    trace: list[list[float]], n0: int, low: np.ndarray, high: np.ndarray
) -> list[list[float]]:
    """The trace with a few points of this chunk (always its last), thinned when too long."""
    picks = np.unique(np.linspace(0, low.shape[0] - 1, _POINTS_PER_CHUNK).astype(int))
    points = [[n0 + int(i) + 1, float(low[i]), float(high[i])] for i in picks]
    trace = [*trace, *points]
    while len(trace) > TRACE_POINTS:
        # Every other point goes, the first and the newest stay.
        trace = [*trace[:-1:2], trace[-1]]
    return trace


def _outcome(
    policy: ShadowPolicy, *, n: int, promote: bool, retire: bool, high: float
) -> dict[str, object]:
    """The status change after ``n`` records, if any: promoted, retired, or stopped."""
    if promote:
        reason = f"the interval lies below 0 after {n} records"
        return {"status": "promoted", "decided_at": utcnow(), "reason": reason}
    if retire:
        reason = f"the interval lies above 0 after {n} records: the challenger is worse"
        return {"status": "retired", "decided_at": utcnow(), "reason": reason}
    if n < policy.max_records:
        return {}
    if high <= 0.0:
        reason = (
            f"the challenger is better after {n} records, but automatic promotion is off; "
            "activate it by hand"
        )
        return {"status": "stopped", "decided_at": utcnow(), "reason": reason}
    reason = f"undecided after {n} records (limit {policy.max_records})"
    return {"status": "retired", "decided_at": utcnow(), "reason": reason}


def _advance_once(database: Database, comparison_id: int, policy: ShadowPolicy) -> bool:
    """Score the next chunk of one comparison. Returns whether more feedback may be waiting."""
    with database.session_scope(write=False) as session:
        comparison = repository.get(session, comparison_id)
        if comparison is None or comparison.status != "running":
            return False
        active = registry.find_active(session, segment=comparison.segment)
        replaced = _champion_replaced(comparison, active)
        step = None if replaced else _score_chunk(session, comparison, policy)
        watermark = comparison.last_feedback_id
        segment = comparison.segment
        challenger_version = comparison.challenger_version
        champion_version = comparison.champion_version
    if replaced is not None:
        with database.session_scope() as session:
            ended_at = active.activated_at if active and active.activated_at else utcnow()
            repository.end(
                session, comparison_id, status="stopped", decided_at=ended_at, reason=replaced
            )
        return False
    if step is None:
        return False
    with database.session_scope() as session:
        if not repository.advance(
            session, comparison_id, from_feedback_id=watermark, **step.fields
        ):
            return True  # another pass scored these records first: read again from its watermark
        if step.promote:
            # In the transaction that records the decision: both happen, or neither.
            registry.activate(
                session,
                segment=segment,
                version=challenger_version,
                actor=f"shadow-comparison:{comparison_id}",
                reason=REASON_SHADOW,
                expected_active_version=champion_version,
            )
    if "status" in step.fields:
        logger.info(
            "shadow comparison %s in '%s' %s: %s",
            comparison_id,
            segment,
            step.fields["status"],
            step.fields["reason"],
        )
    return step.more


def advance(database: Database, policy: ShadowPolicy, *, segment: str | None = None) -> int:
    """Bring every running comparison (of ``segment``, or all) up to the newest feedback.

    Returns how many comparisons were running.
    """
    with database.session_scope(write=False) as session:
        ids = [comparison.id for comparison in repository.running(session, segment)]
    for comparison_id in ids:
        try:
            while _advance_once(database, comparison_id, policy):
                pass
        except ConflictError as exc:
            # The champion changed between scoring and promotion; the next pass stops it.
            logger.info("shadow comparison %s not promoted: %s", comparison_id, exc.detail)
    return len(ids)


def current(database: Database, policy: ShadowPolicy, *, segment: str) -> ShadowComparisonRead:
    """The segment's latest comparison, after scoring any feedback it has not seen yet."""
    advance(database, policy, segment=segment)
    with database.session_scope(write=False) as session:
        return to_read(latest(session, segment=segment))
