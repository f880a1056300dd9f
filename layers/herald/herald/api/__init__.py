"""The HTTP API: Powertools REST resolver, routes per concept, JSON errors."""
