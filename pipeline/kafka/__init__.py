"""Kafka: the clients configured from the settings (`clients`), the bulk publisher
(`publisher`), and what publishes through it: `tailpipe produce` (`produce`) and `tailpipe
loadgen` (`loadgen`) with its synthetic trace items (`synth`).
"""
