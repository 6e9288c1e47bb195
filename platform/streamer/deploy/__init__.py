"""Deployment: the SAM template reader, state machine definitions and their rules, the Lambda build artifact."""
