"""Shared service layer: settings, database, tables, artifact store and CLI (used by api/ and worker/)."""
