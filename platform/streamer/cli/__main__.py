"""``python -m streamer.cli``."""

from streamer.cli import main

raise SystemExit(main())
