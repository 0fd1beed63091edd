from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.data.images import encode_rgb  # noqa: E402
from training.data.recordio import (  # noqa: E402
    MAGIC,
    IndexedRecordReader,
    IRHeader,
    RecordIndex,
    RecordIODataset,
    encode_frames,
    face_header_records,
    pack,
    read_frames,
    read_index,
    read_layout,
    unpack,
    write_face_records,
)


def _crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def test_pack_matches_the_mxnet_byte_layout() -> None:
    assert pack(IRHeader(0, 7.0, 42), b"JPEG") == struct.pack("<IfQQ", 0, 7.0, 42, 0) + b"JPEG"
    packed = pack(IRHeader(0, (3.0, 5.0), 0), b"")
    assert packed == struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 3.0, 5.0)
    header, payload = unpack(packed)
    assert (header.flag, header.label, payload) == (2, (3.0, 5.0), b"")


def test_frame_is_magic_length_payload_and_padding() -> None:
    assert encode_frames(b"abcde") == struct.pack("<II", MAGIC, 5) + b"abcde" + b"\0\0\0"
    assert encode_frames(b"abcd") == struct.pack("<II", MAGIC, 4) + b"abcd"


def test_payload_containing_the_magic_is_split_and_restored(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    record = b"head" + magic + b"middle!!" + magic + b"tail1"
    frames = encode_frames(record)
    # dmlc splits at each aligned magic: cflag 1, then 2, then 3 (in the top 3 bits).
    assert struct.unpack_from("<II", frames, 0) == (MAGIC, (1 << 29) | 4)
    assert struct.unpack_from("<II", frames, 12) == (MAGIC, (2 << 29) | 8)
    assert struct.unpack_from("<II", frames, 28) == (MAGIC, (3 << 29) | 5)
    path = tmp_path / "x.rec"
    path.write_bytes(frames + encode_frames(b"next"))
    with open(path, "rb") as fh:
        assert read_frames(fh) == record
        assert read_frames(fh) == b"next"
        assert read_frames(fh) is None


@pytest.mark.parametrize("label_width", [1, 2])
def test_face_rec_round_trip_in_insightface_layout(tmp_path: Path, label_width: int) -> None:
    crops = [[_crop(10 * c + i) for i in range(n)] for c, n in enumerate([3, 1, 2])]
    groups = [[encode_rgb(c, ".png") for c in group] for group in crops]
    assert write_face_records(tmp_path, groups, label_width=label_width) == (6, 3)

    lines = (tmp_path / "train.idx").read_text().splitlines()
    keys = [int(line.split("\t")[0]) for line in lines]
    assert keys == [1, 2, 3, 4, 5, 6, 0, 7, 8, 9]  # face2rec2's order: images, header, identities
    reader = IndexedRecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    header0 = reader.header(0)
    assert header0.flag == 2
    assert header0.labels == (7.0, 10.0)
    assert [reader.header(k).labels for k in (7, 8, 9)] == [(1.0, 4.0), (4.0, 5.0), (5.0, 7.0)]
    assert read_layout(reader).num_identities == 3
    np.testing.assert_array_equal(read_layout(reader).image_keys, np.arange(1, 7))
    image_header = reader.header(5)
    assert image_header.flag == (0 if label_width == 1 else 2)
    assert image_header.labels[0] == 2.0
    assert image_header.id == 5

    dataset = RecordIODataset(tmp_path)
    assert (len(dataset), dataset.num_classes) == (6, 3)
    expected = [c for group in crops for c in group]
    for index, label in enumerate([0, 0, 0, 1, 2, 2]):
        tensor, got = dataset[index]
        assert got == label
        assert tensor.shape == (3, 112, 112)
        back = np.round(tensor.numpy().transpose(1, 2, 0) * 127.5 + 127.5).astype(np.uint8)
        np.testing.assert_array_equal(back, expected[index])


def test_rec_without_header_record_uses_labels(tmp_path: Path) -> None:
    from training.data.recordio import IndexedRecordWriter

    with IndexedRecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        for key, label in enumerate([0, 4, 2]):
            writer.write(key, pack(IRHeader(0, float(label), key), encode_rgb(_crop(key))))
    dataset = RecordIODataset(tmp_path)
    assert (len(dataset), dataset.num_classes) == (3, 5)
    assert [dataset[i][1] for i in range(3)] == [0, 4, 2]
    # Under DDP rank 0 counts and the other ranks are told: no second pass over the headers.
    told = RecordIODataset(tmp_path, num_classes=5)
    assert told.num_classes == 5


class _Ranges:
    """WebFace42M's shape without its size: identity i is one image, the first one takes the rest."""

    def __init__(self, first_identity: int, identities: int) -> None:
        self.first, self.count = first_identity, identities

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, int]:
        i = i % self.count
        bulk_end = self.first - (self.count - 1)
        return (1, bulk_end) if i == 0 else (bulk_end + i - 1, bulk_end + i)


class _RangeIndex(RecordIndex):
    """Keys 0 .. end-1, without 44M offsets in memory."""

    def __init__(self, end: int) -> None:
        self.end = end
        self.keys = np.arange(0, 0, dtype=np.int64)

    def __contains__(self, key: int) -> bool:
        return 0 <= key < self.end

    def count_between(self, lo: int, hi: int) -> int:
        return max(0, min(hi, self.end) - max(lo, 0))


class _HugeRec:
    """A face .rec past 2^24 images, its records made on demand with the writer's own header records."""

    def __init__(self, first_identity: int, identities: int) -> None:
        self.ranges = _Ranges(first_identity, identities)
        self.first, self.end = first_identity, first_identity + identities
        self.index = _RangeIndex(self.end)

    def read(self, key: int) -> bytes:
        if key == 0:
            return next(iter(face_header_records(self.ranges)))[1]  # type: ignore[arg-type]
        if key < self.first:
            return pack(IRHeader(0, 0.0, key), b"JPEG")  # an image
        start, stop = self.ranges[key - self.first]
        return pack(IRHeader(0, (float(start), float(stop)), key), b"")


@pytest.mark.parametrize(("first", "identities"), [(42_474_559, 2_059_906), ((1 << 24) + 3, 5), (1 << 24, 1)])
def test_layout_is_exact_past_2_to_the_24_images(first: int, identities: int) -> None:
    rec = _HugeRec(first, identities)
    header = unpack(rec.read(0))[0]
    if first == 42_474_559:  # the numbers: float32 cannot hold them
        assert header.labels == (42_474_560.0, 44_534_464.0)
    layout = read_layout(rec)  # type: ignore[arg-type]
    assert layout.num_identities == identities  # was 2 short: labels out of range on the GPU
    assert len(layout.image_keys) == first - 1
    assert (int(layout.image_keys[0]), int(layout.image_keys[-1])) == (1, first - 1)


def test_index_is_arrays_sorted_by_key(tmp_path: Path) -> None:
    (tmp_path / "x.idx").write_text("3\t40\n1\t0\n\n2\t16\n")
    index = read_index(tmp_path / "x.idx")
    assert index.keys.dtype == np.int64 and index.keys.tolist() == [1, 2, 3]
    assert (index[3], 2 in index, 5 in index, len(index)) == (40, True, False, 3)
    (tmp_path / "bad.idx").write_text("1\t0\n2 16 3\n")
    with pytest.raises(ValueError, match=r"bad\.idx:2"):
        read_index(tmp_path / "bad.idx")


def _read_in_child(reader: IndexedRecordReader, key: int, out: object) -> None:
    out.put(unpack(reader.read(key))[0].id)  # type: ignore[attr-defined]


def test_forked_worker_does_not_move_the_parents_file_offset(tmp_path: Path) -> None:
    import multiprocessing
    import os

    groups = [[encode_rgb(_crop(i), ".png")] for i in range(4)]
    write_face_records(tmp_path, groups)
    reader = IndexedRecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    assert reader.header(1).id == 1  # the parent opens the file before the workers fork
    fd = reader._fh.fileno()  # type: ignore[union-attr]
    position = os.lseek(fd, 0, os.SEEK_CUR)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(reader, 4, queue))
    child.start()
    assert queue.get(timeout=60) == 4
    child.join(timeout=60)
    assert os.lseek(fd, 0, os.SEEK_CUR) == position  # a shared handle would have moved it
    assert [reader.header(k).id for k in (2, 3, 4)] == [2, 3, 4]
