"""Vantage cloud driver for Linux servers (`CLOUD_LINUXSERVER`): SEs installed over SSH."""
