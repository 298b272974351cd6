"""Storage: SQLAlchemy models, engine/session factory, queries, Alembic migrations."""
