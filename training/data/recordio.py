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

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

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


class RecordIndex:
    """The `.idx` as two int64 arrays sorted by key: about 16 bytes a record, shared by forked workers.

    A Python dict of 42M keys costs about 4.5 GiB in every process; two numpy arrays
    are 0.67 GB, and forked DataLoader workers share their pages (no refcounts touch them).
    """

    def __init__(self, keys: NDArray[np.int64], offsets: NDArray[np.int64]) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = np.ascontiguousarray(keys[order])
        self.offsets = np.ascontiguousarray(offsets[order])
        if len(self.keys) > 1 and bool((self.keys[1:] == self.keys[:-1]).any()):
            raise ValueError("the .idx lists a key twice")

    def _find(self, key: int) -> int:
        i = int(np.searchsorted(self.keys, key))
        return i if i < len(self.keys) and int(self.keys[i]) == key else -1

    def __contains__(self, key: int) -> bool:
        return self._find(key) >= 0

    def __getitem__(self, key: int) -> int:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        return int(self.offsets[i])

    def __len__(self) -> int:
        return len(self.keys)

    def count_between(self, lo: int, hi: int) -> int:
        """How many keys lie in [lo, hi)."""
        return int(np.searchsorted(self.keys, hi) - np.searchsorted(self.keys, lo))


_INDEX_CHUNK = 1 << 22  # bytes of .idx text parsed at a time


def read_index(path: Path) -> RecordIndex:
    """`.idx` text (`key<TAB>offset` lines) -> a `RecordIndex`, parsed in chunks with numpy."""
    keys: list[NDArray[np.int64]] = []
    offsets: list[NDArray[np.int64]] = []
    line_no = 0
    with open(path, "rb") as fh:
        while True:
            lines = fh.readlines(_INDEX_CHUNK)
            if not lines:
                break
            chunk = b"".join(lines)
            tokens = chunk.split()
            if len(tokens) % 2 or chunk.count(b"\t") != len(tokens) // 2:
                for i, line in enumerate(lines, line_no + 1):
                    if line.strip() and len(line.strip().split(b"\t")) != 2:
                        raise ValueError(
                            f"{path}:{i}: expected 'key<TAB>offset', got {line.decode(errors='replace')!r}"
                        )
            try:
                pairs = np.array(tokens, dtype=np.bytes_).astype(np.int64).reshape(-1, 2)
            except ValueError as error:
                raise ValueError(f"{path}: after line {line_no}: expected integer 'key<TAB>offset' lines") from error
            keys.append(pairs[:, 0])
            offsets.append(pairs[:, 1])
            line_no += len(lines)
    empty = np.zeros(0, dtype=np.int64)
    return RecordIndex(np.concatenate(keys) if keys else empty, np.concatenate(offsets) if offsets else empty)


class IndexedRecordReader:
    """Random access to records by key.

    The file handle opens lazily and reopens in a new process: a handle inherited through
    fork shares its offset with the parent, and two processes seeking it read each
    other's frames ("bad RecordIO magic").
    """

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        self.index = read_index(self.idx_path)
        self._fh: IO[bytes] | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fh"] = None
        return state

    def __contains__(self, key: int) -> bool:
        return key in self.index

    def read(self, key: int) -> bytes:
        if self._fh is None or self._pid != os.getpid():
            # After a fork the inherited handle is left alone (closing it is harmless but not needed).
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115 - kept open for random access
            self._pid = os.getpid()
        self._fh.seek(self.index[key])
        record = read_frames(self._fh)
        if record is None:
            raise ValueError(f"{self.rec_path}: index points past the end of the file for key {key}")
        return record

    def header(self, key: int) -> IRHeader:
        return unpack(self.read(key))[0]

    def close(self) -> None:
        if self._fh is not None:
            if self._pid == os.getpid():
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
        for header_key, record in face_header_records(ranges):
            writer.write(header_key, record)
    return key - 1, len(ranges)


def face_header_records(ranges: Sequence[tuple[int, int]]) -> Iterable[tuple[int, bytes]]:
    """Record 0 and the identity records for images 1..N grouped into `ranges`, in face2rec2's order.

    The format stores these integers as float32, exact only up to 2^24: past that they
    are rounded (42474559 is stored as 42474560). `read_layout` recovers the exact keys
    from the records themselves, so the files stay byte-compatible with InsightFace's.
    """
    end = ranges[-1][1] if ranges else 1
    yield 0, pack(IRHeader(0, (float(end), float(end + len(ranges))), 0), b"")
    for i, (start, stop) in enumerate(ranges):
        yield end + i, pack(IRHeader(0, (float(start), float(stop)), end + i), b"")


@dataclass(frozen=True)
class FaceRecordLayout:
    """What record 0 says: the image keys, and how many identity records follow them."""

    image_keys: NDArray[np.int64]
    num_identities: int  # 0 for a plain image list without the face header


_EXACT_FLOAT32 = 1 << 24  # every integer up to this is exact in float32


class _Reader(Protocol):
    index: RecordIndex

    def read(self, key: int) -> bytes: ...


def _is_identity_record(reader: _Reader, key: int) -> bool:
    """An identity record: an array label ([start, end)) and no image after the header."""
    if key not in reader.index:
        return False
    header, payload = unpack(reader.read(key))
    return header.flag >= 2 and not payload


def _exact_key(reader: _Reader, stored: float, *, last: bool) -> int:
    """The integer a float32 header field meant: the first (or, with `last`, one past the last)
    identity record within the rounding window around `stored`."""
    if stored < _EXACT_FLOAT32:
        return int(stored)
    radius = int(np.spacing(np.float32(stored)))  # rounding moved it by at most half of this
    window = range(int(stored) - radius, int(stored) + radius + 1)
    found = [key for key in window if _is_identity_record(reader, key)]
    if not found:
        raise ValueError(f"no identity record near key {int(stored)}: the .rec header does not match its index")
    return found[-1] + 1 if last else found[0]


def read_layout(reader: _Reader) -> FaceRecordLayout:
    """Image keys 1 .. first_identity-1 and the identity count, exact past 2^24 images."""
    if 0 in reader.index:
        header = unpack(reader.read(0))[0]
        if header.flag > 0:
            first_identity = _exact_key(reader, header.labels[0], last=False)
            end_identity = _exact_key(reader, header.labels[1], last=True)
            image_keys = np.arange(1, first_identity, dtype=np.int64)
            return FaceRecordLayout(image_keys, reader.index.count_between(first_identity, end_identity))
    # A plain image list without the face header (arcface_torch falls back to all keys).
    return FaceRecordLayout(reader.index.keys.copy(), 0)


def image_label(header: IRHeader) -> int:
    """The class of an image record: the scalar label, or the first value of an array label."""
    return int(header.labels[0])


def read_image(reader: IndexedRecordReader, key: int) -> tuple[NDArray[np.uint8], int]:
    header, payload = unpack(reader.read(key))
    return decode_rgb(payload), image_label(header)


class RecordIODataset(Dataset[tuple[torch.Tensor, int]]):
    """`train.rec` + `train.idx` in `root` as (3, 112, 112) tensors in [-1, 1] and int labels.

    `num_classes` comes from the identity records; a `.rec` without them is read in full
    to find the largest label, unless the caller passes `num_classes` (under DDP rank 0
    counts once and shares the figure).
    """

    def __init__(self, root: Path, *, flip: bool = False, name: str = "train", num_classes: int | None = None) -> None:
        root = Path(root)
        self.reader = IndexedRecordReader(root / f"{name}.rec", root / f"{name}.idx")
        layout = read_layout(self.reader)
        self.keys = layout.image_keys
        self.flip = flip
        if num_classes is not None:
            self.num_classes = num_classes
        elif layout.num_identities:
            self.num_classes = layout.num_identities
        else:
            # No identity records: the labels themselves are the only source (one pass over headers).
            self.num_classes = 1 + max(image_label(self.reader.header(int(k))) for k in self.keys)
        self.reader.close()

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb, label = read_image(self.reader, int(self.keys[index]))
        return crop_to_tensor(rgb, flip=random_flip(self.flip)), label
