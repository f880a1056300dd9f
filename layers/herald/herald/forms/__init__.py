"""Lead capture forms: public, rate-limited submissions that create or update leads."""
