"""Shared by api/ and worker/: settings, database, tables, artifact store, keys, broker config,
the job request, and the job lifecycle (core.lifecycle). Imports engine/, never api/ or worker/."""
