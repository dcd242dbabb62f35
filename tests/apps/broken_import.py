"""An app that fails at import: cold start must exit 1 with this traceback logged once."""
raise RuntimeError("broken_import: this app fails to import on purpose")
