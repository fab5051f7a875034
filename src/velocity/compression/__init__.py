"""Update compression: codecs with exact wire sizes, error feedback, the engine's encoder.

- Codecs (:mod:`velocity.compression._codecs`): :class:`Float32` (the reference),
  :class:`Float16`, :class:`Int8` (per-tensor scales), :class:`TopK` and :class:`QSGD`. Each
  turns a flat float32 ``(d,)`` update row into a ``b"VFC1"`` frame of exactly
  ``codec.encoded_size(spec)`` bytes and back; :func:`decode_frame` decodes any codec's
  frame, treating the bytes as hostile. :func:`codec_from_config` maps the YAML
  ``compression`` section to a codec.
- Error feedback: :func:`encode_with_feedback` and :class:`ErrorFeedback` (EF-SGD).
- :class:`CodecEncoder`: a codec as the round engine's update encoder;
  :class:`DownlinkCodec`: the server's model difference encoded for the clients.

Examples
--------
>>> import torch
>>> from velocity.types import ParamSpec
>>> spec = ParamSpec.from_sizes({"w": 4})
>>> frame = Int8().encode(torch.tensor([1.0, -0.5, 0.25, 0.0]), spec)
>>> len(frame) == HEADER_BYTES + 4 + 4
True
>>> decode_frame(frame, spec).tolist()
[1.0, -0.5039370059967041, 0.25196850299835205, 0.0]
"""

from velocity.compression._codecs import (
    CODECS,
    FLOAT16_MAX,
    HEADER_BYTES,
    MAGIC,
    QSGD,
    STRATEGIES,
    VERSION,
    Codec,
    Float16,
    Float32,
    Int8,
    TopK,
    codec_from_config,
    decode_frame,
)
from velocity.compression._encoder import ENCODING, CodecEncoder, DownlinkCodec
from velocity.compression._feedback import ErrorFeedback, compensate, encode_with_feedback

__all__ = [
    "CODECS",
    "ENCODING",
    "FLOAT16_MAX",
    "HEADER_BYTES",
    "MAGIC",
    "QSGD",
    "STRATEGIES",
    "VERSION",
    "Codec",
    "CodecEncoder",
    "DownlinkCodec",
    "ErrorFeedback",
    "Float16",
    "Float32",
    "Int8",
    "TopK",
    "codec_from_config",
    "compensate",
    "decode_frame",
    "encode_with_feedback",
]
