// No floating point in the inference path, checked on the machine code: the
// engine library (liboctet_engine.a of this build) is disassembled with
// objdump and every instruction of its run-time code must be integer-only.
// Run-time code = every function of the kernel objects (kernels_*.cpp.o,
// parallel.cpp.o, cpu.cpp.o) and the executor's run path in engine.cpp.o
// (Session::run, the op step it calls, and the chunk functions it hands to
// parallel_for). The loader and the writer (format_*.cpp, samples.cpp, Model's
// display helpers) may use double: they run offline or once at load.
//
// Floating point = arithmetic, comparison or conversion on float/double/half
// values: x86 SSE/AVX/AVX-512 *ss/sd/ps/pd/sh/ph arithmetic, cvt*, comis*,
// x87, AMX bf16/fp16 tiles; AArch64 f* (except fmov, a plain register move)
// and scvtf/ucvtf/bf*. Moves, logic and shuffles of vector registers are
// not floating point and are allowed.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cctype>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace {

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
bool starts_with_any(const std::string& s, std::initializer_list<const char*> ps) {
  for (const char* p : ps)
    if (starts_with(s, p)) return true;
  return false;
}

// Is this instruction mnemonic a floating-point operation?
bool is_float_instruction(const std::string& m) {
#if defined(__aarch64__)
  if (m == "fmov") return false;
  if (starts_with(m, "f")) return true;
  return m == "scvtf" || m == "ucvtf" || starts_with_any(m, {"bfcvt", "bfdot", "bfmla", "bfmmla"});
#else
  if (starts_with_any(m, {"cvt", "vcvt"})) return true;                           // conversions
  if (starts_with_any(m, {"comis", "ucomis", "vcomis", "vucomis"})) return true;  // scalar compares
  if (starts_with(m, "f")) return true;                                            // x87
  if (starts_with_any(m, {"tdpbf16", "tdpfp16", "tcmmimfp16", "tcmmrlfp16"})) return true;  // AMX float tiles
  if (starts_with_any(m, {"p", "vp", "tdpb"})) return false;  // packed integer, AMX int8 tiles
  bool float_suffix = false;
  for (const char* suffix : {"ps", "pd", "ss", "sd", "ph", "sh"}) float_suffix |= ends_with(m, suffix);
  if (!float_suffix) return false;
  // data movement, bitwise logic, shuffles and string ops with the same suffixes
  std::string base = starts_with(m, "v") ? m.substr(1) : m;
  return !starts_with_any(base, {"mov", "and", "or", "xor", "blend", "shuf", "unpck", "perm", "broadcast", "extract",
                                 "insert", "maskmov", "gather", "scatter", "expand", "compress", "lods", "stos",
                                 "scas", "cmps", "load", "store", "align"});
#endif
}

const char* objdump_tool() {
#if defined(__aarch64__)
  return "aarch64-linux-gnu-objdump";
#else
  return "objdump";
#endif
}

struct Finding {
  std::string object, function, line;
};

struct Scan {
  std::set<std::string> objects;        // archive members seen
  std::map<std::string, size_t> checked;  // instructions checked per object
  std::set<std::string> functions;      // run-path functions of engine.cpp.o seen
  std::vector<Finding> floats;
};

bool runtime_object(const std::string& o) {
  return starts_with(o, "kernels_") || o == "parallel.cpp.o" || o == "cpu.cpp.o";
}

bool runtime_function(const std::string& object, const std::string& f) {
  if (runtime_object(object)) return true;
  if (object != "engine.cpp.o") return false;
  return f.find("Session::run") != std::string::npos || f.find("Session::Impl::run_step") != std::string::npos ||
         f.find("input_chunk") != std::string::npos ||
         f.find("add_chunk") != std::string::npos || f.find("pool_chunk") != std::string::npos;
}

Scan scan(const std::string& archive) {
  Scan s;
  const std::string cmd = std::string(objdump_tool()) + " -d -C --no-show-raw-insn '" + archive + "' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  REQUIRE_MESSAGE(pipe, "cannot run " << cmd);
  std::string object, function, line;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe.get())) {
    line = buf;
    if (!line.empty() && line.back() == '\n') line.pop_back();
    const size_t format = line.find(":     file format");
    if (format != std::string::npos) {  // "kernels_ref.cpp.o:     file format elf64-x86-64"
      object = line.substr(0, format);
      s.objects.insert(object);
      continue;
    }
    const size_t open = line.find(" <");
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && open != std::string::npos &&
        ends_with(line, ">:")) {  // "0000000000000040 <octet::engine::add_ref(...)>:"
      function = line.substr(open + 2, line.size() - open - 4);
      if (object == "engine.cpp.o" && runtime_function(object, function)) s.functions.insert(function);
      continue;
    }
    // "    1079:\tcvtsi2sd %r9d,%xmm0"
    const size_t colon = line.find(":\t");
    if (line.empty() || line[0] != ' ' || colon == std::string::npos) continue;
    if (!runtime_function(object, function)) continue;
    size_t b = colon + 2, e = b;
    while (e < line.size() && (std::isalnum(static_cast<unsigned char>(line[e])) || line[e] == '.')) ++e;
    const std::string mnemonic = line.substr(b, e - b);
    if (mnemonic.empty()) continue;
    ++s.checked[object];
    if (is_float_instruction(mnemonic)) s.floats.push_back({object, function, line});
  }
  return s;
}

}  // namespace

TEST_CASE("the classifier knows float from integer instructions") {
#if defined(__aarch64__)
  for (const char* f : {"fadd", "fmul", "fmla", "fcvtzs", "scvtf", "ucvtf", "fcmp", "frintx", "fdiv"})
    CHECK_MESSAGE(is_float_instruction(f), f);
  for (const char* i : {"fmov", "sdot", "sqrdmulh", "smlal", "add", "ldr", "mul", "srshl", "sqxtn", "dup"})
    CHECK_MESSAGE(!is_float_instruction(i), i);
#else
  for (const char* f : {"addss", "vaddps", "mulsd", "vfmadd231ps", "cvtsi2sd", "vcvtdq2ps", "cvttsd2si", "ucomisd",
                        "vcomiss", "fld", "fstp", "fmul", "sqrtsd", "vdivpd", "maxss", "vrndscaleps", "vmulph",
                        "tdpbf16ps", "vcmpps", "roundsd"})
    CHECK_MESSAGE(is_float_instruction(f), f);
  for (const char* i : {"vpdpbusd", "vpmaddwd", "vpmovdb", "vmovss", "movsd", "vxorps", "vmovaps", "vpmuldq",
                        "vpsravd", "imul", "add", "vpbroadcastd", "tdpbusd", "vpshufb", "vblendps", "vbroadcastss",
                        "stos", "movaps", "vpermps", "vpsrlq"})
    CHECK_MESSAGE(!is_float_instruction(i), i);
#endif
}

TEST_CASE("the engine's run-time code has no floating-point instruction") {
  const std::string archive = OCTET_BINARY_DIR "/engine/liboctet_engine.a";
  const Scan s = scan(archive);
  // The scan must have seen what it claims to check (no vacuous pass).
  for (const char* o : {"kernels_ref.cpp.o", "kernels_conv.cpp.o", "kernels_fast.cpp.o", "parallel.cpp.o",
                        "engine.cpp.o"}) {
    REQUIRE_MESSAGE(s.objects.count(o), o << " is not in " << archive << " (objdump " << objdump_tool() << ")");
  }
  CHECK(s.checked.at("kernels_ref.cpp.o") > 100);
  CHECK(s.checked.at("kernels_conv.cpp.o") > 100);
#if defined(__x86_64__)
  CHECK(s.checked.at("kernels_avx512.cpp.o") > 100);
  CHECK(s.checked.at("kernels_avx2.cpp.o") > 100);
#elif defined(__aarch64__)
  CHECK(s.checked.at("kernels_neon.cpp.o") > 100);
  CHECK(s.checked.at("kernels_neon_dot.cpp.o") > 100);
#endif
  bool saw_run = false;
  for (const std::string& f : s.functions) saw_run |= f.find("Session::run") != std::string::npos;
  CHECK_MESSAGE(saw_run, "Session::run not found in engine.cpp.o");
  size_t total = 0;
  for (const auto& [o, n] : s.checked) total += n;
  MESSAGE("checked " << total << " instructions in " << s.checked.size() << " objects");
  for (const Finding& f : s.floats) FAIL_CHECK("floating point in " << f.object << ", " << f.function << ":\n" << f.line);
  CHECK(s.floats.empty());
}
