from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.store.migrate import upgrade
from service.store.tables import Base


def test_migrated_schema_equals_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine)
    upgrade(engine)  # a second start finds nothing to do
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert {"identities", "faces", "face_events", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
