// make_fuzz_corpus DIR: writes the fuzzer's seed corpus: small valid models
// (every op type, 2/4/8-bit weights, a ResNet) and one malformed variant of
// each kind the loader must reject (docs/format.md, "Errors").
#include <cstdio>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/builder.h"
#include "engine/format.h"
#include "engine/samples.h"

using namespace octet::engine;

namespace {

using Bytes = std::vector<uint8_t>;

void put(Bytes& b, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n && at + i < b.size(); ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t find_tensor(const ModelDesc& d, const std::string& name) {
  for (size_t i = 0; i < d.tensors.size(); ++i)
    if (d.tensors[i].name == name) return static_cast<uint32_t>(i);
  throw std::runtime_error("make_fuzz_corpus: no tensor " + name);
}
size_t find_op(const ModelDesc& d, const std::string& name) {
  for (size_t i = 0; i < d.ops.size(); ++i)
    if (d.ops[i].name == name) return i;
  throw std::runtime_error("make_fuzz_corpus: no op " + name);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_corpus DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int written = 0;
  auto save = [&](const std::string& name, const Bytes& b) {
    write_file_atomic(dir + "/" + name + ".oct", b);
    ++written;
  };
  try {
    // Valid models.
    for (int bits : {8, 4, 2}) save("valid_tiny_" + std::to_string(bits) + "bit", tiny_model(bits, bits).serialize());
    ResNetSpec spec;
    spec.blocks_per_stage = 1;
    spec.width = 4;
    spec.image = 8;
    spec.classes = 3;
    save("valid_resnet_small", random_resnet(spec).serialize());

    // Malformed: byte-level.
    const ModelDesc base = tiny_model(1).desc();
    const Bytes valid = tiny_model(1).serialize();
    auto bytes_variant = [&](const std::string& name, const std::function<void(Bytes&)>& edit, bool crc) {
      Bytes b = valid;
      edit(b);
      if (crc) fix_crc(b);
      save("bad_" + name, b);
    };
    bytes_variant("truncated", [](Bytes& b) { b.resize(b.size() / 2); }, false);
    bytes_variant("trailing", [](Bytes& b) { b.push_back(0); }, false);
    bytes_variant("magic", [](Bytes& b) { b[1] = 'X'; }, false);
    bytes_variant("version", [](Bytes& b) { put(b, 8, 2, 4); }, true);
    bytes_variant("crc", [](Bytes& b) { b[b.size() / 2] ^= 1; }, false);
    bytes_variant("tensor_count", [](Bytes& b) { put(b, 24, 0xFFFFFFFFu, 4); }, true);
    bytes_variant("data_offset", [&](Bytes& b) { put(b, 64 + 64 * find_tensor(base, "conv1.weight") + 40, 1ull << 40, 8); },
                  true);

    // Malformed: model-level.
    auto desc_variant = [&](const std::string& name, const std::function<void(ModelDesc&)>& edit) {
      ModelDesc d = base;
      edit(d);
      save("bad_" + name, encode(d));
    };
    desc_variant("huge_dim", [](ModelDesc& d) { d.tensors[d.input].shape[0] = 1 << 25; });
    desc_variant("huge_activation", [](ModelDesc& d) { d.tensors[d.input].shape = {4096, 4096, 3}; });
    desc_variant("order", [](ModelDesc& d) { std::swap(d.ops[find_op(d, "conv1")], d.ops[find_op(d, "dw")]); });
    desc_variant("two_producers", [](ModelDesc& d) { d.ops[find_op(d, "pw")].output = d.ops[find_op(d, "dw")].output; });
    desc_variant("int32_as_activation",
                 [](ModelDesc& d) { d.ops[find_op(d, "pw")].inputs[0] = find_tensor(d, "conv1.bias"); });
    desc_variant("shape", [](ModelDesc& d) { d.tensors[d.ops[find_op(d, "dw")].output].shape = {4, 5, 8}; });
    desc_variant("multiplier", [](ModelDesc& d) { d.tensors[find_tensor(d, "conv1.multiplier")].i32[0] = 12345; });
    desc_variant("shift", [](ModelDesc& d) { d.tensors[find_tensor(d, "conv1.shift")].i32[0] = 31; });
    desc_variant("headroom", [](ModelDesc& d) { d.tensors[find_tensor(d, "conv1.bias")].i32[0] = 2147000000; });
    desc_variant("unknown_op", [](ModelDesc& d) { d.ops[3].type = static_cast<OpType>(99); });
    desc_variant("zero_point", [](ModelDesc& d) { d.tensors[d.ops[find_op(d, "dw")].output].zero_point = 200; });
    desc_variant("class_names", [](ModelDesc& d) { d.metadata.back().second = "a\nb"; });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_fuzz_corpus: %s\n", e.what());
    return 1;
  }
  std::printf("make_fuzz_corpus: %d files in %s\n", written, dir.c_str());
  return 0;
}
