"""The rig: ``therapy`` (the pure domain), ``service`` (the process that owns the bench and the
books), ``client`` (HTTP client, command line, launcher) and ``common`` (what they all share).

Imports point one way: client → (HTTP) → service → therapy; service → hal. ``cli`` wires the
``itbrig`` command line.
"""
