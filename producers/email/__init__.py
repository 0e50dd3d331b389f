"""Email: inbound-parse webhooks and message files, mapped from headers only (never bodies)."""
