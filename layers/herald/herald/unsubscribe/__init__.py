"""Unsubscribe links and communication preferences (signed tokens, public pages)."""
