"""The CommuniGate-style admin CLI protocol (port 106): data format, sans-IO core, adapter."""
