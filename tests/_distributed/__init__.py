"""Helper scripts run in subprocesses by the multi-device and multi-process tests."""
