"""The fleet registry: MTA nodes, their credentials and health."""
