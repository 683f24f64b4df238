"""KumoMTA: its log records (``events``) and their mapping onto the queue model (``mapping``)."""
