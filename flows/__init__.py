"""Prefect flows: orchestration over the treegrpo commands."""
