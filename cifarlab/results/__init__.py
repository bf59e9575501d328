"""The results store: one SQLite database that reports, tables and plots are derived from."""

from cifarlab.results.store import SCHEMA_VERSION, Store, open_store  # noqa: F401
