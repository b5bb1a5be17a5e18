"""The bottom layer every other one may use: shared types, the one error vocabulary, settings,
the database engine, and small filesystem helpers. Imports nothing else of batchvision."""
