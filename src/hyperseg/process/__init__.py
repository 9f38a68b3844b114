"""How a long job runs as processes: one per rank (:mod:`.distributed`) and a lock on its output folder (:mod:`.runlock`).

Training and sharded prediction both use these, so they sit below both.
"""
