"""Problems a user can fix; each message is one line meant for them."""


class ModelUnavailable(Exception):
    """A model cannot be found locally or fetched from the Hub."""


class CheckpointMismatch(Exception):
    """A checkpoint or config that does not fit the architecture (missing/unexpected keys, unsupported options)."""


class MismatchedModels(Exception):
    """Vision and text models from different releases do not share an embedding space."""


class UnsupportedDim(ValueError):
    """A Matryoshka dimension the model was not trained for."""
