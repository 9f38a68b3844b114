"""Where models come from: weights records, our checkpoint format, the authors' checkpoints, one resolver."""
