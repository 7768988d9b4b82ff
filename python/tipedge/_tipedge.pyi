"""Type stubs of the extension module (python/src/lib.rs)."""

from os import PathLike
from typing import Iterable, List, Literal, Optional, Union

import numpy as np
import numpy.typing as npt

__version__: str
#: The pixel format names ``Session.classify`` accepts (aliases: gray8, yuyv, i420, jpeg).
FORMATS: List[str]

Format = Literal[
    "rgb24", "bgr24", "rgba", "gray", "gray8", "yuyv422", "yuyv",
    "nv12", "yuv420p", "i420", "mjpeg", "jpeg",
]
#: A frame: a uint8 array (rows may be strided, the pixels of a row contiguous), or the
#: encoded bytes of a JPEG.
Frame = Union[npt.NDArray[np.uint8], bytes]
StrPath = Union[str, "PathLike[str]"]

class TipedgeError(Exception):
    """A failure that is neither a bad frame nor an unopenable file (e.g. inside tract)."""

class FrameError(ValueError):
    """A frame the library refused: bad size or buffer, corrupt JPEG. The session goes on."""

class OpenError(OSError):
    """A model, pack or state directory that could not be opened or verified."""

class Label:
    """One class of a prediction."""

    @property
    def label(self) -> str: ...
    @property
    def class_index(self) -> int:
        """Index into ``Session.class_names`` (the JSON records' ``class``)."""
    @property
    def logit(self) -> float: ...
    @property
    def prob(self) -> float:
        """Calibrated probability (the pack's temperature, if it has one)."""

class Prediction:
    """One frame's result, with the fields of ``tipedge stream``'s JSON prediction record."""

    @property
    def frame(self) -> int:
        """The frame's index in its session (bad frames are counted too)."""
    @property
    def top(self) -> List[Label]:
        """The best classes, best first."""
    @property
    def label(self) -> str:
        """The best class's name."""
    @property
    def prob(self) -> float:
        """The best class's probability."""
    @property
    def unknown(self) -> bool:
        """The best probability is below the session's ``min_prob``."""
    @property
    def timings_ms(self) -> dict:
        """``decode_ms``, ``preprocess_ms``, ``encode_ms``, ``score_ms``."""
    @property
    def pack(self) -> Optional[str]:
        """The pack's label, if it has one."""
    def to_json(self) -> str:
        """The JSON record, one line, as ``tipedge stream`` prints it."""
    def to_dict(self) -> dict:
        """The JSON record as a dict (``type``, ``frame``, ``top``, ``unknown``, ``timings_ms``…)."""

class Session:
    """An image encoder, an adapter pack and their buffers: frames in, predictions out.

    ``model`` is a model folder (``image.onnx`` + ``image.json``) or an ``image.onnx`` file;
    give ``pack`` (a ``.pack`` made with that model) or ``state_dir`` (a device's state
    directory: its active pack, as ``tipedge flash`` left it). ``top_k`` classes per prediction
    (1..16); ``threads`` for the encoder; ``min_prob`` marks frames below it ``unknown``;
    ``tda`` turns on test-time adaptation. Raises ``OpenError`` or ``ValueError``.

    One session classifies one frame at a time (calls from other threads wait); open one per
    camera thread. Do not write to a frame's array from another thread while it is classified.
    """

    def __init__(
        self,
        model: StrPath,
        pack: Optional[StrPath] = None,
        *,
        state_dir: Optional[StrPath] = None,
        top_k: int = 3,
        threads: int = 1,
        min_prob: Optional[float] = None,
        tda: bool = False,
    ) -> None: ...
    def classify(
        self,
        frame: Frame,
        format: Format = "rgb24",
        *,
        width: Optional[int] = None,
        height: Optional[int] = None,
    ) -> Prediction:
        """Classifies one frame, read in place.

        Shapes: rgb24/bgr24 ``(h, w, 3)``; rgba ``(h, w, 4)``; gray ``(h, w)`` or ``(h, w, 1)``;
        yuyv422 ``(h, w, 2)``; nv12/yuv420p ``(h * 3 // 2, w)`` (picamera2's and OpenCV's YUV
        420 layout) or a 1-D buffer with ``width=`` and ``height=``; mjpeg a 1-D array or
        ``bytes``. Rows may be strided (a crop of a larger array); the pixels within a row must
        be contiguous. A wrong dtype, shape or layout is a ``ValueError``; a frame the library
        refuses is a ``FrameError``. Either way the frame is counted and the session goes on.
        """
    def classify_batch(
        self, frames: Iterable[Frame], format: Format = "rgb24"
    ) -> List[Union[Prediction, FrameError]]:
        """Classifies frames of one format in encoder batches. A bad frame's place holds its
        ``FrameError`` (returned, not raised); the others are classified."""
    def embed(
        self,
        frame: Frame,
        format: Format = "rgb24",
        *,
        width: Optional[int] = None,
        height: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """The frame's L2-normalised image feature (a new array of ``dim`` floats)."""
    def swap_pack(self, pack: StrPath) -> None:
        """Opens and verifies another pack of the same model; used from the next frame on.
        On error (``OpenError``, ``ValueError``) the session keeps its pack."""
    @property
    def class_names(self) -> List[str]: ...
    @property
    def frames(self) -> int:
        """Frames offered so far (bad ones too): the next frame's index."""
    @property
    def dim(self) -> int:
        """The encoder's feature width."""
    @property
    def warnings(self) -> list[str]:
        """What the encoder said when it was loaded, one line each: an int8 graph on an x86_64
        CPU whose int8 kernel is slow, f16 emulated on x86_64, or a compiled form
        (``tipedge compile``) that was stale or damaged and so not used. Empty when there is
        nothing to say."""
    def _classify_native(self, frame: Frame, format: Format, n: int) -> float:
        """Benchmark hook: seconds for ``n`` calls of the Rust ``Session::classify`` on one
        frame, with no Python in between (python/bench/overhead.py)."""
