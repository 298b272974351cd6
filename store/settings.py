"""The settings both processes read: where the store is and where the server listens.

The server's own settings (`service.settings.Settings`) extend these; the trainer reads
only these, so it never needs the service to find the database, the artifacts or the
server it notifies.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.secrets import load_or_create_secret


class StoreSettings(BaseSettings):
    """Every setting is a `LOOPCHAT_*` environment variable; an env file may hold them too."""

    model_config = SettingsConfigDict(
        env_prefix="LOOPCHAT_", env_file=None, extra="ignore", validate_default=True
    )

    data_dir: Path = Field(Path("./data"), description="Database file, models, artifacts.")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in data_dir.")
    admin_token: str = Field(
        "", description="Bearer token for /v1/admin/; empty: generated into data_dir/admin_token."
    )
    # Where the server listens: the trainer notifies it there of a new candidate.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    @field_validator("database_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'loopchat.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def server_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def resolved_admin_token(self) -> str:
        """The setting when given; otherwise the token generated once into the data dir."""
        return self.admin_token or load_or_create_secret(self.data_dir / "admin_token")
