"""Reading the mirrored queue: messages, queues and metrics."""
