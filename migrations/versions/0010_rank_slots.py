"""rank_slots: the rank processes a worker host may run at once, one row per slot; a multi-process
job reserves all of its slots in one transaction or none (docs/distributed.md)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:25:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rank_slots',
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('slot', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(length=36), nullable=True),
        sa.Column('attempt', sa.Integer(), nullable=True),
        sa.Column('reserved_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('host', 'slot'),
    )
    with op.batch_alter_table('rank_slots', schema=None) as batch_op:
        batch_op.create_index('ix_rank_slots_job_id', ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rank_slots', schema=None) as batch_op:
        batch_op.drop_index('ix_rank_slots_job_id')
    op.drop_table('rank_slots')
