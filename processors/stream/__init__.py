"""The Faust worker: normalize, ordering and emitter agents (DESIGN.md section 1)."""
