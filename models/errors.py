"""Problems a user can fix; each message is one line meant for them."""
from core.errors import GlanceError


class ModelUnavailable(GlanceError):
    """A model cannot be found locally or fetched from the Hub."""


class CheckpointMismatch(GlanceError):
    """A checkpoint or config that does not fit the architecture (missing/unexpected keys, unsupported options)."""


class MismatchedModels(GlanceError):
    """Vision and text models from different releases do not share an embedding space."""


class UnsupportedDim(GlanceError, ValueError):
    """A Matryoshka dimension the model was not trained for."""
