"""Liveness and a detailed view of the service's dependencies."""
