"""API keys, scopes and tenant binding."""
