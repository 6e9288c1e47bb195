"""streamer plugin."""
