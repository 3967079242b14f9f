"""diagnostics: job_findings, the job's init report and findings summary; landscapes

Revision ID: 0006
Revises: 0005 (the brief said 0002; main already had 0003 and 0004 on it: the integrator re-chains)
Create Date: 2026-11-30 09:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_findings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('layer_key', sa.String(length=64), nullable=True),
    sa.Column('layer_type', sa.String(length=32), nullable=True),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('hint', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job_findings', schema=None) as batch_op:
        batch_op.create_index('ix_job_findings_job_id_id', ['job_id', 'id'], unique=False)
    op.create_table('landscapes',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('queue', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('fraction', sa.Float(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('worker_host', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['api_keys.id'], ),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('landscapes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_landscapes_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_landscapes_status'), ['status'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('init_report', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('findings_summary', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('findings_summary')
        batch_op.drop_column('init_report')
    with op.batch_alter_table('landscapes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_landscapes_status'))
        batch_op.drop_index(batch_op.f('ix_landscapes_owner_id'))
    op.drop_table('landscapes')
    with op.batch_alter_table('job_findings', schema=None) as batch_op:
        batch_op.drop_index('ix_job_findings_job_id_id')
    op.drop_table('job_findings')
