"""Connectors: how p2c-etl reads and writes each system (see `base.Connector`)."""
