"""Training and evaluation: everything a training run needs, reaching models through :mod:`hyperseg.hub`."""
