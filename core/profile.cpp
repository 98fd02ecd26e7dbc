// core/profile.cpp: the table of core/profile.h and its scopes.
#include "core/profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <utility>

namespace octet::profile {

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_on{false};
std::mutex g_mutex;
std::map<std::string, Row>& table() {
  static std::map<std::string, Row> t;
  return t;
}

struct Open {
  std::string name;
  Clock::time_point start;
  double inner = 0;  // seconds taken by the scopes opened inside this one
};
thread_local std::vector<Open> t_open;

void open(std::string name) { t_open.push_back({std::move(name), Clock::now(), 0.0}); }

}  // namespace

bool enabled() { return g_on.load(std::memory_order_relaxed); }

void enable(bool on) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (on) table().clear();
  g_on.store(on, std::memory_order_relaxed);
}

std::vector<Row> rows() {
  std::vector<Row> r;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const auto& [name, row] : table()) {
      r.push_back(row);
      r.back().name = name;
    }
  }
  std::stable_sort(r.begin(), r.end(), [](const Row& a, const Row& b) { return a.seconds > b.seconds; });
  return r;
}

Scope::Scope(const char* name) : active_(enabled()) {
  if (active_) open(name);
}

Scope::Scope(std::string name) : active_(enabled()) {
  if (active_) open(std::move(name));
}

Scope::~Scope() {
  if (!active_ || t_open.empty()) return;
  Open o = std::move(t_open.back());
  t_open.pop_back();
  const double elapsed = std::chrono::duration<double>(Clock::now() - o.start).count();
  if (!t_open.empty()) t_open.back().inner += elapsed;
  std::lock_guard<std::mutex> lock(g_mutex);
  Row& row = table()[o.name];  // its name is the key: rows() copies it in
  row.seconds += elapsed - o.inner;
  ++row.calls;
}

}  // namespace octet::profile
