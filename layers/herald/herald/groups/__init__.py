"""Customer groups: VIP, Wholesale, Retail... used by campaign targeting."""
