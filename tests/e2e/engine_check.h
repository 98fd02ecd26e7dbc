// tests/e2e/engine_check.h: every test image through the engine and through
// the integer simulation, the check both end-to-end suites end with.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/dataset.h"
#include "engine/engine.h"
#include "quant/intsim.h"

namespace octet::testing {

// Images [first, first + n) of a data set (CHW) as the engine takes them (NHWC).
inline std::vector<uint8_t> nhwc(const Dataset& ds, int64_t first, int64_t n) {
  const int C = ds.channels, HW = ds.height * ds.width;
  std::vector<uint8_t> out(static_cast<size_t>(n) * C * HW);
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < HW; ++p)
        out[(static_cast<size_t>(i) * HW + p) * C + c] = ds.image(first + i)[static_cast<size_t>(c) * HW + p];
  return out;
}

struct EngineCheck {
  int64_t images = 0;
  int64_t exact = 0;  // images whose int8 logits equal the simulation's, every one
  int64_t hits = 0;   // images whose engine top-1 is the label
  double top1() const { return images ? static_cast<double>(hits) / static_cast<double>(images) : 0.0; }
};

// Runs every image of `test` in the engine (batches of `batch`) and in the
// integer simulation of the same model.
inline EngineCheck engine_vs_intsim(const std::shared_ptr<const engine::Model>& model, const Dataset& test, int batch) {
  const int classes = model->num_classes();
  engine::Session session(model, batch);
  const quant::IntSim sim(model->desc());
  EngineCheck r;
  for (int64_t start = 0; start < test.size(); start += batch) {
    const int n = static_cast<int>(std::min<int64_t>(batch, test.size() - start));
    const std::vector<uint8_t> px = nhwc(test, start, n);
    const std::span<const int8_t> e = session.run(px.data(), n);
    const std::vector<int8_t> s = sim.run(px.data(), n);
    for (int i = 0; i < n; ++i) {
      const auto row = e.subspan(static_cast<size_t>(i) * classes, static_cast<size_t>(classes));
      r.exact += std::equal(row.begin(), row.end(), s.begin() + static_cast<std::ptrdiff_t>(i) * classes);
      r.hits += engine::argmax(row) == test.labels[static_cast<size_t>(start + i)];
    }
  }
  r.images = test.size();
  return r;
}

}  // namespace octet::testing
