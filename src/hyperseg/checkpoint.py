"""The old import path of :mod:`hyperseg.hub.checkpoint` (our checkpoint format), kept as an alias of it."""
from ._alias import alias

alias(__name__, "hyperseg.hub.checkpoint")
