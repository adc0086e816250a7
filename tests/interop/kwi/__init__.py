"""Helpers for the kanban-watchdog interop suite (real Hermes Agent 0.19.0)."""
