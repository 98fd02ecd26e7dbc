// .npy files (core/npy.h): every dtype round-trips through a file, the writer's
// bytes are numpy's own, and malformed files (truncated, wrong dtype, Fortran
// order, bad header) are refused with a message naming the file.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "core/npy.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;

namespace {

// A version 1.0 file as numpy writes it: header padded with spaces and '\n' so
// the data start at byte 128 (for headers this short).
std::vector<uint8_t> npy_file(const std::string& dict, const std::vector<uint8_t>& data) {
  std::string header = dict;
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  // Assembled as a string (GCC 12's -Warray-bounds misfires on inserting
  // into a short braced-initialized vector).
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size());
  bytes += '\0';
  bytes += header;
  bytes.append(data.begin(), data.end());
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

template <class T>
std::vector<uint8_t> raw(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("uint8, int8 and float32 arrays round-trip through a file") {
  TempDir dir;
  SUBCASE("uint8 [N, H, W, C]") {
    std::vector<uint8_t> v(2 * 3 * 4 * 3);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 37 + 1);
    v[0] = 0;
    v[1] = 255;
    write_npy<uint8_t>(dir / "u8.npy", {2, 3, 4, 3}, v);
    const NpyArray<uint8_t> a = read_npy<uint8_t>(dir / "u8.npy");
    CHECK(a.shape == std::vector<int64_t>{2, 3, 4, 3});
    CHECK(a.data == v);
    const NpyHeader h = read_npy_header(dir / "u8.npy");
    CHECK(h.dtype == NpyDtype::u8);
    CHECK(h.shape == a.shape);
    CHECK(h.data_offset % 64 == 0);  // numpy's alignment
  }
  SUBCASE("int8 [n]") {
    const std::vector<int8_t> v = {-128, -1, 0, 1, 127};
    write_npy<int8_t>(dir / "i8.npy", {5}, v);
    const NpyArray<int8_t> a = read_npy<int8_t>(dir / "i8.npy");
    CHECK(a.shape == std::vector<int64_t>{5});
    CHECK(a.data == v);
  }
  SUBCASE("float32 [N, classes], bit for bit") {
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> v = {1.5f, -2.0f, 0.25f, -0.0f, 1e-40f /* subnormal */, inf, -inf, 3.4e38f};
    write_npy<float>(dir / "f32.npy", {2, 4}, v);
    const NpyArray<float> a = read_npy<float>(dir / "f32.npy");
    CHECK(a.shape == std::vector<int64_t>{2, 4});
    REQUIRE(a.data.size() == v.size());
    CHECK(std::memcmp(a.data.data(), v.data(), v.size() * sizeof(float)) == 0);
  }
  SUBCASE("empty and scalar shapes") {
    write_npy<float>(dir / "empty.npy", {0, 10}, std::vector<float>{});
    const NpyArray<float> e = read_npy<float>(dir / "empty.npy");
    CHECK(e.shape == std::vector<int64_t>{0, 10});
    CHECK(e.data.empty());
    write_npy<float>(dir / "scalar.npy", {}, std::vector<float>{7.0f});
    const NpyArray<float> s = read_npy<float>(dir / "scalar.npy");
    CHECK(s.shape.empty());
    CHECK(s.data == std::vector<float>{7.0f});
  }
  SUBCASE("an existing file is replaced, and no temporary file is left") {
    write_npy<uint8_t>(dir / "x.npy", {1}, std::vector<uint8_t>{1});
    write_npy<uint8_t>(dir / "x.npy", {2}, std::vector<uint8_t>{2, 3});
    CHECK(read_npy<uint8_t>(dir / "x.npy").data == std::vector<uint8_t>{2, 3});
    int files = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
    CHECK(files == 1);
  }
}

TEST_CASE("the writer's bytes are numpy's (np.save of numpy 1.24)") {
  CHECK(encode_npy<uint8_t>({3}, std::vector<uint8_t>{0, 255, 7}) ==
        npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", {0, 255, 7}));
  const std::vector<float> f = {1.5f, -2.0f, 0.25f, 3.0f, 1e-3f, -0.0f};
  CHECK(encode_npy<float>({2, 3}, f) == npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", raw(f)));
  CHECK_THROWS_AS(encode_npy<float>({2, 2}, f), std::invalid_argument);  // 4 items, 6 given
}

TEST_CASE("what other writers put is read: '<u1', double quotes, no trailing comma, version 2.0") {
  const NpyArray<uint8_t> a =
      decode_npy<uint8_t>(npy_file(R"({"descr": "<u1", "shape": (2, 1), "fortran_order": False})", {4, 5}), "mem");
  CHECK(a.shape == std::vector<int64_t>{2, 1});
  CHECK(a.data == std::vector<uint8_t>{4, 5});
  std::vector<uint8_t> v2 = npy_file("{'descr': '|i1', 'fortran_order': False, 'shape': (1,), }", {0xff});
  v2[6] = 2;  // version 2.0: a 4-byte header length
  v2.insert(v2.begin() + 10, {0, 0});
  const NpyArray<int8_t> b = decode_npy<int8_t>(v2, "mem2");
  CHECK(b.data == std::vector<int8_t>{-1});
}

TEST_CASE("malformed files are refused, naming the file") {
  TempDir dir;
  const std::vector<uint8_t> good = encode_npy<uint8_t>({2, 2, 2, 3}, std::vector<uint8_t>(24, 9));

  SUBCASE("truncated data") {
    const std::string p = dir / "trunc.npy";
    write_bytes(p, std::vector<uint8_t>(good.begin(), good.end() - 5));
    const std::string e = error_of([&] { read_npy<uint8_t>(p); });
    CHECK(contains(e, p));
    CHECK(contains(e, "truncated"));
    CHECK(contains(e, "24 data bytes"));
  }
  SUBCASE("truncated header") {
    const std::string p = dir / "head.npy";
    write_bytes(p, std::vector<uint8_t>(good.begin(), good.begin() + 40));
    CHECK(contains(error_of([&] { read_npy<uint8_t>(p); }), p + ": truncated .npy header"));
    CHECK(contains(error_of([&] { read_npy_header(p); }), p + ": truncated .npy header"));
  }
  SUBCASE("bytes after the data") {
    const std::string p = dir / "long.npy";
    std::vector<uint8_t> b = good;
    b.push_back(0);
    write_bytes(p, b);
    CHECK(contains(error_of([&] { read_npy<uint8_t>(p); }), "1 bytes after the data"));
  }
  SUBCASE("a dtype other than the one asked for") {
    const std::string p = dir / "u8.npy";
    write_bytes(p, good);
    const std::string e = error_of([&] { read_npy<float>(p); });
    CHECK(contains(e, p));
    CHECK(contains(e, "holds uint8"));
    CHECK(contains(e, "float32 was expected"));
    CHECK(contains(error_of([&] { read_npy<int8_t>(p); }), "int8 was expected"));
  }
  SUBCASE("a dtype that is not read at all") {
    const std::string p = dir / "f8.npy";
    write_bytes(p, npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", std::vector<uint8_t>(8, 0)));
    CHECK(contains(error_of([&] { read_npy<float>(p); }), p + ": dtype '<f8' is not read"));
    write_bytes(p, npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", std::vector<uint8_t>(4, 0)));
    CHECK(contains(error_of([&] { read_npy<float>(p); }), "dtype '>f4' is not read"));
  }
  SUBCASE("Fortran order") {
    const std::string p = dir / "fortran.npy";
    write_bytes(p, npy_file("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }", std::vector<uint8_t>(6, 1)));
    const std::string e = error_of([&] { read_npy<uint8_t>(p); });
    CHECK(contains(e, p));
    CHECK(contains(e, "Fortran-order"));
  }
  SUBCASE("bad magic, version, header syntax and keys") {
    const std::string p = dir / "bad.npy";
    write_bytes(p, {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0});
    CHECK(contains(error_of([&] { read_npy<uint8_t>(p); }), p + ": not a .npy file"));
    std::vector<uint8_t> v3 = good;
    v3[6] = 3;
    write_bytes(p, v3);
    CHECK(contains(error_of([&] { read_npy<uint8_t>(p); }), "format version 3.0"));
    for (const char* dict : {"{'descr': '|u1', 'fortran_order': False}",                           // no shape
                             "{'descr': '|u1', 'fortran_order': False, 'shape': (2, -3), }",         // negative
                             "{'descr': '|u1', 'fortran_order': Maybe, 'shape': (2,), }",            // not a bool
                             "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), 'x': 1}",      // unknown key
                             "{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (1,)}",
                             "{'descr': '|u1' 'fortran_order': False, 'shape': (2,), }",             // no comma
                             "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), } junk",
                             "['descr', '|u1']"}) {
      CAPTURE(dict);
      write_bytes(p, npy_file(dict, {1, 2}));
      CHECK(contains(error_of([&] { read_npy<uint8_t>(p); }), p + ": malformed .npy header"));
    }
  }
  SUBCASE("a missing file") {
    const std::string p = dir / "none.npy";
    CHECK(contains(error_of([&] { read_npy<uint8_t>(p); }), "cannot open " + p));
  }
}
