"""jobs: input_shape, task and classes, copied from the dataset at submit, for predict

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 08:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('input_shape', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('task', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('classes', sa.JSON(), nullable=True))
    # jobs whose dataset still exists: copy what predict needs from it
    op.execute("UPDATE jobs SET input_shape = (SELECT d.input_shape FROM datasets d WHERE d.id = jobs.dataset_id), "
               "task = (SELECT d.task FROM datasets d WHERE d.id = jobs.dataset_id), "
               "classes = (SELECT d.classes FROM datasets d WHERE d.id = jobs.dataset_id) "
               "WHERE dataset_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('classes')
        batch_op.drop_column('task')
        batch_op.drop_column('input_shape')
