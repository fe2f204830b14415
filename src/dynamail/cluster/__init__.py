"""The cluster layer: the single place that knows where an account lives."""
