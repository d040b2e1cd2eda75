// A small TIFF reader for single-channel microscopy images: baseline and multi-page files, little- or
// big-endian, uncompressed, LZW (Fiji's default) or deflate (zlib), horizontal-difference predictor,
// strips or tiles of uint8, uint16, int16, uint32 or float32 samples. Anything else is refused clearly.
// An ImageJ calibration in the description is applied (pixels.js: the pixel contract).
"use strict";

const zlib = require("node:zlib");
const { calibrate, floatIntensity, imagejCalibration } = require("./pixels");

const TAG = {
  width: 256, height: 257, bitsPerSample: 258, compression: 259, stripOffsets: 273, samplesPerPixel: 277,
  rowsPerStrip: 278, stripByteCounts: 279, planarConfig: 284, predictor: 317, tileWidth: 322,
  tileLength: 323, tileOffsets: 324, tileByteCounts: 325, sampleFormat: 339, description: 270,
};
const ASCII = 2;
const TYPE_SIZE = { 1: 1, 3: 2, 4: 4, 16: 8 };  // BYTE, SHORT, LONG, LONG8 (BigTIFF)

function readTiff(buffer, name = "image.tif") {
  const order = buffer.toString("latin1", 0, 2);
  if (order !== "II" && order !== "MM") throw new Error(`${name}: not a TIFF file`);
  const little = order === "II";
  const u16 = (at) => (little ? buffer.readUInt16LE(at) : buffer.readUInt16BE(at));
  const u32 = (at) => (little ? buffer.readUInt32LE(at) : buffer.readUInt32BE(at));
  const u64 = (at) => Number(little ? buffer.readBigUInt64LE(at) : buffer.readBigUInt64BE(at));
  const magic = u16(2);
  if (magic !== 42 && magic !== 43) throw new Error(`${name}: not a TIFF file (version ${magic})`);
  const big = magic === 43;  // BigTIFF: 8-byte offsets and counts

  const images = [];
  const seen = new Set();
  let calibration = null;
  let ifd = big ? u64(8) : u32(4);
  while (ifd !== 0) {
    if (seen.has(ifd) || ifd >= buffer.length) throw new Error(`${name}: corrupt page chain`);
    seen.add(ifd);
    const count = big ? u64(ifd) : u16(ifd);
    const entrySize = big ? 20 : 12;
    const first = ifd + (big ? 8 : 2);
    const tags = {};
    for (let i = 0; i < count; i += 1) {
      const at = first + i * entrySize;
      const [tag, type] = [u16(at), u16(at + 2)];
      const n = big ? u64(at + 4) : u32(at + 4);
      if (type === ASCII && tag === TAG.description) {
        const start = n <= (big ? 8 : 4) ? at + (big ? 12 : 8) : (big ? u64(at + 12) : u32(at + 8));
        tags[tag] = [buffer.toString("latin1", start, start + n).replace(/\0+$/, "")];
        continue;
      }
      const size = TYPE_SIZE[type];
      if (!size) continue;  // tags we do not read (other text, rationals...)
      const inline = n * size <= (big ? 8 : 4);
      const start = inline ? at + (big ? 12 : 8) : (big ? u64(at + 12) : u32(at + 8));
      const read = { 1: (p) => buffer[p], 3: u16, 4: u32, 16: u64 }[type];
      tags[tag] = Array.from({ length: n }, (_, k) => read(start + k * size));
    }
    if (images.length === 0) calibration = imagejCalibration(tags[TAG.description]?.[0], name);
    images.push(decodePage(buffer, tags, little, `${name}[page ${images.length}]`));
    const next = first + count * entrySize;
    ifd = big ? u64(next) : u32(next);
  }
  return images.map((image) => {
    const counts = calibration ? calibrate(image, calibration.offset, calibration.slope) : image;
    if (counts.dtype !== "float32" || counts.intensity) return counts;
    try {
      return { ...counts, intensity: floatIntensity(counts) };
    } catch (error) {
      throw new Error(`${name}: ${error.message}`);
    }
  });
}

function decodePage(buffer, tags, little, where) {
  const get = (tag, fallback) => (tags[tag] ? tags[tag][0] : fallback);
  const width = get(TAG.width), height = get(TAG.height);
  const bits = get(TAG.bitsPerSample, 1), format = get(TAG.sampleFormat, 1);
  const compression = get(TAG.compression, 1), predictor = get(TAG.predictor, 1);
  if (get(TAG.samplesPerPixel, 1) !== 1) throw new Error(`${where}: colour TIFF; send one grey channel`);
  const dtype = { "8,1": "uint8", "16,1": "uint16", "16,2": "int16", "32,1": "uint32", "32,3": "float32" }[`${bits},${format}`];
  if (!dtype) {
    throw new Error(`${where}: ${bits}-bit sample format ${format} not supported (uint8, uint16, int16, uint32, float32)`);
  }
  if (![1, 5, 8, 32946].includes(compression)) {
    throw new Error(`${where}: compression ${compression} not supported (none, LZW or deflate)`);
  }
  if (![1, 2].includes(predictor) || (predictor === 2 && dtype === "float32")) {
    throw new Error(`${where}: predictor ${predictor} not supported for ${dtype}`);
  }
  const item = bits / 8;
  const tiled = Boolean(tags[TAG.tileOffsets]);
  const blockWidth = tiled ? get(TAG.tileWidth) : width;
  const blockHeight = tiled ? get(TAG.tileLength) : get(TAG.rowsPerStrip, height);
  const offsets = tiled ? tags[TAG.tileOffsets] : tags[TAG.stripOffsets];
  const counts = tiled ? tags[TAG.tileByteCounts] : tags[TAG.stripByteCounts];
  if (!width || !height || !offsets || !counts) throw new Error(`${where}: missing size or data tags`);
  const across = Math.ceil(width / blockWidth);
  const out = Buffer.alloc(width * height * item);  // little-endian, what the stedq wire format wants
  offsets.forEach((offset, index) => {
    let block = buffer.subarray(offset, offset + counts[index]);
    if (compression === 5) block = lzwDecode(block, blockWidth * blockHeight * item, where);
    else if (compression !== 1) block = zlib.inflateSync(block);
    const rowBytes = blockWidth * item;
    const top = Math.floor(index / across) * blockHeight, left = (index % across) * blockWidth;
    for (let row = 0; row < blockHeight && top + row < height; row += 1) {
      const line = Buffer.from(block.subarray(row * rowBytes, (row + 1) * rowBytes));
      if (line.length < rowBytes) throw new Error(`${where}: truncated image data`);
      if (!little && item === 2) line.swap16();
      if (!little && item === 4) line.swap32();
      if (predictor === 2) undoDifferencing(line, item);
      const columns = Math.min(blockWidth, width - left);
      line.copy(out, ((top + row) * width + left) * item, 0, columns * item);
    }
  });
  return { data: out, dtype, height, width };
}

// TIFF's LZW: codes of 9 to 12 bits, most significant bit first, 256 = clear, 257 = end, and the code
// width grows one code early (TIFF 6.0, section 13).
function lzwDecode(input, expected, where) {
  const out = Buffer.alloc(expected);
  let written = 0, bit = 0, width = 9, previous = null;
  let table = [];
  const reset = () => { table = Array.from({ length: 258 }, (_, i) => [i]); width = 9; previous = null; };
  const emit = (entry) => {
    for (const value of entry) if (written < expected) out[written++] = value;
  };
  reset();
  while (bit + width <= input.length * 8) {
    let code = 0;
    for (let i = 0; i < width; i += 1, bit += 1) code = (code << 1) | ((input[bit >> 3] >> (7 - (bit & 7))) & 1);
    if (code === 257) break;
    if (code === 256) { reset(); continue; }
    let entry;
    if (code < table.length) {
      entry = table[code];
      if (previous) table.push(previous.concat(entry[0]));
    } else if (previous && code === table.length) {
      entry = previous.concat(previous[0]);
      table.push(entry);
    } else {
      throw new Error(`${where}: corrupt LZW data`);
    }
    emit(entry);
    previous = entry;
    if (table.length + 1 >= 1 << width && width < 12) width += 1;
  }
  return out.subarray(0, written);
}

// Predictor 2: each sample was stored as the difference to its left neighbour (modulo 2^bits).
function undoDifferencing(line, item) {
  if (item === 1) {
    for (let i = 1; i < line.length; i += 1) line[i] = (line[i] + line[i - 1]) & 0xff;
  } else if (item === 2) {
    for (let i = 2; i < line.length; i += 2) line.writeUInt16LE((line.readUInt16LE(i) + line.readUInt16LE(i - 2)) & 0xffff, i);
  } else {
    for (let i = 4; i < line.length; i += 4) line.writeUInt32LE((line.readUInt32LE(i) + line.readUInt32LE(i - 4)) >>> 0, i);
  }
}

module.exports = { readTiff };
