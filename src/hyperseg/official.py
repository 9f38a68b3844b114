"""The old import path of :mod:`hyperseg.hub.official` (the authors' checkpoints), kept as an alias of it."""
from ._alias import alias

alias(__name__, "hyperseg.hub.official")
