"""The old import path of :mod:`hyperseg.hub.resolve` (one resolver for every model source), kept as an alias of it."""
from .._alias import alias

alias(__name__, "hyperseg.hub.resolve")
