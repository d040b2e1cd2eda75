// The pixel contract (stedq/pixels.py and stedq/files.py, the same rule in JavaScript): integer pixels
// are photon counts whatever their width; float32 pixels are on the model's scale (counts / 65535, in
// [0, 1]) unless they cannot be (values outside [0, 1]: counts); a file's ImageJ calibration
// (value = c0 + c1 * stored) is applied when the file is read. tests/test_pixel_contract.py scores the
// same table of files through this client and the Python ones.
"use strict";

const WIRE = {  // dtype -> [bytes per pixel, little-endian reader, writer]
  uint8: [1, (b, i) => b.readUInt8(i), (b, v, i) => b.writeUInt8(v, i)],
  uint16: [2, (b, i) => b.readUInt16LE(i), (b, v, i) => b.writeUInt16LE(v, i)],
  int16: [2, (b, i) => b.readInt16LE(i), (b, v, i) => b.writeInt16LE(v, i)],
  uint32: [4, (b, i) => b.readUInt32LE(i), (b, v, i) => b.writeUInt32LE(v, i)],
  float32: [4, (b, i) => b.readFloatLE(i), (b, v, i) => b.writeFloatLE(v, i)],
};
const ITEM_SIZE = Object.fromEntries(Object.entries(WIRE).map(([name, [size]]) => [name, size]));
// Where integers that fit no narrower dtype go, in stedq.pixels.to_wire_array's order.
const INTEGER_TARGETS = [["uint16", 0, 65535], ["int16", -32768, 32767], ["uint32", 0, 4294967295]];

function values(image) {
  const [size, read] = WIRE[image.dtype];
  return Float64Array.from({ length: image.data.length / size }, (_, k) => read(image.data, k * size));
}

function encode(numbers, dtype) {
  const [size, , write] = WIRE[dtype];
  const data = Buffer.alloc(numbers.length * size);
  numbers.forEach((v, k) => write(data, v, k * size));
  return data;
}

// What a float32 image means: model scale when every value is in [0, 1], else counts.
function floatIntensity(image) {
  const all = values(image);
  for (const v of all) {
    if (!Number.isFinite(v)) throw new Error("float image contains NaN or infinity");
  }
  return all.every((v) => v >= 0 && v <= 1) ? "model_scale" : "counts";
}

// An image with the ImageJ straight-line calibration applied: counts in a wire dtype.
function calibrate(image, offset, slope) {
  if (offset === 0 && slope === 1) return image;
  const counts = values(image).map((v) => offset + slope * v);
  if (image.dtype !== "float32" && Number.isInteger(offset) && Number.isInteger(slope)) {
    let low = Infinity, high = -Infinity;
    for (const v of counts) { low = Math.min(low, v); high = Math.max(high, v); }
    const target = INTEGER_TARGETS.find(([, min, max]) => low >= min && high <= max);
    if (!target) throw new Error(`calibrated values in [${low}, ${high}] fit none of uint16, int16, uint32`);
    return { ...image, data: encode(counts, target[0]), dtype: target[0], intensity: "counts" };
  }
  return { ...image, data: encode(counts, "float32"), dtype: "float32", intensity: "counts" };
}

// ImageJ's calibration from its image description ("c0=-32768.0\nc1=1.0\ncf=0"), null when none.
function imagejCalibration(description, where) {
  if (!description || !description.startsWith("ImageJ=")) return null;
  const field = (key) => {
    const match = new RegExp(`^${key}=(.*)$`, "m").exec(description);
    return match ? Number(match[1]) : null;
  };
  const [c0, c1, cf] = [field("c0"), field("c1"), field("cf")];
  if (c0 === null && c1 === null) return null;
  if ((cf ?? 0) !== 0) throw new Error(`${where}: ImageJ calibration function ${cf} is not a straight line`);
  return { offset: c0 ?? 0, slope: c1 ?? 1 };
}

module.exports = { ITEM_SIZE, calibrate, floatIntensity, imagejCalibration };
