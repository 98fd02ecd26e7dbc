// apps/eval_onnx.h: `octet eval MODEL.onnx`: a model of `octet export --onnx`
// evaluated in ONNX Runtime, optionally image for image against the Octet
// engine running the .oct model it came from.
//
// ONNX Runtime is the npm package onnxruntime-node, driven by
// scripts/ort_run.mjs in a child process (node): the images go to it as a
// uint8 NHWC .npy in a fresh temporary folder, the float32 logits come back
// as a .npy. Octet itself links nothing of ONNX Runtime.
#pragma once

namespace octet::app {

// True when the command line's first positional argument (as apps/args.h
// parses it) names an ONNX model: it ends in ".onnx". cmd_eval dispatches to
// eval_onnx on it, before parsing its own flags.
bool is_onnx_eval(int argc, char** argv);

// `octet eval MODEL.onnx --data PATH [--split test|train] [--limit N] [--against MODEL.oct]
//  [--ort-dir DIR] [--threads N] [--batch B] [--json FILE]`, with cmd_eval's
// conventions: argv[0] is the first argument after "eval"; returns the exit
// code; errors are thrown (UsageError for a bad command line).
int eval_onnx(int argc, char** argv);

}  // namespace octet::app
