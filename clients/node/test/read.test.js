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
