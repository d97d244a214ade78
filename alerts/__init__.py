"""Incidents, dispatch, SLA clock, responders (volunteers, pairs, teams, dispatchers)."""
