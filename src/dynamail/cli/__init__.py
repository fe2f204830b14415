"""The dynamail command line."""
