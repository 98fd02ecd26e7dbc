// quant/qat_internal.h: helpers shared by the QAT source files
// (quant/qat_config.cpp, quant/qat_modules.cpp). Not part of the API.
#pragma once

#include <charconv>
#include <string>

namespace octet::quant::detail {

// The shortest text that reads back as the same value ("0.1", not "0.100000001").
template <class T>
inline std::string shortest(T v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace octet::quant::detail
