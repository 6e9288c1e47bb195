"""pytest plugin for streamer plugin authors (fixtures arrive with streamer.testing)."""
