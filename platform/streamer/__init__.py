"""streamer: long-running requests over WebSockets on AWS."""

__version__ = "0.1.0"
