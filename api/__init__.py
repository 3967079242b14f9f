"""chainrule's HTTP API (FastAPI). Build it with api.main.create_app(settings)."""
