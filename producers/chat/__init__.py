"""Chat platforms' webhooks, one small mapping module each."""
