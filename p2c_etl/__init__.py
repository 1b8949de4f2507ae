"""p2c-etl: keep Dynamics 365 Sales and Finance and Operations in step."""

__version__ = "0.1.0"
