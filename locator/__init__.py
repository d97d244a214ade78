"""Homeward service shell: settings, wiring, CLI, HTTP app, processes."""
