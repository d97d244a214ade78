"""Bracelets and their wearers: elders, device registry, (later) codecs, positions, tracks."""
