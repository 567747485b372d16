"""Where call records go: the built-in table (written by the outbox itself), a signed webhook, HubSpot."""
