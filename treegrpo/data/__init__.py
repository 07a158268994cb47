"""Prompt ingestion and validation."""
