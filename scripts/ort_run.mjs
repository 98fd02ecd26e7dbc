#!/usr/bin/env node
// scripts/ort_run.mjs: runs an ONNX model in ONNX Runtime (the npm package
// onnxruntime-node, CPU provider) for `octet eval MODEL.onnx` and for
// scripts/bench.sh's ORT peer. Node 18+, no dependency but onnxruntime-node.
//
//   node scripts/ort_run.mjs run MODEL.onnx IN.npy OUT.npy [--threads N] [--batch B] [--precise]
//       IN: uint8 [N, H, W, C] (raw NHWC pixels, what the Octet engine's Session::run
//       takes); OUT: float32 [N, classes], the output "logits" (or the only output).
//       Prints one JSON line: images, seconds in session.run, img/s, the model's
//       metadata_props (octet.output_scale / octet.output_zero_point of `octet export`).
//   node scripts/ort_run.mjs bench MODEL.onnx [--batch B] [--threads N] [--seconds S] [--precise]
//       [--shape H,W,C] [--dtype uint8|float32] [--layout nhwc|nchw] [--zeros]
//       Random input (seeded; --zeros: zeros), 0.5 s of warm-up, then timed runs for about
//       S seconds (default 3). Prints one JSON line: model, batch, threads, img_per_s,
//       ms_per_batch_median, runs. Type and shape come from the model's input metadata;
//       --shape / --dtype / --layout are needed only where the model leaves them open
//       (defaults: uint8 NHWC, float32 NCHW as PyTorch exports it).
//   node scripts/ort_run.mjs info MODEL.onnx
//       JSON of the inputs and outputs (names, types, shapes) and the metadata_props.
//
// ONNX Runtime is loaded from DIR/node_modules/onnxruntime-node, DIR = --ort-dir, else
// $OCTET_ORT_DIR. Sessions: intraOpNumThreads N (--threads, default 1; 0 = ORT's default),
// interOpNumThreads 1, graphOptimizationLevel 'all', executionMode 'sequential'.
// Any error: one line on stderr, exit code 1.
//
// .npy files are read and written here (format version 1.0, 2.0 read too; little-endian,
// C order; dtypes |u1, |i1, <f4), so nothing but ORT has to be installed.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const ORT_VERSION = '1.31.1';
const installHint = (dir) =>
  `ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix ${dir} onnxruntime-node@${ORT_VERSION}`;

class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };

// ---------------------------------------------------------------- arguments

// Flags that take a value, and flags without one; anything else starting with "--" is an error.
const VALUE_FLAGS = new Set(['--threads', '--batch', '--seconds', '--shape', '--dtype', '--layout', '--ort-dir']);
const BOOL_FLAGS = new Set(['--zeros', '--precise']);

function parseArgs(argv) {
  const pos = [], flags = {};
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (!a.startsWith('--')) { pos.push(a); continue; }
    let v;
    const eq = a.indexOf('=');
    if (eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    if (BOOL_FLAGS.has(a)) {
      if (v !== undefined) fail(`${a} takes no value`);
      flags[a] = true;
    } else if (VALUE_FLAGS.has(a)) {
      if (v === undefined) {
        if (i + 1 >= argv.length) fail(`${a} needs a value`);
        v = argv[++i];
      }
      flags[a] = v;
    } else {
      fail(`unknown flag ${a}`);
    }
  }
  return { pos, flags };
}

function intFlag(flags, name, fallback, min) {
  if (flags[name] === undefined) return fallback;
  const s = flags[name];
  if (!/^-?\d+$/.test(s)) fail(`${name} must be an integer, not "${s}"`);
  const n = Number(s);
  if (n < min) fail(`${name} must be >= ${min}`);
  return n;
}

function numFlag(flags, name, fallback, min) {
  if (flags[name] === undefined) return fallback;
  const n = Number(flags[name]);
  if (!Number.isFinite(n) || n < min) fail(`${name} must be a number >= ${min}, not "${flags[name]}"`);
  return n;
}

// ---------------------------------------------------------------- ONNX Runtime

function loadOrt(flags) {
  const dir = flags['--ort-dir'] ?? process.env.OCTET_ORT_DIR;
  if (!dir) fail(`no ONNX Runtime directory: give --ort-dir DIR or set OCTET_ORT_DIR (install it with \`${installHint('DIR')}\`)`);
  const pkg = path.join(path.resolve(dir), 'node_modules', 'onnxruntime-node');
  if (!fs.existsSync(path.join(pkg, 'package.json'))) fail(`ONNX Runtime not found at ${dir}: install it with \`${installHint(dir)}\``);
  // An absolute path, so no node_modules above DIR (or beside this script) can stand in for it.
  const require = createRequire(import.meta.url);
  let ort, version = '?';
  try {
    ort = require(pkg);
    version = require(path.join(pkg, 'package.json')).version;
  } catch (e) {
    fail(`cannot load onnxruntime-node from ${pkg}: ${e.message}`);
  }
  return { ort, version };
}

// precise: ORT's session.x64quantprecision. On x86 without VNNI (AVX2, and
// AVX-512 without VNNI) ORT's U8S8 kernels multiply with vpmaddubsw, which
// adds pairs of u8 x s8 products in 16 bits and saturates (2 x 255 x 127 >
// 32767); the option makes ORT convert the weights to u8 and use its exact
// U8U8 kernels, slower. With VNNI both are exact and it changes nothing.
async function openSession(ort, model, threads, precise = false) {
  if (!fs.existsSync(model)) fail(`model file not found: ${model}`);
  const opts = {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: process.env.OCTET_ORT_OPT_LEVEL || 'all',
    executionMode: 'sequential',
  };
  if (precise) opts.extra = { session: { x64quantprecision: '1' } };
  try {
    return await ort.InferenceSession.create(model, opts);
  } catch (e) {
    fail(`ONNX Runtime cannot load ${model}: ${e.message}`);
  }
}

// Input/output metadata as plain objects; {name} only where this ORT version has no metadata.
function valueInfo(session, which) {
  const names = which === 'input' ? session.inputNames : session.outputNames;
  const meta = which === 'input' ? session.inputMetadata : session.outputMetadata;
  return names.map((name, i) => {
    const m = meta && meta[i];
    if (!m || m.isTensor === undefined) return { name };
    if (!m.isTensor) return { name, tensor: false };
    return { name, type: m.type, shape: [...m.shape] };
  });
}

// ---------------------------------------------------------------- ONNX metadata_props

// ORT's JavaScript API does not expose a model's metadata_props, so read them from the
// protobuf: ModelProto field 14 is a repeated StringStringEntryProto {1: key, 2: value}.
// Only the top-level fields are walked (the graph, field 7, is skipped by its length).
function readVarint(b, pos) {
  let v = 0n, shift = 0n;
  for (;;) {
    if (pos >= b.length) throw new Error('truncated varint');
    const byte = b[pos++];
    v |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [v, pos];
    shift += 7n;
    if (shift > 63n) throw new Error('varint too long');
  }
}

function protoFields(b, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = readVarint(b, pos);
    const field = Number(key >> 3n), wire = Number(key & 7n);
    if (wire === 0) { [, pos] = readVarint(b, pos); }
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let len;
      [len, pos] = readVarint(b, pos);
      const n = Number(len);
      if (pos + n > end) throw new Error('truncated field');
      visit(field, pos, pos + n);
      pos += n;
    } else throw new Error(`wire type ${wire}`);
  }
  if (pos !== end) throw new Error('field runs past its message');
}

function modelMetadata(file) {
  try {
    const b = fs.readFileSync(file);
    const props = {};
    protoFields(b, 0, b.length, (field, s, e) => {
      if (field !== 14) return;
      let k = '', v = '';
      protoFields(b, s, e, (f, s2, e2) => {
        if (f === 1) k = b.toString('utf8', s2, e2);
        else if (f === 2) v = b.toString('utf8', s2, e2);
      });
      props[k] = v;
    });
    return props;
  } catch {
    return {};  // ORT already accepted the file; the metadata are informative only
  }
}

// ---------------------------------------------------------------- .npy

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);  // "\x93NUMPY"
const DTYPES = {
  uint8: { descr: '|u1', size: 1, Array: Uint8Array },
  int8: { descr: '|i1', size: 1, Array: Int8Array },
  float32: { descr: '<f4', size: 4, Array: Float32Array },
};
// One-byte types have no byte order: numpy writes '|', other writers '<' or '='.
const DESCR_TO_DTYPE = { '|u1': 'uint8', '<u1': 'uint8', '=u1': 'uint8', '|i1': 'int8', '<i1': 'int8', '=i1': 'int8', '<f4': 'float32' };

function readNpy(file) {
  if (!fs.existsSync(file)) fail(`file not found: ${file}`);
  const b = fs.readFileSync(file);
  const bad = (why) => fail(`${file}: not a valid .npy file: ${why}`);
  if (b.length < 10 || !b.subarray(0, 6).equals(NPY_MAGIC)) bad('no \\x93NUMPY magic');
  const major = b[6];
  let hlen, hstart;
  if (major === 1) { hlen = b.readUInt16LE(8); hstart = 10; }
  else if (major === 2) {
    if (b.length < 12) bad('truncated header');
    hlen = b.readUInt32LE(8); hstart = 12;
  } else bad(`format version ${major}.${b[7]} (1.0 and 2.0 are read)`);
  if (hstart + hlen > b.length) bad('truncated header');
  const header = b.toString('latin1', hstart, hstart + hlen);
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(header);
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header);
  const shapeM = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) bad(`header without descr, fortran_order or shape: ${header.trim()}`);
  const dtype = DESCR_TO_DTYPE[descr[1]];
  if (!dtype) fail(`${file}: dtype '${descr[1]}' is not supported (uint8 |u1, int8 |i1, float32 <f4)`);
  if (fortran[1] === 'True') fail(`${file}: Fortran-order arrays are not supported (save it in C order)`);
  const parts = shapeM[1].split(',').map((s) => s.trim());
  if (parts.length && parts[parts.length - 1] === '') parts.pop();
  const shape = parts.map((s) => {
    if (!/^\d+$/.test(s)) bad(`shape (${shapeM[1]})`);
    return Number(s);
  });
  const numel = shape.reduce((a, d) => a * d, 1);
  const { size, Array: A } = DTYPES[dtype];
  const off = hstart + hlen, need = numel * size, have = b.length - off;
  if (have < need) fail(`${file}: truncated: shape (${shape.join(', ')}) of ${dtype} needs ${need} data bytes, the file has ${have}`);
  if (have > need) fail(`${file}: ${have - need} bytes after the data of shape (${shape.join(', ')})`);
  // Copy: the data offset need not be aligned for a Float32Array view.
  const data = new A(new Uint8Array(b.subarray(off, off + need)).buffer);
  return { dtype, shape, data };
}

function writeNpy(file, dtype, shape, data) {
  const { descr } = DTYPES[dtype];
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // Pad with spaces and a newline so the data starts at a multiple of 64 bytes, as numpy does.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  if (header.length > 65535) fail(`${file}: header too long for .npy 1.0`);
  const pre = Buffer.alloc(10);
  NPY_MAGIC.copy(pre, 0);
  pre[6] = 1; pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // Atomic: a reader never sees a half-written file (temp file in the same folder + rename).
  const tmp = `${file}.tmp.${process.pid}`;
  try {
    fs.writeFileSync(tmp, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch {}
    fail(`cannot write ${file}: ${e.message}`);
  }
}

// ---------------------------------------------------------------- subcommands

const now = () => Number(process.hrtime.bigint()) / 1e9;

// The logits output: "logits" (octet export's name), else the only output.
function pickOutput(session, model) {
  const names = session.outputNames;
  if (names.includes('logits')) return 'logits';
  if (names.length === 1) return names[0];
  fail(`${model} has no output "logits" and ${names.length} outputs (${names.join(', ')})`);
}

function singleInput(session, model) {
  if (session.inputNames.length !== 1)
    fail(`${model} has ${session.inputNames.length} inputs (${session.inputNames.join(', ')}); one is supported`);
  return valueInfo(session, 'input')[0];
}

async function cmdRun(pos, flags) {
  if (pos.length !== 3) fail('usage: ort_run.mjs run MODEL.onnx IN.npy OUT.npy [--threads N] [--batch B] [--ort-dir DIR]');
  const [model, inFile, outFile] = pos;
  const threads = intFlag(flags, '--threads', 1, 0);
  let batch = intFlag(flags, '--batch', 100, 1);
  const x = readNpy(inFile);
  if (x.dtype !== 'uint8') fail(`${inFile}: holds ${x.dtype}, uint8 pixels were expected`);
  if (x.shape.length !== 4) fail(`${inFile}: shape (${x.shape.join(', ')}): [N, H, W, C] was expected`);
  const [n, h, w, c] = x.shape;
  if (n < 1) fail(`${inFile}: no images`);
  const { ort, version } = loadOrt(flags);
  const session = await openSession(ort, model, threads, flags['--precise'] === true);
  const input = singleInput(session, model);
  const output = pickOutput(session, model);
  if (input.type && input.type !== 'uint8')
    fail(`${model}: input "${input.name}" is ${input.type} [${input.shape}]; run feeds uint8 NHWC pixels (the octet export contract)`);
  let fixedBatch = 0;
  if (input.shape) {
    if (input.shape.length !== 4) fail(`${model}: input "${input.name}" has shape [${input.shape}], not [batch, H, W, C]`);
    const want = [h, w, c];
    for (let k = 1; k < 4; k++)
      if (typeof input.shape[k] === 'number' && input.shape[k] !== want[k - 1])
        fail(`${model}: input "${input.name}" is [${input.shape}], the images in ${inFile} are ${h}x${w}x${c} (HWC)`);
    // A fixed batch size: run in batches of exactly that, the last one padded with zeros.
    if (typeof input.shape[0] === 'number' && input.shape[0] > 0) fixedBatch = batch = input.shape[0];
  }
  const per = h * w * c;
  let logits = null, classes = 0, seconds = 0;
  for (let start = 0; start < n; start += batch) {
    const m = Math.min(batch, n - start), feedN = fixedBatch || m;
    const px = new Uint8Array(feedN * per);
    px.set(x.data.subarray(start * per, (start + m) * per));
    const feed = { [input.name]: new ort.Tensor('uint8', px, [feedN, h, w, c]) };
    const t0 = now();
    let r;
    try {
      r = await session.run(feed, [output]);
    } catch (e) {
      fail(`ONNX Runtime failed on ${model} (images ${start}..${start + m - 1}): ${e.message}`);
    }
    seconds += now() - t0;
    const y = r[output];
    if (y.type !== 'float32') fail(`${model}: output "${output}" is ${y.type}, float32 logits were expected`);
    if (y.dims.length !== 2 || y.dims[0] !== feedN) fail(`${model}: output "${output}" has shape [${y.dims}], [${feedN}, classes] was expected`);
    if (!logits) {
      classes = y.dims[1];
      logits = new Float32Array(n * classes);
    } else if (y.dims[1] !== classes) fail(`${model}: output "${output}" changed from ${classes} to ${y.dims[1]} classes`);
    logits.set(y.data.subarray(0, m * classes), start * classes);
  }
  writeNpy(outFile, 'float32', [n, classes], logits);
  console.log(JSON.stringify({
    model, images: n, classes, batch, threads, seconds: +seconds.toFixed(4), img_per_s: +(n / Math.max(seconds, 1e-9)).toFixed(1),
    input: input.name, output, ort_version: version, metadata: modelMetadata(model),
  }));
}

// A deterministic generator (xorshift32), so a bench feeds the same bytes every time.
function fillRandom(arr, dtype) {
  let s = 0x9e3779b9;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  if (dtype === 'uint8') for (let i = 0; i < arr.length; i++) arr[i] = next() & 255;
  else if (dtype === 'int8') for (let i = 0; i < arr.length; i++) arr[i] = (next() & 255) - 128;
  else for (let i = 0; i < arr.length; i++) arr[i] = (next() / 4294967296) * 4 - 2;  // normalized-image range
}

function median(v) {
  const s = [...v].sort((a, b) => a - b), k = s.length >> 1;
  return s.length % 2 ? s[k] : (s[k - 1] + s[k]) / 2;
}

async function cmdBench(pos, flags) {
  if (pos.length !== 1) fail('usage: ort_run.mjs bench MODEL.onnx [--batch B] [--threads N] [--seconds S] [--shape H,W,C] [--dtype uint8|float32] [--layout nhwc|nchw] [--zeros]');
  const model = pos[0];
  const threads = intFlag(flags, '--threads', 1, 0);
  const batch = intFlag(flags, '--batch', 1, 1);
  const secs = numFlag(flags, '--seconds', 3, 0);
  const { ort, version } = loadOrt(flags);
  const session = await openSession(ort, model, threads, flags['--precise'] === true);
  const input = singleInput(session, model);
  const output = pickOutput(session, model);
  // The element type: the model's, else --dtype (then the flag must agree with the model).
  let dtype = input.type;
  if (flags['--dtype']) {
    if (!(flags['--dtype'] in DTYPES)) fail('--dtype must be uint8, int8 or float32');
    if (dtype && dtype !== flags['--dtype']) fail(`${model}: input "${input.name}" is ${dtype}, not ${flags['--dtype']}`);
    dtype = flags['--dtype'];
  }
  dtype = dtype || 'uint8';
  if (!(dtype in DTYPES)) fail(`${model}: input "${input.name}" is ${dtype}; bench feeds uint8, int8 or float32`);
  const layout = flags['--layout'] || (dtype === 'float32' ? 'nchw' : 'nhwc');
  if (layout !== 'nhwc' && layout !== 'nchw') fail('--layout must be nhwc or nchw');
  let dims;
  if (flags['--shape']) {
    const hwc = flags['--shape'].split(',').map(Number);
    if (hwc.length !== 3 || hwc.some((d) => !Number.isInteger(d) || d < 1)) fail(`--shape must be H,W,C, not "${flags['--shape']}"`);
    const [h, w, c] = hwc;
    dims = layout === 'nhwc' ? [batch, h, w, c] : [batch, c, h, w];
    if (input.shape) {
      if (input.shape.length !== 4) fail(`${model}: input "${input.name}" has shape [${input.shape}], not 4-D`);
      for (let k = 1; k < 4; k++)
        if (typeof input.shape[k] === 'number' && input.shape[k] !== dims[k])
          fail(`${model}: input "${input.name}" is [${input.shape}]; --shape ${flags['--shape']} --layout ${layout} gives [${dims}]`);
    }
  } else {
    if (!input.shape || input.shape.slice(1).some((d) => typeof d !== 'number'))
      fail(`${model}: the input's size is not fixed in the model${input.shape ? ` ([${input.shape}])` : ''}: give --shape H,W,C (and --layout)`);
    dims = [batch, ...input.shape.slice(1)];
  }
  if (input.shape && typeof input.shape[0] === 'number' && input.shape[0] > 0 && input.shape[0] !== batch)
    fail(`${model}: input "${input.name}" has a fixed batch of ${input.shape[0]}`);
  const data = new DTYPES[dtype].Array(dims.reduce((a, d) => a * d, 1));
  if (!flags['--zeros']) fillRandom(data, dtype);
  const feeds = { [input.name]: new ort.Tensor(dtype, data, dims) };
  const runOnce = async () => {
    try {
      await session.run(feeds, [output]);
    } catch (e) {
      fail(`ONNX Runtime failed on ${model} with input [${dims}] ${dtype}: ${e.message}`);
    }
  };
  // Warm-up: at least 0.5 s and 3 runs (first-run allocations, thread pool start).
  let t0 = now();
  for (let k = 0; k < 3 || now() - t0 < 0.5; k++) await runOnce();
  const times = [];
  t0 = now();
  let t = 0;
  do {
    const s = now();
    await runOnce();
    times.push(now() - s);
    t = now() - t0;
  } while (t < secs || times.length < 3);
  console.log(JSON.stringify({
    model, batch, threads, img_per_s: +(batch * times.length / t).toFixed(1),
    ms_per_batch_median: +(median(times) * 1e3).toFixed(4), runs: times.length, seconds: +t.toFixed(3),
    dtype, shape: dims, input: input.name, output, ort_version: version,
  }));
}

async function cmdInfo(pos, flags) {
  if (pos.length !== 1) fail('usage: ort_run.mjs info MODEL.onnx [--ort-dir DIR]');
  const model = pos[0];
  const { ort, version } = loadOrt(flags);
  const session = await openSession(ort, model, intFlag(flags, '--threads', 1, 0));
  console.log(JSON.stringify({
    model, inputs: valueInfo(session, 'input'), outputs: valueInfo(session, 'output'),
    metadata: modelMetadata(model), ort_version: version,
  }));
}

const USAGE = `usage: node scripts/ort_run.mjs run|bench|info MODEL.onnx ... [--ort-dir DIR]
  run MODEL.onnx IN.npy OUT.npy [--threads N] [--batch B]     uint8 NHWC pixels -> float32 logits
  bench MODEL.onnx [--batch B] [--threads N] [--seconds S] [--shape H,W,C] [--dtype T] [--layout L] [--zeros]
  info MODEL.onnx                                              inputs, outputs, metadata as JSON
ONNX Runtime: DIR/node_modules/onnxruntime-node, DIR = --ort-dir, else $OCTET_ORT_DIR
(install: ${installHint('DIR')})`;

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  if (!cmd) {
    console.error(USAGE);
    return 1;
  }
  if (cmd === '-h' || cmd === '--help') {
    console.log(USAGE);
    return 0;
  }
  const { pos, flags } = parseArgs(rest);
  if (cmd === 'run') await cmdRun(pos, flags);
  else if (cmd === 'bench') await cmdBench(pos, flags);
  else if (cmd === 'info') await cmdInfo(pos, flags);
  else fail(`unknown subcommand "${cmd}"\n${USAGE}`);
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (e) => {
    console.error(`ort_run: ${e instanceof Failure ? e.message : e.stack || e}`);
    process.exitCode = 1;
  });
