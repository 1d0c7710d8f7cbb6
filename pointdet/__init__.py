"""pointdet: point-based visual recognition in pure PyTorch.

Example::

    import pointdet
    model = pointdet.load("runs/x/best.pt")
    detections = model.predict(["a.jpg", "b.jpg"])  # list[Detections]: boxes (xyxy px), scores, labels
"""

from pointdet.api import Predictor, build, load
from pointdet.structures import Detections, Instances

__version__ = "0.1.0"
__all__ = ["Detections", "Instances", "Predictor", "build", "load"]
