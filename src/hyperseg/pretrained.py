"""The old import path of :mod:`hyperseg.hub.weights` (Weights records and their registry), kept as an alias of it."""
from ._alias import alias

alias(__name__, "hyperseg.hub.weights")
