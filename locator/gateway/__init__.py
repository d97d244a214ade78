"""`homeward gateway`: real bracelets over TCP into the one MQTT pipeline."""
