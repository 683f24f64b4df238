"""mtactl control plane: a Litestar service over the shared queue model."""
