"""Zones, accuracy-aware membership and transitions (built by the geofence issues)."""
