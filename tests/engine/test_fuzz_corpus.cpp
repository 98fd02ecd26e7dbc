// The loader fuzzer's findings stay found: every file of the kept corpus
// (engine/fuzz/corpus, minimized by scripts/ci_fuzz.sh --update) and of
// engine/fuzz/crashes (each input that ever crashed the loader, kept as a
// regression case) goes through the fuzz target's own check
// (engine/fuzz/fuzz_target.h): decoding either succeeds, and the model then
// runs, or fails with FormatError. Runs in every build, sanitizers included.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/fuzz/fuzz_target.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename() != "README.md") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("fuzz corpus and crash inputs: FormatError or a model that runs, never anything else") {
  octet::engine::set_num_threads(1);
  const fs::path root = fs::path(OCTET_SOURCE_DIR) / "engine" / "fuzz";
  const std::vector<fs::path> corpus = files_in(root / "corpus");
  const std::vector<fs::path> crashes = files_in(root / "crashes");
  // The corpus is committed: an empty one means this test checked nothing.
  REQUIRE_MESSAGE(corpus.size() >= 10, "engine/fuzz/corpus holds " << corpus.size() << " files");
  MESSAGE(corpus.size() << " corpus files, " << crashes.size() << " crash inputs");
  for (const std::vector<fs::path>* set : {&corpus, &crashes})
    for (const fs::path& p : *set) {
      CAPTURE(p.string());
      const std::vector<uint8_t> bytes = read_bytes(p);
      CHECK_NOTHROW(octet::engine::fuzz::try_input(bytes.data(), bytes.size()));
    }
}
