// stedq client for Node.js: loads proto/stedq/v1/quality.proto at run time (no generated code) and
// scores images with a stedq server.
//
//   const { QualityClient, readImageFile } = require("./stedq_client");
//   const client = new QualityClient("localhost:50051");
//   const scores = await client.score(readImageFile("image.npy"));  // [{ score, map }]
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { ITEM_SIZE, floatIntensity } = require("./pixels");
const { readTiff } = require("./tiff");

// The repository's proto folder; STEDQ_PROTO_DIR points elsewhere when this folder is copied out.
const PROTO_DIR = process.env.STEDQ_PROTO_DIR || path.resolve(__dirname, "..", "..", "proto");
const DTYPES = {
  uint8: "DTYPE_UINT8", uint16: "DTYPE_UINT16", int16: "DTYPE_INT16", uint32: "DTYPE_UINT32", float32: "DTYPE_FLOAT32",
};
const INTENSITIES = { counts: "INTENSITY_COUNTS", model_scale: "INTENSITY_MODEL_SCALE" };
// .npy descr -> our dtype name; '<' little-endian, '|' byte-sized
const NPY_DESCR = { "|u1": "uint8", "<u1": "uint8", "<u2": "uint16", "<i2": "int16", "<u4": "uint32", "<f4": "float32" };

class StedqError extends Error {
  constructor(code, details, target) {
    const name = Object.keys(grpc.status).find((key) => grpc.status[key] === code) || String(code);
    super(`${name} (${target}): ${details}`);
    this.code = code;          // grpc.status value
    this.codeName = name;
    this.details = details;
  }
}

function loadService(protoDir = PROTO_DIR) {
  const definition = protoLoader.loadSync(path.join(protoDir, "stedq", "v1", "quality.proto"), {
    includeDirs: [protoDir], keepCase: true, longs: Number, enums: String, defaults: true,
  });
  return grpc.loadPackageDefinition(definition).stedq.v1.QualityService;
}

// Parse a .npy file (format 1.0-3.0): uint8, uint16, int16, uint32 or float32 (little-endian), shape
// [H, W] or [N, H, W]. Float frames are on the model's scale when in [0, 1], else counts (pixels.js).
function readNpy(buffer, name = "array") {
  const magic = buffer.subarray(0, 6).toString("latin1");
  if (magic !== "\x93NUMPY") throw new Error(`${name}: not a .npy file`);
  const major = buffer[6];
  const headerLength = major === 1 ? buffer.readUInt16LE(8) : buffer.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = buffer.subarray(headerStart, headerStart + headerLength).toString("latin1");
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const order = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !order || !shape) throw new Error(`${name}: unreadable .npy header ${header.trim()}`);
  const dtype = NPY_DESCR[descr[1]];
  if (!dtype) throw new Error(`${name}: dtype ${descr[1]} not supported (use uint8, uint16, int16, uint32 or float32)`);
  if (order[1] === "True") throw new Error(`${name}: Fortran-ordered arrays are not supported`);
  const dims = shape[1].split(",").map((s) => s.trim()).filter((s) => s.length).map(Number);
  if (dims.length !== 2 && dims.length !== 3) {
    throw new Error(`${name}: expected an H×W image or an N×H×W stack, got shape (${dims.join(", ")})`);
  }
  const [count, height, width] = dims.length === 2 ? [1, ...dims] : dims;
  const data = buffer.subarray(headerStart + headerLength);
  const frameBytes = height * width * ITEM_SIZE[dtype];
  if (data.length !== count * frameBytes) {
    throw new Error(`${name}: ${data.length} data bytes, expected ${count * frameBytes} for shape (${dims.join(", ")})`);
  }
  const images = [];
  for (let i = 0; i < count; i += 1) {
    const image = { data: data.subarray(i * frameBytes, (i + 1) * frameBytes), dtype, height, width };
    if (dtype === "float32") {
      try {
        image.intensity = floatIntensity(image);
      } catch (error) {
        throw new Error(`${name}: ${error.message}`);
      }
    }
    images.push(image);
  }
  return images;
}

// Raw little-endian pixels (e.g. straight from a camera buffer): the size must be given.
function readRaw(buffer, { height, width, dtype = "uint16" }, name = "raw") {
  if (!ITEM_SIZE[dtype]) throw new Error(`${name}: dtype ${dtype} not supported (uint8, uint16, int16, uint32, float32)`);
  const frameBytes = height * width * ITEM_SIZE[dtype];
  if (!frameBytes || buffer.length % frameBytes !== 0) {
    throw new Error(`${name}: ${buffer.length} bytes is not a whole number of ${height}x${width} ${dtype} frames`);
  }
  const images = [];
  for (let offset = 0; offset < buffer.length; offset += frameBytes) {
    images.push({ data: buffer.subarray(offset, offset + frameBytes), dtype, height, width });
  }
  return images;
}

// .npy and .tif/.tiff by their headers; anything else as raw pixels of the given size.
function readImageFile(file, raw = null) {
  const buffer = fs.readFileSync(file);
  const lower = file.toLowerCase();
  if (lower.endsWith(".npy")) return readNpy(buffer, file);
  if (lower.endsWith(".tif") || lower.endsWith(".tiff")) return readTiff(buffer, file);
  if (!raw || !raw.height || !raw.width) {
    throw new Error(`${file}: not a .npy or .tif file; for raw pixels give --height, --width (and --dtype)`);
  }
  return readRaw(buffer, raw, file);
}

// Consecutive groups of images whose request stays under the limit (64 KiB left for the framing).
function splitBySize(images, limit) {
  const budget = limit - 64 * 1024;
  const chunks = [];
  let chunk = [], used = 0;
  images.forEach((image, index) => {
    const size = image.data.length + 32;
    if (size > budget) throw new Error(`image ${index} (${image.height}x${image.width}) exceeds the ${limit} byte message limit`);
    if (chunk.length && used + size > budget) {
      chunks.push(chunk);
      chunk = [];
      used = 0;
    }
    chunk.push(image);
    used += size;
  });
  if (chunk.length) chunks.push(chunk);
  return chunks;
}

// image.intensity: "counts" | "model_scale" | undefined (the dtype's default: integers are counts).
function toMessage(image) {
  const message = { data: image.data, dtype: DTYPES[image.dtype], height: image.height, width: image.width };
  if (image.intensity) message.intensity = INTENSITIES[image.intensity];
  return message;
}

class QualityClient {
  // options: { timeoutMs = 30000, token, tlsCa (PEM Buffer or path; TLS when set), retries = 3 }
  constructor(target = "localhost:50051", options = {}) {
    this.target = target;
    this.timeoutMs = options.timeoutMs ?? 30000;
    this.retries = options.retries ?? 3;
    const Service = loadService(options.protoDir);
    const ca = typeof options.tlsCa === "string" ? fs.readFileSync(options.tlsCa) : options.tlsCa;
    const credentials = ca ? grpc.credentials.createSsl(ca) : grpc.credentials.createInsecure();
    const limit = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.maxMessageBytes = limit;
    this.stub = new Service(target, credentials, {
      "grpc.max_send_message_length": limit, "grpc.max_receive_message_length": limit,
    });
    this.metadata = new grpc.Metadata();
    if (options.token) this.metadata.set("authorization", `Bearer ${options.token}`);
  }

  // One unary call with a deadline; retried with backoff while the server is UNAVAILABLE, or when a stopping
  // server cancelled it before it began (CANCELLED: this client never cancels its calls). Scoring is
  // idempotent; the same rule as the Python clients (stedq/clients/channel.py, RETRYABLE).
  async call(method, request) {
    const deadline = Date.now() + this.timeoutMs;
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await new Promise((resolve, reject) => {
          this.stub[method](request, this.metadata, { deadline }, (error, response) => {
            if (error) reject(error); else resolve(response);
          });
        });
      } catch (error) {
        const delay = Math.min(5000, 200 * 2 ** attempt) * (0.5 + Math.random() / 2);
        const retryable = error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.CANCELLED;
        if (!retryable || attempt >= this.retries || Date.now() + delay >= deadline) {
          throw new StedqError(error.code ?? grpc.status.UNKNOWN, error.details || error.message, this.target);
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  // images: [{ data: Buffer, dtype: "uint8"|"uint16"|"int16"|"uint32"|"float32", height, width,
  // intensity? }] -> [{ score, map, fit }] (fit: ["ok"] or the reasons the image is outside the training data).
  // Batches larger than the message limit are sent as several requests, in order.
  async score(images) {
    const results = [];
    for (const chunk of splitBySize(images, this.maxMessageBytes)) {
      const response = await this.call("Score", { images: chunk.map(toMessage) });
      if (response.results.length !== chunk.length) {
        throw new StedqError(grpc.status.INTERNAL, `server answered ${response.results.length} results for ${chunk.length} images`, this.target);
      }
      for (const result of response.results) {
        results.push({ score: result.score, map: result.map || null, fit: result.fit || [] });
      }
    }
    return results;
  }

  async modelInfo() {
    return this.call("GetModelInfo", {});
  }

  close() {
    this.stub.close();
  }
}

module.exports = { QualityClient, StedqError, loadService, readImageFile, readNpy, readRaw, readTiff, splitBySize };
