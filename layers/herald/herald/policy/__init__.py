"""Contact policy and priority: caps, quiet hours and expiry; which send goes first (seed 003)."""
