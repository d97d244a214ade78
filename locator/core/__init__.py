"""The bottom layer every domain may import: settings, Redis, keys, clock, errors, auth."""
