"""Stored chat conversations of web users (list, rename, delete, history with votes)."""
