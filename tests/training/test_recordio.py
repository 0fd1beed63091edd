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
    RecordIODataset,
    encode_frames,
    pack,
    read_frames,
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
    assert read_layout(reader).identity_ranges == [(1, 4), (4, 5), (5, 7)]
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
