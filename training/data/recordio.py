"""InsightFace's MXNet RecordIO (`train.rec` + `train.idx`), read and written without MXNet.

Layout, as dmlc-core's RecordIOWriter and `mxnet.recordio` write it:

- `.rec` is a sequence of frames: uint32 magic 0xced7230a, uint32 `lrec` (cflag in
  the top 3 bits, payload length in the low 29), payload, zero padding to 4 bytes.
  A payload containing the magic at a 4-byte-aligned offset is split there into
  frames with cflag 1 (first), 2 (middle), 3 (last); the magic word itself is
  dropped and restored on reading. cflag 0 is a whole record.
- `.idx` is text, one `key\\toffset\\n` line per record, offset of its first frame.
- A record is an IRHeader (struct `IfQQ`: flag, label, id, id2) and a payload. When
  `flag > 0` the label is an array of `flag` float32 values after the header (and the
  header's own label field is 0).

The face datasets (MS1MV2/V3, Glint360K, WebFace, made by `face2rec2.py`) use
record 0 as a header whose label is (first identity record, end of identity
records): images are records 1 .. label[0]-1 with their class label (a scalar, or
[label, aligned]); identity records label[0] .. label[1]-1 hold each identity's
[start, end) image range.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from training.data.images import decode_rgb
from training.data.transforms import crop_to_tensor, random_flip

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
_MAX_LENGTH = (1 << _LENGTH_BITS) - 1
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int = 0

    @property
    def labels(self) -> tuple[float, ...]:
        return self.label if isinstance(self.label, tuple) else (self.label,)


def pack(header: IRHeader, payload: bytes) -> bytes:
    """`mxnet.recordio.pack`: a tuple label is stored after the header with flag = its length."""
    if isinstance(header.label, tuple):
        extra = np.asarray(header.label, dtype="<f4").tobytes()
        head = struct.pack(_IR_FORMAT, len(header.label), 0.0, header.id, header.id2)
        return head + extra + payload
    return struct.pack(_IR_FORMAT, 0, float(header.label), header.id, header.id2) + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """`mxnet.recordio.unpack`: the inverse of `pack`."""
    if len(record) < _IR_SIZE:
        raise ValueError(f"record of {len(record)} bytes is shorter than its {_IR_SIZE}-byte header")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, record)
    body = record[_IR_SIZE:]
    if flag > 0:
        values = np.frombuffer(body, dtype="<f4", count=flag)
        return IRHeader(flag, tuple(float(v) for v in values), id_, id2), body[4 * flag :]
    return IRHeader(flag, float(label), id_, id2), body


def encode_frames(record: bytes) -> bytes:
    """One record -> its bytes in the `.rec` file, exactly as dmlc's RecordIOWriter writes them."""
    if len(record) > _MAX_LENGTH:
        raise ValueError(f"a RecordIO record holds at most {_MAX_LENGTH} bytes, got {len(record)}")
    out = bytearray()
    start = 0
    for i in range(0, len(record) - len(record) % 4, 4):
        if record[i : i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            out += _MAGIC_BYTES + struct.pack("<I", (cflag << _LENGTH_BITS) | (i - start)) + record[start:i]
            start = i + 4
    cflag = 3 if start != 0 else 0
    tail = record[start:]
    out += _MAGIC_BYTES + struct.pack("<I", (cflag << _LENGTH_BITS) | len(tail)) + tail
    out += b"\0" * (-len(record) % 4)
    return bytes(out)


def read_frames(fh: IO[bytes]) -> bytes | None:
    """Read the record starting at the current position; None at end of file."""
    parts: list[bytes] = []
    while True:
        head = fh.read(8)
        if not head:
            if parts:
                raise ValueError("RecordIO file ends inside a multi-frame record")
            return None
        if len(head) != 8:
            raise ValueError("RecordIO file is truncated (partial frame header)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise ValueError(f"bad RecordIO magic {magic:#010x} at offset {fh.tell() - 8}")
        cflag, length = lrec >> _LENGTH_BITS, lrec & _MAX_LENGTH
        data = fh.read(length + (-length % 4))
        if len(data) < length:
            raise ValueError("RecordIO file is truncated (partial payload)")
        parts.append(data[:length])
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def read_index(path: Path) -> dict[int, int]:
    """`.idx` text -> {key: byte offset}, in file order."""
    index: dict[int, int] = {}
    with open(path) as fh:
        for line_no, line in enumerate(fh, 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{line_no}: expected 'key<TAB>offset', got {line!r}")
            index[int(fields[0])] = int(fields[1])
    return index


class IndexedRecordReader:
    """Random access to records by key. The file handle opens lazily, per process (DataLoader workers)."""

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        self.index = read_index(self.idx_path)
        self._fh: IO[bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fh"] = None
        return state

    def __contains__(self, key: int) -> bool:
        return key in self.index

    def read(self, key: int) -> bytes:
        if self._fh is None:
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115 - kept open for random access
        self._fh.seek(self.index[key])
        record = read_frames(self._fh)
        if record is None:
            raise ValueError(f"{self.rec_path}: index points past the end of the file for key {key}")
        return record

    def header(self, key: int) -> IRHeader:
        return unpack(self.read(key))[0]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class IndexedRecordWriter:
    """`MXIndexedRecordIO(idx, rec, "w").write_idx(key, record)`, byte for byte."""

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self._rec = open(rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(idx_path, "w")  # noqa: SIM115
        self.keys: list[int] = []

    def write(self, key: int, record: bytes) -> None:
        offset = self._rec.tell()
        self._rec.write(encode_frames(record))
        self._idx.write(f"{key}\t{offset}\n")
        self.keys.append(key)

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> IndexedRecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_face_records(
    out_dir: Path,
    identities: Iterable[Sequence[bytes]],
    *,
    name: str = "train",
    label_width: int = 1,
) -> tuple[int, int]:
    """Write encoded images grouped by identity (label = position) as `face2rec2.py` does.

    Images get keys 1..N, record 0 the (N+1, N+1+K) header, then one [start, end)
    record per identity. File order follows face2rec2: images, header, identities.
    `label_width=2` stores image labels as [label, 1.0] ("aligned"), as face2rec2
    does; 1 stores a scalar label. Returns (number of images, number of identities).
    """
    if label_width not in (1, 2):
        raise ValueError("label_width is 1 (scalar label) or 2 ([label, aligned])")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranges: list[tuple[int, int]] = []
    key = 1
    with IndexedRecordWriter(out_dir / f"{name}.rec", out_dir / f"{name}.idx") as writer:
        for label, images in enumerate(identities):
            start = key
            for payload in images:
                value: float | tuple[float, ...] = float(label) if label_width == 1 else (float(label), 1.0)
                writer.write(key, pack(IRHeader(0, value, key), payload))
                key += 1
            if key == start:
                raise ValueError(f"identity {label} has no images")
            ranges.append((start, key))
        end = key
        writer.write(0, pack(IRHeader(0, (float(end), float(end + len(ranges))), 0), b""))
        for start, stop in ranges:
            writer.write(key, pack(IRHeader(0, (float(start), float(stop)), key), b""))
            key += 1
    return end - 1, len(ranges)


@dataclass(frozen=True)
class FaceRecordLayout:
    """What record 0 says: image keys and (when present) identity [start, end) ranges."""

    image_keys: NDArray[np.int64]
    identity_ranges: list[tuple[int, int]]


def read_layout(reader: IndexedRecordReader) -> FaceRecordLayout:
    header = reader.header(0) if 0 in reader else None
    if header is not None and header.flag > 0:
        first_identity, end_identity = (int(v) for v in header.labels[:2])
        image_keys = np.arange(1, first_identity, dtype=np.int64)
        ranges = []
        for key in range(first_identity, end_identity):
            if key in reader:
                lo, hi = reader.header(key).labels[:2]
                ranges.append((int(lo), int(hi)))
        return FaceRecordLayout(image_keys, ranges)
    # A plain image list without the face header (arcface_torch falls back to all keys).
    return FaceRecordLayout(np.array(sorted(reader.index), dtype=np.int64), [])


def image_label(header: IRHeader) -> int:
    """The class of an image record: the scalar label, or the first value of an array label."""
    return int(header.labels[0])


def read_image(reader: IndexedRecordReader, key: int) -> tuple[NDArray[np.uint8], int]:
    header, payload = unpack(reader.read(key))
    return decode_rgb(payload), image_label(header)


class RecordIODataset(Dataset[tuple[torch.Tensor, int]]):
    """`train.rec` + `train.idx` in `root` as (3, 112, 112) tensors in [-1, 1] and int labels."""

    def __init__(self, root: Path, *, flip: bool = False, name: str = "train") -> None:
        root = Path(root)
        self.reader = IndexedRecordReader(root / f"{name}.rec", root / f"{name}.idx")
        layout = read_layout(self.reader)
        self.keys = layout.image_keys
        self.flip = flip
        if layout.identity_ranges:
            self.num_classes = len(layout.identity_ranges)
        else:
            # No identity records: the labels themselves are the only source (one pass over headers).
            self.num_classes = 1 + max(image_label(self.reader.header(int(k))) for k in self.keys)
        self.reader.close()

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb, label = read_image(self.reader, int(self.keys[index]))
        return crop_to_tensor(rgb, flip=random_flip(self.flip)), label
