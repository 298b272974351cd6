"""What the `loopchat` commands share: settings from flags, the database, logging, flags."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from service.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from trainer.config import TrainConfig

# What `add_subparsers()` returns; each command module adds its parsers to it.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# The flags that override a setting, by their argparse destination.
SETTING_FLAGS = ("host", "port", "engine", "model", "data_dir", "database_url")


def train_config(path: Path | None, sets: list[str] | None, command: str) -> TrainConfig | None:
    """The trainer settings from a TOML file and `--set` overrides, or None after saying
    on stderr what is wrong (the command then exits 2)."""
    from trainer.config import ConfigError, load_config

    try:
        return load_config(path, sets)
    except ConfigError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of the environment and --env-file, with the command's flags on top."""
    overrides = {}
    for key in SETTING_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return load_settings(getattr(args, "env_file", None), **overrides)


@contextmanager
def database(settings: Settings, read_only: bool = False) -> Iterator[sessionmaker[Session]]:
    """The migrated database of `settings`, as a session factory, disposed afterwards."""
    from store.db.migrate import upgrade
    from store.db.session import make_engine, make_session_factory

    db = make_engine(settings.resolved_database_url)
    try:
        upgrade(db)
        yield make_session_factory(db, read_only=read_only)
    finally:
        db.dispose()


def prepare_bundled_model(settings: Settings) -> None:
    """Materialize the bundled model unless the settings name a model directory."""
    if settings.model is None:
        from store.modelstore import prepare_bundled

        prepare_bundled(settings.resolved_model_dir)


def add_settings_flags(sp: argparse.ArgumentParser) -> None:
    """Where the data, the database and the model are, and which engine serves it."""
    sp.add_argument("--data-dir", type=Path)
    sp.add_argument("--database-url")
    sp.add_argument("--model", type=Path, help="Hugging Face model directory")
    sp.add_argument("--engine", choices=["auto", "vllm", "transformers"])


def add_server_flags(sp: argparse.ArgumentParser) -> None:
    """The settings flags and the address the server listens on."""
    add_settings_flags(sp)
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
