"""Queue operations (suspend, resume, bounce, …) fanned out to the fleet."""
