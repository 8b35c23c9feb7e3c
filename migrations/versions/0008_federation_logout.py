"""federation_logout

Revision ID: 0008
Revises: 0007
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    # SAML single logout keeps its session records in the store (idp/federation/slo.py): they
    # expire with the sessions. Here only the per-connection settings of issue 7's last steps.
    with op.batch_alter_table('saml_connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('require_mfa', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('clock_skew_ttl', sa.Integer(), nullable=True))
    with op.batch_alter_table('federated_identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('granted_roles', sa.JSON(), server_default='[]', nullable=False))


def downgrade():
    with op.batch_alter_table('federated_identities', schema=None) as batch_op:
        batch_op.drop_column('granted_roles')
    with op.batch_alter_table('saml_connections', schema=None) as batch_op:
        batch_op.drop_column('clock_skew_ttl')
        batch_op.drop_column('require_mfa')
