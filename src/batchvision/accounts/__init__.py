"""Accounts: API keys (stored hashed), credits, rate limits, usage and tenant scoping."""
