"""federation

Revision ID: 0005
Revises: 0004
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('saml_connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('idp_entity_id', sa.String(length=1024), nullable=False),
    sa.Column('idp_metadata_xml', sa.Text(), nullable=False),
    sa.Column('metadata_url', sa.String(length=2048), nullable=True),
    sa.Column('metadata_fetched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('metadata_checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('metadata_error', sa.Text(), nullable=True),
    sa.Column('attribute_map', sa.JSON(), nullable=False),
    sa.Column('provisioning', sa.String(length=32), nullable=False),
    sa.Column('sign_requests', sa.Boolean(), nullable=False),
    sa.Column('allow_idp_initiated', sa.Boolean(), nullable=False),
    sa.Column('email_domains', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saml_connections')),
    sa.UniqueConstraint('name', name=op.f('uq_saml_connections_name'))
    )

    op.create_table('federated_identities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=512), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['connection_id'], ['saml_connections.id'], name=op.f('fk_federated_identities_connection_id_saml_connections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_federated_identities_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_federated_identities')),
    sa.UniqueConstraint('connection_id', 'subject', name='uq_federated_identities_subject')
    )

    with op.batch_alter_table('federated_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_federated_identities_user_id'), ['user_id'], unique=False)

    op.create_table('saml_sp_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('private_key_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['saml_connections.id'], name=op.f('fk_saml_sp_keys_connection_id_saml_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saml_sp_keys')),
    sa.UniqueConstraint('kid', name=op.f('uq_saml_sp_keys_kid'))
    )

    with op.batch_alter_table('saml_sp_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_saml_sp_keys_connection_id'), ['connection_id'], unique=False)


def downgrade():
    with op.batch_alter_table('saml_sp_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_saml_sp_keys_connection_id'))

    op.drop_table('saml_sp_keys')

    with op.batch_alter_table('federated_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_federated_identities_user_id'))

    op.drop_table('federated_identities')

    op.drop_table('saml_connections')
