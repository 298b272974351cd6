"""`loopchat model prepare`: the model on disk, registered as the base policy version."""

from __future__ import annotations

import argparse
import logging

from loopchat.common import Subparsers, add_settings_flags, database, settings_from

log = logging.getLogger("loopchat")


def add_parser(subparsers: Subparsers) -> None:
    model = subparsers.add_parser("model", help="model management").add_subparsers(
        dest="model_cmd", required=True
    )
    sp = model.add_parser("prepare", help="materialize the bundled model and register it as v0")
    add_settings_flags(sp)
    sp.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from store.db.repository import ensure_base_version
    from store.db.session import session_scope
    from store.modelstore import prepare_bundled

    settings = settings_from(args)
    model_dir = settings.resolved_model_dir
    if settings.model is None:
        prepare_bundled(model_dir)
    elif not (model_dir / "config.json").is_file():
        log.error("%s is not a Hugging Face model directory (no config.json)", model_dir)
        return 2
    with database(settings) as sessions, session_scope(sessions) as s:
        v = ensure_base_version(s, model_dir)
        log.info("policy version %s (%s) -> %s", v.name, v.status, v.artifact_uri)
    return 0
