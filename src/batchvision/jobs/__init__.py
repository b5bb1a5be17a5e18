"""Asynchronous batch jobs: JSONL validation, uploads, blobs, the job store and the chunk ledger."""
