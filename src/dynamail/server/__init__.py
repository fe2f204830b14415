"""The server process: configuration, start-up, listeners, signals."""
