"""Shadow comparisons: champion and challenger scored on the same fresh feedback.

Revision ID: 20261129_0002
Revises: 20261126_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261129_0002"
down_revision: str | None = "20261126_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_comparison",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("challenger_id", sa.Integer(), nullable=False),
        sa.Column("challenger_version", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("alpha", sa.Double(), nullable=False),
        sa.Column("started_by", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_feedback_id", sa.BigInteger(), nullable=False),
        sa.Column("last_feedback_id", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("brier_sum", sa.Double(), nullable=False),
        sa.Column("log_loss_sum", sa.Double(), nullable=False),
        sa.Column("interval_low", sa.Double(), nullable=False),
        sa.Column("interval_high", sa.Double(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'promoted', 'retired', 'stopped')",
            name="ck_shadow_comparison_status",
        ),
        sa.ForeignKeyConstraint(
            ["challenger_id"],
            ["model_version.id"],
            name="fk_shadow_comparison_challenger_id_model_version",
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"],
            ["model_version.id"],
            name="fk_shadow_comparison_champion_id_model_version",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_shadow_comparison"),
    )
    op.create_index(
        "uq_shadow_comparison_one_running",
        "shadow_comparison",
        ["segment"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_shadow_comparison_segment_id", "shadow_comparison", ["segment", "id"])


def downgrade() -> None:
    op.drop_index("ix_shadow_comparison_segment_id", table_name="shadow_comparison")
    op.drop_index("uq_shadow_comparison_one_running", table_name="shadow_comparison")
    op.drop_table("shadow_comparison")
