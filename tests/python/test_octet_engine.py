#!/usr/bin/env python3
"""tests/python/test_octet_engine.py: the engine's Python module (python/).

ctest python.test_octet_engine (python/CMakeLists.txt) runs it with the
Python the module was built for, PYTHONPATH at the module's folder, OCTET_RUN
naming the octet-run binary and, in a full build, OCTET_INSPECT naming the
octet binary. Plain unittest. It checks, on the ResNet-20 that
`octet-run --write-sample-model` writes (random weights, 32x32x3, 10 classes):

- the logits equal the C++ engine's in another process (octet-run --top 10:
  the order of the classes, the real logits and the int8 codes they imply),
  and do not depend on the batch (a batch of N vs N runs of one, pieces of
  batch_size), on the thread count, or on how the model was opened
  (from_bytes);
- run_float is output_scale * (q - output_zero_point) in float32;
- layers has one dict per op of the file, with the file's op kinds, names,
  output tensors, weight bits and parameters (read here from the bytes,
  docs/format.md), and agrees with `octet inspect` when that is built;
- the error paths: a missing file (OSError naming it), corrupt bytes
  (ValueError naming the model), a wrong shape (ValueError naming it), a
  float or int64 dtype (ValueError naming it).
"""
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

try:
    import numpy as np
except ImportError:  # ctest: SKIP_RETURN_CODE 77
    print("SKIPPED: numpy is missing for %s (Debian: python3-numpy)" % sys.executable)
    sys.exit(77)

import octet_engine  # noqa: E402  (PYTHONPATH: the module's build folder)

OP_NAMES = {1: "input", 2: "conv2d", 3: "fully_connected", 4: "add", 5: "max_pool", 6: "avg_pool",
            7: "global_avg_pool"}
DTYPES = {1: "int8", 2: "uint8", 3: "int32"}


def read_model_file(path):
    """The tensors and ops of an Octet model file, read from its bytes
    (docs/format.md), independently of the engine."""
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"OCTET\x00\r\n", "not an Octet model file"
    tensor_count, op_count, metadata_count, graph_input, graph_output = struct.unpack_from("<5I", b, 24)
    tensors_at = 64
    ops_at = tensors_at + 64 * tensor_count
    strings_at = ops_at + 80 * op_count + 16 * metadata_count

    def string(off, length):
        return b[strings_at + off:strings_at + off + length].decode()

    tensors = []
    for i in range(tensor_count):
        r = tensors_at + 64 * i
        name_off, name_len, dtype, bits, rank, flags = struct.unpack_from("<IIBBBB", b, r)
        dims = struct.unpack_from("<4I", b, r + 12)[:rank]
        zp, = struct.unpack_from("<i", b, r + 28)
        scale, = struct.unpack_from("<d", b, r + 32)
        tensors.append(dict(name=string(name_off, name_len), dtype=DTYPES[dtype], bits=bits, shape=tuple(dims),
                            zero_point=zp, scale=scale, constant=bool(flags & 1)))
    ops = []
    for i in range(op_count):
        r = ops_at + 80 * i
        op_type, n_in = struct.unpack_from("<HB", b, r)
        name_off, name_len, output = struct.unpack_from("<III", b, r + 4)
        inputs = struct.unpack_from("<6I", b, r + 16)[:n_in]
        params = struct.unpack_from("<10i", b, r + 40)
        ops.append(dict(op=OP_NAMES[op_type], name=string(name_off, name_len), output=output, inputs=inputs,
                        params=params))
    return tensors, ops, graph_input, graph_output


def octet_run(model, images, tmp, threads=1):
    """octet-run's top-10 of each image: [[(class, real logit), ...], ...]."""
    raw = os.path.join(tmp, "images.raw")
    images.tofile(raw)
    out = subprocess.run([os.environ["OCTET_RUN"], model, raw, "--top", "10", "--batch", "4", "--threads",
                          str(threads)], check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        rows.append([(int(f[i]), float(f[i + 2])) for i in range(1, len(f), 3)])
    return rows


class EngineModuleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="octet_py_test_")
        cls.tmp = cls.tmpdir.name
        cls.path = os.path.join(cls.tmp, "resnet20.oct")
        subprocess.run([os.environ["OCTET_RUN"], "--write-sample-model", cls.path], check=True)
        cls.model = octet_engine.Model(cls.path)
        rng = np.random.default_rng(7)
        cls.images = rng.integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)

    @classmethod
    def tearDownClass(cls):
        octet_engine.set_num_threads(0)
        cls.tmpdir.cleanup()

    def test_shape_and_quantization(self):
        m = self.model
        self.assertEqual(m.input_shape, (32, 32, 3))
        self.assertEqual(m.num_classes, 10)
        tensors, ops, graph_input, graph_output = read_model_file(self.path)
        x = tensors[graph_input]
        self.assertEqual(x["shape"], m.input_shape)
        self.assertEqual(m.input_zero_point, x["zero_point"])
        self.assertEqual(m.input_scale, x["scale"])
        logits = tensors[graph_output]
        self.assertEqual(m.output_zero_point, logits["zero_point"])
        self.assertEqual(m.output_scale, logits["scale"])
        self.assertGreater(m.output_scale, 0)
        self.assertIn("10 classes", repr(m))

    def test_logits_equal_octet_run(self):
        q = self.model.run(self.images)
        self.assertEqual(q.dtype, np.int8)
        self.assertEqual(q.shape, (9, 10))
        real = self.model.run_float(self.images)
        rows = octet_run(self.path, self.images, self.tmp)
        self.assertEqual(len(rows), 9)
        scale, zp = self.model.output_scale, self.model.output_zero_point
        for i, row in enumerate(rows):
            self.assertEqual(len(row), 10)
            # octet-run orders the classes by logit, ties by class index (top_k).
            want_order = sorted(range(10), key=lambda c: (-int(q[i, c]), c))
            self.assertEqual([c for c, _ in row], want_order, "image %d" % i)
            for c, value in row:
                self.assertAlmostEqual(value, float(real[i, c]), delta=6e-4, msg="image %d class %d" % (i, c))
                if scale > 2e-3:  # %.3f pins the int8 code down
                    self.assertEqual(zp + round(value / scale), int(q[i, c]), "image %d class %d" % (i, c))
        # Not a constant output: the images give different logits.
        self.assertGreater(len({bytes(r) for r in q}), 1)

    def test_batch_of_n_equals_n_runs_of_one(self):
        q = self.model.run(self.images)
        for i in range(len(self.images)):
            one = self.model.run(self.images[i])
            self.assertEqual(one.shape, (10,))
            np.testing.assert_array_equal(one, q[i])
            np.testing.assert_array_equal(self.model.run(self.images[i:i + 1]), q[i:i + 1])
        pieces = octet_engine.Model(self.path, batch_size=4)  # 9 images: pieces of 4, 4, 1
        np.testing.assert_array_equal(pieces.run(self.images), q)
        self.assertEqual(pieces.batch_size, 4)
        self.assertGreater(pieces.arena_bytes, 0)
        # Non-contiguous input (every other image) is copied, not misread.
        np.testing.assert_array_equal(self.model.run(self.images[::2]), q[::2])
        self.assertEqual(self.model.run(self.images[:0]).shape, (0, 10))

    def test_from_bytes_and_threads(self):
        q = self.model.run(self.images)
        with open(self.path, "rb") as f:
            data = f.read()
        m2 = octet_engine.Model.from_bytes(data, name="mem.oct")
        np.testing.assert_array_equal(m2.run(self.images), q)
        m3 = octet_engine.Model.from_bytes(bytearray(data))
        for threads in (1, 2):
            m3.threads = threads
            self.assertEqual(octet_engine.num_threads(), threads)
            self.assertEqual(self.model.threads, threads)  # process-wide
            np.testing.assert_array_equal(m3.run(self.images), q)
        # Two Python threads, one Model each, at the same time (run releases the GIL).
        results = [None, None]

        def work(k, model):
            results[k] = model.run(np.repeat(self.images, 3, axis=0))

        ts = [threading.Thread(target=work, args=(k, mm)) for k, mm in enumerate((m2, m3))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for r in results:
            np.testing.assert_array_equal(r, np.repeat(q, 3, axis=0))

    def test_run_float(self):
        q = self.model.run(self.images)
        real = self.model.run_float(self.images)
        self.assertEqual(real.dtype, np.float32)
        want = (self.model.output_scale * (q.astype(np.float64) - self.model.output_zero_point)).astype(np.float32)
        np.testing.assert_array_equal(real, want)
        self.assertEqual(self.model.run_float(self.images[0]).shape, (10,))

    def test_layers_one_per_op_of_the_file(self):
        tensors, ops, _, _ = read_model_file(self.path)
        layers = self.model.layers
        self.assertEqual(len(layers), len(ops))
        # ResNet-20: input, stem, 9 blocks of conv conv add, 2 projections, pool, fc.
        self.assertEqual(len(layers), 33)
        self.assertEqual(sum(l["op"] == "conv2d" for l in layers), 21)
        self.assertEqual(sum(l["op"] == "add" for l in layers), 9)
        for i, (layer, op) in enumerate(zip(layers, ops)):
            self.assertEqual(layer["index"], i)
            self.assertEqual(layer["op"], op["op"])
            self.assertEqual(layer["name"], op["name"])
            out = tensors[op["output"]]
            for key in ("name", "dtype", "shape", "zero_point", "scale"):
                self.assertEqual(layer["output"][key], out[key], "op %d output %s" % (i, key))
            acts = [tensors[t] for t in op["inputs"] if not tensors[t]["constant"]]
            self.assertEqual([t["name"] for t in layer["inputs"]], [t["name"] for t in acts])
            p = op["params"]
            if op["op"] in ("conv2d", "fully_connected"):
                w = tensors[op["inputs"][1]]
                self.assertEqual(layer["weight_bits"], w["bits"])
                self.assertEqual(layer["weight_shape"], w["shape"])
                self.assertEqual(layer["weights"].shape, w["shape"])
                self.assertEqual(layer["weights"].dtype, np.int8)
                cout = w["shape"][0]
                for key in ("bias", "multiplier", "shift", "real_multiplier"):
                    self.assertEqual(layer[key].shape, (cout,), key)
                np.testing.assert_array_equal(layer["real_multiplier"],
                                              layer["multiplier"] * np.exp2(layer["shift"].astype(np.float64) - 31))
                self.assertGreater(layer["macs"], 0)
                if op["op"] == "conv2d":
                    self.assertEqual((layer["stride"], layer["pad"], layer["groups"]), p[:3])
                    self.assertEqual((layer["act_min"], layer["act_max"]), p[3:5])
                else:
                    self.assertEqual((layer["act_min"], layer["act_max"]), p[:2])
            elif op["op"] == "add":
                self.assertEqual((layer["left_shift"], layer["a_multiplier"], layer["a_shift"], layer["b_multiplier"],
                                  layer["b_shift"], layer["out_multiplier"], layer["out_shift"], layer["act_min"],
                                  layer["act_max"]), p[:9])
        self.assertEqual(sum(l["macs"] for l in layers), self.model.macs_per_image)

    def test_layers_agree_with_octet_inspect(self):
        inspect = os.environ.get("OCTET_INSPECT", "")
        if not inspect or not os.access(inspect, os.X_OK):
            self.skipTest("no octet binary (an engine-only build): OCTET_INSPECT is not set")
        out = subprocess.run([inspect, "inspect", self.path], check=True, capture_output=True, text=True).stdout
        heads = re.findall(r"^\[(\d+)\] (\w+) '([^']*)'\n((?:    .*\n)*)", out, re.M)
        layers = self.model.layers
        self.assertEqual(len(heads), len(layers))
        for (index, op, name, body), layer in zip(heads, layers):
            self.assertEqual((int(index), op, name), (layer["index"], layer["op"], layer["name"]))
            o = layer["output"]
            shape = "[" + ",".join(str(d) for d in o["shape"]) + "]"
            self.assertIn("out  %s %s scale %.6g zp %d" % (o["dtype"], shape, o["scale"], o["zero_point"]), body)
            if "weight_bits" in layer:
                self.assertIn("%d bits" % layer["weight_bits"], body)
                self.assertIn("M0 %d shift %d" % (layer["multiplier"][0], layer["shift"][0]), body)

    def test_errors(self):
        missing = os.path.join(self.tmp, "no_such_model.oct")
        with self.assertRaises(OSError) as e:
            octet_engine.Model(missing)
        self.assertIn(missing, str(e.exception))

        with open(self.path, "rb") as f:
            data = bytearray(f.read())
        data[100] ^= 0xFF  # a tensor record: the CRC no longer matches
        with self.assertRaises(ValueError) as e:
            octet_engine.Model.from_bytes(bytes(data), name="corrupt.oct")
        self.assertIn("corrupt.oct", str(e.exception))
        bad = os.path.join(self.tmp, "corrupt.oct")
        with open(bad, "wb") as f:
            f.write(data)
        with self.assertRaises(ValueError) as e:
            octet_engine.Model(bad)
        self.assertIn(bad, str(e.exception))
        with self.assertRaises(ValueError) as e:
            octet_engine.Model.from_bytes(b"", name="empty.oct")
        self.assertIn("empty.oct", str(e.exception))

        m = self.model
        with self.assertRaises(ValueError) as e:
            m.run(np.zeros((2, 32, 32), np.uint8))
        self.assertIn("(2, 32, 32)", str(e.exception))
        self.assertIn("(N, 32, 32, 3)", str(e.exception))
        with self.assertRaises(ValueError) as e:
            m.run(np.zeros((1, 28, 28, 1), np.uint8))
        self.assertIn("(1, 28, 28, 1)", str(e.exception))
        with self.assertRaises(ValueError) as e:
            m.run_float(np.zeros((1, 32, 32, 3, 1), np.uint8))
        self.assertIn("(1, 32, 32, 3, 1)", str(e.exception))
        with self.assertRaises(ValueError) as e:
            m.run(np.zeros((1, 32, 32, 3), np.float32))
        self.assertIn("float32", str(e.exception))
        self.assertIn("uint8", str(e.exception))
        with self.assertRaises(ValueError) as e:
            m.run([[[0, 0, 0]] * 32] * 32)  # a list becomes int64: no silent conversion
        self.assertIn("int64", str(e.exception))
        with self.assertRaises(ValueError):
            octet_engine.Model(self.path, batch_size=0)
        with self.assertRaises(ValueError):
            m.batch_size = 0
        # A failed call leaves the model usable.
        self.assertEqual(m.run(self.images[:2]).shape, (2, 10))


if __name__ == "__main__":
    unittest.main(verbosity=2)
