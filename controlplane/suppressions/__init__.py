"""The suppression list: addresses the fleet must not send to, globally or per tenant (seeds 001, 004)."""
