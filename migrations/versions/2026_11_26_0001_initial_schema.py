"""Initial schema: feedback, model registry, training runs, health history, job firings.

Revision ID: 20261126_0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261126_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("label", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(128), nullable=True),
        _ts("occurred_at"),
        _ts("received_at"),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("body_sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("external_id", name="uq_feedback_external_id"),
    )
    op.create_index("ix_feedback_segment_id", "feedback", ["segment", "id"])

    op.create_table(
        "training_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _ts("heartbeat_at", nullable=True),
        sa.Column("evaluation_results", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("n_samples", sa.Integer(), nullable=True),
        sa.Column("last_feedback_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'deployed', 'rejected', 'skipped', 'failed')",
            name="ck_training_run_status",
        ),
        sa.CheckConstraint(
            "\"trigger\" IN ('schedule', 'api', 'cli')", name="ck_training_run_trigger"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_training_run"),
    )
    op.create_index("ix_training_run_segment_created_at", "training_run", ["segment", "created_at"])
    op.create_index(
        "uq_training_run_one_open",
        "training_run",
        ["segment"],
        unique=True,
        sqlite_where=sa.text("status IN ('queued', 'running')"),
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )

    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("training_run_id", sa.Integer(), nullable=True),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_validation", sa.Integer(), nullable=False),
        sa.Column("last_feedback_id", sa.BigInteger(), nullable=True),
        sa.Column("artifact", sa.JSON(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("activated_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'rejected', 'archived')", name="ck_model_version_status"
        ),
        sa.ForeignKeyConstraint(
            ["training_run_id"],
            ["training_run.id"],
            name="fk_model_version_training_run_id_training_run",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_version"),
        sa.UniqueConstraint("segment", "version", name="uq_model_version_segment_version"),
    )
    op.create_index(
        "uq_model_version_one_active",
        "model_version",
        ["segment"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )

    op.create_table(
        "model_event",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("occurred_at"),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name="fk_model_event_model_version_id_model_version",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_event"),
    )
    op.create_index("ix_model_event_segment_occurred_at", "model_event", ["segment", "occurred_at"])

    op.create_table(
        "health_check",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        _ts("checked_at"),
        sa.PrimaryKeyConstraint("id", name="pk_health_check"),
    )
    op.create_index("ix_health_check_checked_at", "health_check", ["checked_at"])

    op.create_table(
        "job_firing",
        sa.Column("job_id", sa.String(64), nullable=False),
        _ts("scheduled_for"),
        sa.Column("claimed_by", sa.String(128), nullable=False),
        _ts("claimed_at"),
        _ts("finished_at", nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "scheduled_for", name="pk_job_firing"),
    )


def downgrade() -> None:
    op.drop_table("job_firing")
    op.drop_index("ix_health_check_checked_at", table_name="health_check")
    op.drop_table("health_check")
    op.drop_index("ix_model_event_segment_occurred_at", table_name="model_event")
    op.drop_table("model_event")
    op.drop_index("uq_model_version_one_active", table_name="model_version")
    op.drop_table("model_version")
    op.drop_index("uq_training_run_one_open", table_name="training_run")
    op.drop_index("ix_training_run_segment_created_at", table_name="training_run")
    op.drop_table("training_run")
    op.drop_index("ix_feedback_segment_id", table_name="feedback")
    op.drop_table("feedback")
