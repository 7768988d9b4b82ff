"""tipedge: few-shot-adapted CLIP (Tip-Adapter) on edge CPUs, in-process from Python.

    import numpy as np, tipedge
    session = tipedge.Session("models/efficientnet-lite0", pack="textile.pack")
    frame = np.zeros((480, 640, 3), np.uint8)          # from picamera2 / OpenCV (format="bgr24")
    p = session.classify(frame, format="rgb24")
    print(p.frame, p.label, p.prob, p.to_dict())

Frames are numpy uint8 arrays read in place (no copy); see ``Session.classify`` for the shape
each pixel format takes. The GIL is released while a frame is classified.
"""

from ._tipedge import (
    FORMATS,
    FrameError,
    Label,
    OpenError,
    Prediction,
    Session,
    TipedgeError,
    __version__,
)

__all__ = [
    "FORMATS",
    "FrameError",
    "Label",
    "OpenError",
    "Prediction",
    "Session",
    "TipedgeError",
    "__version__",
]
