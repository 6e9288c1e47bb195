"""Thin Lambda adapters. Each module exposes ``handler(event, context)``; logic lives in plain modules."""
