// core/profile.h: where a training step's time goes, op by op. Off by
// default; while on, every Scope adds its wall time to a table under its
// name. Scopes nest, and a scope's time is exclusive: what its inner scopes
// took is theirs, not its, so the table's rows add up to the time spent
// inside scopes without counting anything twice.
//
//   profile::enable(true);                 // clears the table
//   { profile::Scope s("conv2d forward"); conv_forward(...); }
//   for (const profile::Row& r : profile::rows()) ...   // largest first
//
// The ops of core/ (conv2d, batch_norm, relu, add, pools, linear, the loss),
// the backward pass of every recorded op (core/tensor.cpp: "<op> backward",
// with the convolution's input and weight gradients as their own rows), the
// autograd's gradient sums and the optimizer step open scopes; `octet bench
// train` prints the table of a few steps. Scopes are per thread (the stack of
// open scopes is thread-local); the table is shared. Off, a Scope costs one
// relaxed atomic load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace octet::profile {

bool enabled();
void enable(bool on);  // switching on clears the table

struct Row {
  std::string name;
  double seconds = 0;  // exclusive wall time
  int64_t calls = 0;
};
std::vector<Row> rows();  // largest first

class Scope {
 public:
  explicit Scope(const char* name);
  explicit Scope(std::string name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool active_;
};

}  // namespace octet::profile
