"""The TCP gateway's pure half: framing, decoding and replies for GT06, JT/T 808, watch, H02."""
