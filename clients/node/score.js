#!/usr/bin/env node
// stedq-score: score .npy (or raw) image files with a stedq server, from Node.js.
// Same exit codes as `stedq score`: 0 all scored, 1 some files unreadable or rejected, 3 server unreachable.
"use strict";

const { parseArgs } = require("node:util");
const { QualityClient, readImageFile } = require("./stedq_client");

const USAGE = `usage: node score.js FILE... [--server HOST:PORT] [--timeout-s S] [--token T] [--tls-ca PEM]
                     [--height H --width W --dtype uint8|uint16|int16|uint32|float32] [--json]

Scores .npy images (H×W or N×H×W), TIFF files (single- or multi-page, uncompressed, LZW or deflate,
ImageJ calibration applied) and raw little-endian pixel files (give their size) with the stedq server.
Integer pixels are photon counts; float32 is on the model's scale (counts / 65535) when in [0, 1]. Defaults come from STEDQ_SERVER (localhost:50051),
STEDQ_TIMEOUT_S (30) and STEDQ_TOKEN, as for the Python client.`;

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        server: { type: "string", default: process.env.STEDQ_SERVER || "localhost:50051" },
        "timeout-s": { type: "string", default: process.env.STEDQ_TIMEOUT_S || "30" },
        token: { type: "string", default: process.env.STEDQ_TOKEN || "" },
        "tls-ca": { type: "string" },
        height: { type: "string" }, width: { type: "string" }, dtype: { type: "string", default: "uint16" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const raw = { height: Number(values.height), width: Number(values.width), dtype: values.dtype };
  const client = new QualityClient(values.server, {
    timeoutMs: Number(values["timeout-s"]) * 1000, token: values.token || undefined, tlsCa: values["tls-ca"],
  });
  const rows = [];
  let failed = 0;
  try {
    for (const file of positionals) {
      let images;
      try {
        images = readImageFile(file, raw);
      } catch (error) {
        console.error(`stedq-score: ${error.message}`);
        failed += 1;
        continue;
      }
      try {
        const results = await client.score(images);
        results.forEach((result, frame) => rows.push({
          file, frame: images.length > 1 ? frame : null, height: images[frame].height,
          width: images[frame].width, score: result.score,
          fit: result.fit, tiles: result.map ? `${result.map.rows}x${result.map.cols}` : "",
        }));
      } catch (error) {
        if (error.codeName === "UNAVAILABLE" || error.codeName === "DEADLINE_EXCEEDED") {
          console.error(`stedq-score: cannot reach the stedq server at ${values.server}: ${error.message}`);
          return 3;
        }
        console.error(`stedq-score: ${file}: ${error.message}`);
        failed += 1;
      }
    }
  } finally {
    client.close();
  }
  if (values.json) {
    console.log(JSON.stringify({ server: values.server, results: rows }, null, 2));
  } else {
    for (const row of rows) {
      const name = row.frame === null ? row.file : `${row.file}[${row.frame}]`;
      console.log(`${name}\t${row.height}x${row.width}\t${row.score.toFixed(4)}\t${row.fit.join(",")}${row.tiles ? "\t" + row.tiles : ""}`);
    }
  }
  return failed ? 1 : 0;
}

main().then((code) => { process.exitCode = code; });
