"""Production audit: shift, label shift, subgroup bias, rebalancing, monitoring."""
