"""Pydantic request/response models for the public HTTP API (no logic beyond validation)."""
