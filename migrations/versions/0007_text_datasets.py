"""datasets: the tokenizer of a text dataset and the range of its token ids

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 23:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokenizer', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('vocab_size', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('vocab_size')
        batch_op.drop_column('tokenizer')
