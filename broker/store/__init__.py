"""Durable state of the broker behind one interface (`Store`); SQLite is the embedded default."""
