"""jobs: the tokenizer of a language model's or sequence classifier's dataset, copied at submit
(generation and predict on raw text need it after the dataset is deleted)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokenizer', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('tokenizer')
