// python/octet_engine_py.cpp: octet_engine, Octet's integer-only inference
// engine as a Python module (pybind11), over the C++ API of engine/engine.h
// (the same calls engine/c_api.cpp makes: Model::load / from_bytes, Session,
// set_num_threads) plus the model's description (engine/format.h) for
// Model.layers, the per-op data `octet inspect` prints.
//
//   import numpy as np, octet_engine
//   m = octet_engine.Model("resnet20.oct")
//   logits = m.run(images)            # uint8 [N, H, W, C] -> int8 [N, classes]
//   real = m.run_float(images)        # float32 scale * (q - zero_point)
//
// Errors: the engine's own messages. A file that cannot be read raises
// OSError, bytes that are not a valid model ValueError (both the reader's
// FormatError, which names the file, the record and the field); a wrong
// shape, dtype or batch ValueError; anything else RuntimeError.
//
// Threads: run() releases the GIL. A Model serializes its own runs (it holds
// one engine Session, which is one-thread-at-a-time), so one Model per Python
// thread runs in parallel. The engine's thread count is process-wide; setting
// it waits until no run is in progress (the engine requires that).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/format.h"
#include "engine/kernels.h"
#include "engine/octet_engine.h"  // OCTET_ENGINE_VERSION_STRING

namespace py = pybind11;
namespace eng = octet::engine;

namespace {

// Runs hold it shared, set_num_threads exclusively: the engine's thread pool
// must not be replaced while a parallel_for runs (engine/parallel.cpp).
std::shared_mutex& threads_mutex() {
  static std::shared_mutex m;
  return m;
}

void set_threads(int threads) {
  py::gil_scoped_release release;
  std::unique_lock<std::shared_mutex> lock(threads_mutex());
  eng::set_num_threads(threads);
}

int get_threads() { return eng::num_threads(); }

std::string shape_str(const std::vector<py::ssize_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

py::tuple shape_tuple(const std::vector<int64_t>& s) {
  py::tuple t(s.size());
  for (size_t i = 0; i < s.size(); ++i) t[i] = py::int_(s[i]);
  return t;
}

template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::dict tensor_dict(const eng::TensorDesc& t) {
  py::dict d;
  d["name"] = t.name;
  d["dtype"] = eng::dtype_name(t.dtype);
  d["shape"] = shape_tuple(t.shape);
  d["scale"] = t.scale;
  d["zero_point"] = t.zero_point;
  return d;
}

// One op of the model as `octet inspect` shows it (apps/cmd_inspect.cpp),
// read from the engine's ModelDesc; nothing is recomputed but the real
// multiplier M0 * 2^(shift - 31).
py::dict layer_dict(const eng::Model& model, size_t index) {
  const eng::ModelDesc& d = model.desc();
  const eng::OpDesc& op = d.ops[index];
  const auto& p = op.params;
  py::dict r;
  r["index"] = index;
  r["op"] = eng::op_name(op.type);
  r["name"] = op.name;
  py::list inputs;
  for (const uint32_t t : op.inputs)
    if (!d.tensors[t].constant) inputs.append(tensor_dict(d.tensors[t]));
  r["inputs"] = inputs;
  r["output"] = tensor_dict(d.tensors[op.output]);
  r["macs"] = model.op_macs(index);
  switch (op.type) {
    case eng::OpType::conv2d:
    case eng::OpType::fully_connected: {
      const bool conv = op.type == eng::OpType::conv2d;
      if (conv) {
        r["stride"] = p[eng::param::kStride];
        r["pad"] = p[eng::param::kPad];
        r["groups"] = p[eng::param::kGroups];
      }
      r["act_min"] = conv ? p[eng::param::kConvActMin] : p[eng::param::kFcActMin];
      r["act_max"] = conv ? p[eng::param::kConvActMax] : p[eng::param::kFcActMax];
      const eng::TensorDesc& w = d.tensors[op.inputs[1]];
      r["weight_shape"] = shape_tuple(w.shape);
      r["weight_bits"] = w.bits;
      r["weight_packed_bytes"] = eng::packed_size(static_cast<size_t>(w.numel()), w.bits);
      py::array_t<int8_t> codes(std::vector<py::ssize_t>(w.shape.begin(), w.shape.end()));
      if (!w.i8.empty()) std::memcpy(codes.mutable_data(), w.i8.data(), w.i8.size());
      r["weights"] = codes;
      r["bias"] = to_numpy(d.tensors[op.inputs[2]].i32);
      const std::vector<int32_t>& m0 = d.tensors[op.inputs[3]].i32;
      const std::vector<int32_t>& sh = d.tensors[op.inputs[4]].i32;
      r["multiplier"] = to_numpy(m0);
      r["shift"] = to_numpy(sh);
      py::array_t<double> real(static_cast<py::ssize_t>(m0.size()));
      for (size_t c = 0; c < m0.size(); ++c)
        real.mutable_data()[c] = std::ldexp(static_cast<double>(m0[c]), sh[c] - 31);
      r["real_multiplier"] = real;
      break;
    }
    case eng::OpType::add:
      r["left_shift"] = p[eng::param::kLeftShift];
      r["a_multiplier"] = p[eng::param::kAMult];
      r["a_shift"] = p[eng::param::kAShift];
      r["b_multiplier"] = p[eng::param::kBMult];
      r["b_shift"] = p[eng::param::kBShift];
      r["out_multiplier"] = p[eng::param::kOutMult];
      r["out_shift"] = p[eng::param::kOutShift];
      r["act_min"] = p[eng::param::kAddActMin];
      r["act_max"] = p[eng::param::kAddActMax];
      break;
    case eng::OpType::max_pool:
    case eng::OpType::avg_pool:
      r["kernel"] = py::make_tuple(p[eng::param::kPoolKH], p[eng::param::kPoolKW]);
      r["stride"] = p[eng::param::kPoolStride];
      r["pad"] = p[eng::param::kPoolPad];
      break;
    default: break;
  }
  return r;
}

class PyModel {
 public:
  PyModel(std::shared_ptr<const eng::Model> m, int batch_size) : model_(std::move(m)), batch_size_(batch_size) {
    if (batch_size < 1) throw py::value_error("batch_size " + std::to_string(batch_size) + " must be >= 1");
    const eng::TensorDesc& out = model_->desc().tensors[model_->desc().output];
    has_scale_ = out.scale > 0;
    for (int q = -128; q <= 127; ++q)
      real_[static_cast<size_t>(q + 128)] = static_cast<float>(model_->logit_real(static_cast<int8_t>(q)));
  }

  static std::unique_ptr<PyModel> open(const std::string& path, int batch_size) {
    std::shared_ptr<const eng::Model> m;
    {
      py::gil_scoped_release release;
      m = eng::Model::load(path);
    }
    return std::make_unique<PyModel>(std::move(m), batch_size);
  }

  static std::unique_ptr<PyModel> from_bytes(const py::buffer& data, const std::string& name, int batch_size) {
    Py_buffer view;
    if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw py::error_already_set();
    std::shared_ptr<const eng::Model> m;
    try {
      py::gil_scoped_release release;
      m = eng::Model::from_bytes(
          std::span<const uint8_t>(static_cast<const uint8_t*>(view.buf), static_cast<size_t>(view.len)), name);
    } catch (...) {
      PyBuffer_Release(&view);
      throw;
    }
    PyBuffer_Release(&view);
    return std::make_unique<PyModel>(std::move(m), batch_size);
  }

  const eng::Model& model() const { return *model_; }

  int batch_size() const { return batch_size_; }
  void set_batch_size(int b) {
    if (b < 1) throw py::value_error("batch_size " + std::to_string(b) + " must be >= 1");
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    batch_size_ = b;
    if (session_ && session_->max_batch() > b) session_.reset();  // give a larger arena back
  }

  size_t arena_bytes() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return session_ ? session_->arena_bytes() : 0;
  }

  std::string isa() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return eng::isa_name(session_ ? session_->isa() : eng::best_isa());
  }

  // int8 logits [N, classes], or [classes] for one image given as [H, W, C].
  py::array run(const py::object& images) {
    Batch b = prepare(images, "run");
    py::array_t<int8_t> out(b.out_shape);
    int8_t* dst = out.mutable_data();
    execute(b, [&](std::span<const int8_t> q, size_t offset) { std::memcpy(dst + offset, q.data(), q.size()); });
    return out;
  }

  // The real logits scale * (q - zero_point) as float32 (the C API's
  // octet_session_run_float: computed in double, stored as float).
  py::array run_float(const py::object& images) {
    if (!has_scale_)
      throw py::value_error("run_float: model " + model_->name() +
                            " stores no scale for its logits (0 = unknown): use run()");
    Batch b = prepare(images, "run_float");
    py::array_t<float> out(b.out_shape);
    float* dst = out.mutable_data();
    execute(b, [&](std::span<const int8_t> q, size_t offset) {
      for (size_t i = 0; i < q.size(); ++i) dst[offset + i] = real_[static_cast<size_t>(q[i] + 128)];
    });
    return out;
  }

 private:
  struct Batch {
    py::array_t<uint8_t, py::array::c_style> pixels;  // contiguous NHWC, kept alive while the GIL is released
    size_t count = 0;
    std::vector<py::ssize_t> out_shape;
  };

  // Checks dtype and shape (the messages name both) and makes the pixels
  // C-contiguous (a copy only if they are not).
  Batch prepare(const py::object& images, const char* fn) const {
    const py::array a = py::array::ensure(images);
    if (!a) throw py::value_error(std::string(fn) + ": images must be a numpy array (uint8, NHWC)");
    const int h = model_->input_h(), w = model_->input_w(), c = model_->input_c();
    const std::string want = "(N, " + std::to_string(h) + ", " + std::to_string(w) + ", " + std::to_string(c) +
                             ") or (" + std::to_string(h) + ", " + std::to_string(w) + ", " + std::to_string(c) + ")";
    if (a.dtype().kind() != 'u' || a.itemsize() != 1)
      throw py::value_error(std::string(fn) + ": images have dtype " + py::str(a.dtype()).cast<std::string>() +
                            ", expected uint8 pixels " + want + " (convert with np.asarray(x, dtype=np.uint8))");
    std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
    const bool one = a.ndim() == 3;
    const size_t off = one ? 0 : 1;
    if ((a.ndim() != 3 && a.ndim() != 4) || shape[off] != h || shape[off + 1] != w || shape[off + 2] != c)
      throw py::value_error(std::string(fn) + ": images have shape " + shape_str(shape) + ", expected " + want +
                            " for model " + model_->name());
    Batch b;
    b.pixels = py::array_t<uint8_t, py::array::c_style>::ensure(a);
    if (!b.pixels) throw py::error_already_set();
    b.count = one ? 1 : static_cast<size_t>(shape[0]);
    const auto classes = static_cast<py::ssize_t>(model_->num_classes());
    b.out_shape = one ? std::vector<py::ssize_t>{classes} : std::vector<py::ssize_t>{shape[0], classes};
    return b;
  }

  // Runs the batch in pieces of at most batch_size images on this Model's
  // session (made, or made larger, on demand), without the GIL; `emit` gets
  // each piece's logits and their offset in the output.
  template <class Emit>
  void execute(const Batch& b, Emit emit) {
    if (b.count == 0) return;
    const uint8_t* px = b.pixels.data();
    const size_t image = model_->input_bytes();
    const size_t classes = static_cast<size_t>(model_->num_classes());
    py::gil_scoped_release release;
    std::shared_lock<std::shared_mutex> threads_lock(threads_mutex());
    std::lock_guard<std::mutex> lock(mutex_);
    const int want = static_cast<int>(std::min<size_t>(b.count, static_cast<size_t>(batch_size_.load())));
    if (!session_ || session_->max_batch() < want) {
      session_.reset();  // the old arena goes before the new one comes
      session_ = std::make_unique<eng::Session>(model_, want);
    }
    const size_t piece = static_cast<size_t>(session_->max_batch());
    for (size_t done = 0; done < b.count;) {
      const size_t n = std::min(piece, b.count - done);
      emit(session_->run(px + done * image, static_cast<int>(n)), done * classes);
      done += n;
    }
  }

  std::shared_ptr<const eng::Model> model_;
  std::unique_ptr<eng::Session> session_;
  std::atomic<int> batch_size_{1};  // read with the GIL, written under mutex_ without it
  bool has_scale_ = false;
  std::array<float, 256> real_{};
  std::mutex mutex_;
};

}  // namespace

PYBIND11_MODULE(octet_engine, m) {
  m.doc() = R"(Octet's integer-only int8 inference engine.

    import numpy as np, octet_engine
    model = octet_engine.Model("resnet20.oct")
    print(model.input_shape, model.num_classes)       # (32, 32, 3) 10
    images = np.zeros((8, 32, 32, 3), np.uint8)      # raw pixels, NHWC
    q = model.run(images)                             # int8 logits [8, 10]
    x = model.run_float(images)                       # float32 scale * (q - zero_point)
    for layer in model.layers: print(layer["index"], layer["op"], layer["name"])

The results are bit exact: the same on every CPU, instruction set, thread
count and batch size. run() and run_float() release the GIL; a Model runs one
call at a time (use one Model per Python thread to run in parallel).

Errors carry the engine's message: OSError for a model file that cannot be
read, ValueError for bytes that are not a valid model and for images of the
wrong dtype or shape, RuntimeError for anything else.)";

  // The reader's FormatError: io -> OSError, everything else -> ValueError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const eng::FormatError& e) {
      PyErr_SetString(e.code() == eng::FormatErrc::io ? PyExc_OSError : PyExc_ValueError, e.what());
    }
  });

  m.attr("__version__") = OCTET_ENGINE_VERSION_STRING;
  m.def("set_num_threads", &set_threads, py::arg("threads"),
        "Sets the engine's number of threads, for the whole process (every Model); <= 0: all cores. "
        "Waits for running calls to finish.");
  m.def("num_threads", &get_threads, "The engine's number of threads (process-wide).");
  m.def("isa", [] { return std::string(eng::isa_name(eng::best_isa())); },
        "The instruction set the engine's kernels use on this CPU: reference, avx2, avx512_vnni, amx, neon, "
        "neon_dot (the environment variable OCTET_ISA may pick a lower one).");

  py::class_<PyModel>(m, "Model", R"(A loaded, validated Octet model (.oct) and the engine session that runs it.

Model(path, batch_size=64) reads the file; Model.from_bytes(data) reads the
bytes of one. The engine prepares its kernels and one arena for up to
`batch_size` images on the first run (for fewer if the first batch is
smaller, growing on demand); larger batches run in pieces of batch_size.)")
      .def(py::init(&PyModel::open), py::arg("path"), py::arg("batch_size") = 64,
           "Reads and validates the model file at `path`. OSError if it cannot be read, ValueError (naming the "
           "file, the record and the field) if it is not a valid model.")
      .def_static("from_bytes", &PyModel::from_bytes, py::arg("data"), py::arg("name") = "<memory>",
                  py::arg("batch_size") = 64,
                  "A model from the bytes of a model file (bytes, bytearray, memoryview, any contiguous buffer); "
                  "`name` starts error messages and is the model's name if its metadata has none. The bytes may be "
                  "freed afterwards (the engine decodes them into its own storage).")
      .def_property_readonly("name", [](const PyModel& s) { return s.model().name(); },
                             "The metadata's model_name, else the path or the name given to from_bytes.")
      .def_property_readonly("input_shape",
                             [](const PyModel& s) {
                               return py::make_tuple(s.model().input_h(), s.model().input_w(), s.model().input_c());
                             },
                             "(H, W, C) of one input image: uint8 pixels, NHWC.")
      .def_property_readonly("num_classes", [](const PyModel& s) { return s.model().num_classes(); })
      .def_property_readonly(
          "input_scale", [](const PyModel& s) { return s.model().desc().tensors[s.model().desc().input].scale; },
          "real = input_scale * (pixel - input_zero_point); informative only (the engine never uses it), 0 = unknown.")
      .def_property_readonly(
          "input_zero_point",
          [](const PyModel& s) { return s.model().desc().tensors[s.model().desc().input].zero_point; },
          "The pixels' zero point, in uint8's range.")
      .def_property_readonly(
          "output_scale", [](const PyModel& s) { return s.model().desc().tensors[s.model().desc().output].scale; },
          "real logit = output_scale * (q - output_zero_point); 0 = unknown (run_float then fails).")
      .def_property_readonly(
          "output_zero_point",
          [](const PyModel& s) { return s.model().desc().tensors[s.model().desc().output].zero_point; })
      .def_property_readonly(
          "class_names",
          [](const PyModel& s) -> py::object {
            const auto names = s.model().class_names();
            if (names.empty()) return py::none();
            return py::cast(names);
          },
          "The class names stored in the model, or None.")
      .def_property_readonly(
          "metadata",
          [](const PyModel& s) {
            py::dict d;
            for (const auto& [k, v] : s.model().desc().metadata) d[py::str(k)] = v;
            return d;
          },
          "Every metadata entry of the file (model_name, class_names, preprocessing, ...) as a dict of str.")
      .def_property_readonly("macs_per_image", [](const PyModel& s) { return s.model().macs_per_image(); },
                             "Multiply-adds of the conv and fully connected layers per image.")
      .def_property_readonly("weight_bytes", [](const PyModel& s) { return s.model().weight_bytes_stored(); },
                             "The weights' bytes as stored in the file (packed at their bit widths).")
      .def_property_readonly(
          "layers",
          [](const PyModel& s) {
            py::list l;
            for (size_t i = 0; i < s.model().desc().ops.size(); ++i) l.append(layer_dict(s.model(), i));
            return l;
          },
          R"(One dict per op of the model, in execution order (what `octet inspect` prints):
  index, op ('input', 'conv2d', 'fully_connected', 'add', 'max_pool',
  'avg_pool', 'global_avg_pool'), name, macs (per image),
  inputs (the activation inputs) and output: dicts of name, dtype, shape,
  scale, zero_point.
  conv2d: stride, pad, groups. conv2d and fully_connected: act_min, act_max
  (the output clamp, in the output dtype's range), weight_shape, weight_bits,
  weight_packed_bytes, weights (int8 codes), and per output channel bias
  (int32), multiplier (M0, int32), shift (int32), real_multiplier
  (M0 * 2**(shift - 31) = s_in * s_w / s_out, float64).
  add: left_shift, a_/b_/out_multiplier and _shift, act_min, act_max.
  max_pool, avg_pool: kernel (kh, kw), stride, pad.)")
      .def_property("threads", [](const PyModel&) { return get_threads(); },
                    [](PyModel&, int t) { set_threads(t); },
                    "The engine's number of threads. PROCESS-WIDE (the engine has one pool): the same as "
                    "octet_engine.set_num_threads / num_threads. <= 0: all cores.")
      .def_property("batch_size", &PyModel::batch_size, &PyModel::set_batch_size,
                    "The most images one engine call runs (the arena is sized for it); larger batches run in pieces.")
      .def_property_readonly("arena_bytes", &PyModel::arena_bytes,
                             "Bytes of the engine's arena (activations + scratch) as prepared so far, 0 before the "
                             "first run.")
      .def_property_readonly("isa", &PyModel::isa, "The instruction set of this model's kernels.")
      .def("run", &PyModel::run, py::arg("images"),
           R"(Classifies uint8 images: a numpy array [N, H, W, C] (NHWC, H, W, C =
input_shape) gives int8 logits [N, num_classes]; one image [H, W, C] gives
[num_classes]. ValueError for another dtype or shape (no conversion is made:
pass uint8 pixels). Releases the GIL.)")
      .def("run_float", &PyModel::run_float, py::arg("images"),
           "As run(), returning the real logits output_scale * (q - output_zero_point) as float32. ValueError if "
           "the model stores no output scale.")
      .def("__repr__", [](const PyModel& s) {
        const eng::Model& md = s.model();
        return "<octet_engine.Model '" + md.name() + "' " + std::to_string(md.input_h()) + "x" +
               std::to_string(md.input_w()) + "x" + std::to_string(md.input_c()) + " -> " +
               std::to_string(md.num_classes()) + " classes, " + std::to_string(md.desc().ops.size()) + " ops>";
      });
}
