#!/usr/bin/env python3
"""Writes small valid inputs into corpus/<target>/ so that libFuzzer starts from files latent accepts:
IDX files (raw and gzip), PNGs (gray, RGB, 16-bit), a latent checkpoint and config.json files. Any extra
image files given on the command line (e.g. a JPEG) are added to the image targets."""

import gzip
import json
import pathlib
import struct
import sys
import zlib

root = pathlib.Path(__file__).parent / "corpus"


def put(target, name, data):
    path = root / target
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_bytes(data)


def png(width, height, color_type, depth, channels):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes([0]) + bytes((x * 37) % 256 for x in range(width * channels * depth // 8))
    raw = row * height
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


images = [png(28, 28, 0, 8, 1), png(5, 7, 2, 8, 3), png(4, 4, 6, 16, 4), png(30, 20, 0, 1, 1)]
images += [pathlib.Path(p).read_bytes() for p in sys.argv[1:]]
for i, image in enumerate(images):
    for choice in range(8):
        put("image_folder", f"seed-{i}-{choice}", bytes([choice]) + image)
    put("inpaint_image", f"seed-{i}", struct.pack("<H", len(image)) + image + images[0])

idx_images = struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(range(18))
idx_labels = struct.pack(">II", 0x801, 2) + bytes([3, 7])
for name, data in [("images", idx_images), ("labels", idx_labels)]:
    put("idx", name, data)
    put("idx", name + ".gz", gzip.compress(data))

tensors = {"fc.weight": ("F32", [2, 3], struct.pack("<6f", *range(6))), "optim.step": ("I64", [], struct.pack("<q", 4))}
header, data = {}, b""
for name, (dtype, shape, values) in tensors.items():
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(values)]}
    data += values
header["__metadata__"] = {"format": "latent-checkpoint", "format_version": "1", "model": "vae", "step": "4"}
text = json.dumps(header).encode()
put("checkpoint", "vae", struct.pack("<Q", len(text)) + text + data)

common = {"epochs": 20, "steps": None, "batch": 128, "lr": 0.001, "seed": 0, "data": None,
          "adapter": "llvmpipe (vulkan, CPU)", "latent_version": "0.1.0"}
put("run_config", "vae", json.dumps({"model": "vae", **common}, indent=2).encode())
put("run_config", "ddpm", json.dumps({"model": "ddpm", **common, "steps": 1000, "data": "/data/mnist",
                                      "ddpm": {"width": 64, "groups": 8, "schedule": "cosine"}}).encode())
put("run_config", "wae", json.dumps({"model": "wae", **common, "wae": {"regularizer": "adversarial"}}).encode())
