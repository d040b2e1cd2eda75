// Unit tests of the file readers (no server): node --test test/
"use strict";

const assert = require("node:assert/strict");
const test = require("node:test");
const { readNpy, readRaw, splitBySize, StedqError } = require("../stedq_client");

// A .npy (format 1.0) buffer as numpy writes it: magic, version, header length, dict header, data.
function npy(descr, shape, data) {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
  const prefix = Buffer.alloc(10);
  Buffer.from("\x93NUMPY", "latin1").copy(prefix);
  prefix[6] = 1;
  prefix.writeUInt16LE(header.length, 8);
  return Buffer.concat([prefix, Buffer.from(header, "latin1"), data]);
}

test("uint16 stacks become one image per frame, little-endian bytes kept", () => {
  const pixels = Buffer.alloc(2 * 3 * 4 * 2);
  for (let i = 0; i < 24; i += 1) pixels.writeUInt16LE(i * 1000, 2 * i);
  const images = readNpy(npy("<u2", [2, 3, 4], pixels), "stack.npy");
  assert.equal(images.length, 2);
  assert.deepEqual([images[1].height, images[1].width, images[1].dtype], [3, 4, "uint16"]);
  assert.equal(images[1].data.readUInt16LE(0), 12000);
});

test("a single float32 image", () => {
  const images = readNpy(npy("<f4", [2, 2], Buffer.alloc(16)), "one.npy");
  assert.equal(images.length, 1);
  assert.equal(images[0].dtype, "float32");
});

test("unsupported dtypes, shapes and truncated data are errors naming the file", () => {
  assert.throws(() => readNpy(npy("<i8", [2, 2], Buffer.alloc(32)), "counts.npy"), /counts.npy: dtype <i8 not supported/);
  assert.throws(() => readNpy(npy("<u2", [4], Buffer.alloc(8)), "line.npy"), /line.npy: expected an H×W image/);
  assert.throws(() => readNpy(npy("<u2", [2, 2], Buffer.alloc(6)), "short.npy"), /short.npy: 6 data bytes, expected 8/);
  assert.throws(() => readNpy(Buffer.from("not numpy"), "text.npy"), /text.npy: not a .npy file/);
});

test("raw files split into frames of the given size", () => {
  assert.equal(readRaw(Buffer.alloc(2 * 2 * 2 * 3), { height: 2, width: 2, dtype: "uint16" }).length, 3);
  assert.throws(() => readRaw(Buffer.alloc(7), { height: 2, width: 2, dtype: "uint16" }, "cam.raw"), /cam.raw: 7 bytes/);
});

test("errors carry the gRPC code name", () => {
  const error = new StedqError(3, "image too small", "host:1");
  assert.equal(error.codeName, "INVALID_ARGUMENT");
  assert.match(error.message, /^INVALID_ARGUMENT \(host:1\): image too small$/);
});

test("batches are split under the message limit, in order", () => {
  const images = Array.from({ length: 10 }, (_, i) => ({ data: Buffer.alloc(40000, i), dtype: "uint8", height: 200, width: 200 }));
  const chunks = splitBySize(images, 64 * 1024 + 100000);
  assert.deepEqual(chunks.map((c) => c.length), [2, 2, 2, 2, 2]);
  assert.deepEqual(chunks.flat().map((im) => im.data[0]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(splitBySize(images, 64 * 1024 * 1024).length, 1);
  assert.throws(() => splitBySize(images, 64 * 1024 + 1000), /image 0 \(200x200\) exceeds/);
});

test("pixel contract: ImageJ calibration, int16/uint32 .npy, float intensity", () => {
  const { calibrate, imagejCalibration } = require("../pixels");
  assert.deepEqual(imagejCalibration("ImageJ=1.52e\ncf=0\nc0=-32768.0\nc1=1.0\n", "f.tif"), { offset: -32768, slope: 1 });
  assert.equal(imagejCalibration("ImageJ=1.52e\nunit=micron\n", "f.tif"), null);
  assert.throws(() => imagejCalibration("ImageJ=1.52e\ncf=3\nc0=1\n", "f.tif"), /f.tif: ImageJ calibration function 3/);
  const stored = Buffer.alloc(4);
  stored.writeUInt16LE(32768, 0);
  stored.writeUInt16LE(32800, 2);
  const counts = calibrate({ data: stored, dtype: "uint16", height: 1, width: 2 }, -32768, 1);
  assert.deepEqual([counts.dtype, counts.data.readUInt16LE(0), counts.data.readUInt16LE(2), counts.intensity],
    ["uint16", 0, 32, "counts"]);
  const int16 = Buffer.alloc(8);
  int16.writeInt16LE(-3, 0);
  assert.equal(readNpy(npy("<i2", [2, 2], int16), "s.npy")[0].dtype, "int16");
  assert.equal(readNpy(npy("<u4", [1, 2], Buffer.alloc(8)), "u.npy")[0].dtype, "uint32");
  const floats = Buffer.alloc(8);
  floats.writeFloatLE(0.5, 0);
  assert.equal(readNpy(npy("<f4", [1, 2], floats), "f.npy")[0].intensity, "model_scale");
  floats.writeFloatLE(12, 4);
  assert.equal(readNpy(npy("<f4", [1, 2], floats), "f.npy")[0].intensity, "counts");
});
