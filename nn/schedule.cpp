#include "nn/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>
#include <stdexcept>

namespace octet::nn {

std::string ConstantSchedule::describe() const {
  std::ostringstream s;
  s << "constant(lr=" << lr_ << ")";
  return s.str();
}

StepSchedule::StepSchedule(double base_lr, std::vector<int64_t> milestones, double gamma)
    : base_(base_lr), milestones_(std::move(milestones)), gamma_(gamma) {
  if (!std::is_sorted(milestones_.begin(), milestones_.end()))
    throw std::invalid_argument("step schedule: milestones must be increasing");
}

double StepSchedule::lr(int64_t step) const {
  int64_t k = std::upper_bound(milestones_.begin(), milestones_.end(), step) - milestones_.begin();
  return base_ * std::pow(gamma_, static_cast<double>(k));
}

std::string StepSchedule::describe() const {
  std::ostringstream s;
  s << "step(lr=" << base_ << ", gamma=" << gamma_ << ", milestone_steps=";
  for (size_t i = 0; i < milestones_.size(); ++i) s << (i ? "," : "") << milestones_[i];
  s << ")";
  return s.str();
}

ExponentialSchedule::ExponentialSchedule(double base_lr, double rate, int64_t decay_steps, bool staircase,
                                         double floor_lr)
    : base_(base_lr), rate_(rate), decay_steps_(decay_steps), staircase_(staircase), floor_(floor_lr) {
  if (decay_steps <= 0) throw std::invalid_argument("exp schedule: decay steps must be > 0");
  if (rate <= 0) throw std::invalid_argument("exp schedule: decay rate must be > 0");
}

double ExponentialSchedule::lr(int64_t step) const {
  double p = static_cast<double>(step) / static_cast<double>(decay_steps_);
  if (staircase_) p = std::floor(p);
  return std::max(floor_, base_ * std::pow(rate_, p));
}

std::string ExponentialSchedule::describe() const {
  std::ostringstream s;
  s << "exp(lr=" << base_ << ", rate=" << rate_ << ", decay_steps=" << decay_steps_
    << ", staircase=" << (staircase_ ? "true" : "false") << ", floor=" << floor_ << ")";
  return s.str();
}

CosineSchedule::CosineSchedule(double base_lr, int64_t total_steps, double min_lr)
    : base_(base_lr), total_(total_steps), min_(min_lr) {
  if (total_steps <= 0) throw std::invalid_argument("cosine schedule: total steps must be > 0");
}

double CosineSchedule::lr(int64_t step) const {
  const double t = static_cast<double>(std::min(step, total_)) / static_cast<double>(total_);
  return min_ + (base_ - min_) * (1.0 + std::cos(std::numbers::pi * t)) / 2.0;
}

std::string CosineSchedule::describe() const {
  std::ostringstream s;
  s << "cosine(lr=" << base_ << ", total_steps=" << total_ << ", min_lr=" << min_ << ")";
  return s.str();
}

OneCycleSchedule::OneCycleSchedule(const OneCycleOptions& o, int64_t total_steps) : o_(o), total_(total_steps) {
  if (total_steps < 2) throw std::invalid_argument("onecycle schedule: total steps must be >= 2");
  if (!(o.pct_start > 0 && o.pct_start < 1)) throw std::invalid_argument("onecycle schedule: pct_start must be in (0, 1)");
  if (o.div_factor <= 0 || o.final_div_factor <= 0)
    throw std::invalid_argument("onecycle schedule: div factors must be > 0");
}

std::pair<double, double> OneCycleSchedule::at(int64_t step) const {
  const double initial = o_.max_lr / o_.div_factor;
  const double min_lr = initial / o_.final_div_factor;
  struct Phase {
    double end_step, lr0, lr1, m0, m1;
  };
  const Phase phases[2] = {
      {o_.pct_start * static_cast<double>(total_) - 1.0, initial, o_.max_lr, o_.max_momentum, o_.base_momentum},
      {static_cast<double>(total_) - 1.0, o_.max_lr, min_lr, o_.base_momentum, o_.max_momentum},
  };
  auto cos_anneal = [](double start, double end, double pct) {
    return end + (start - end) / 2.0 * (std::cos(std::numbers::pi * pct) + 1.0);
  };
  const double s = static_cast<double>(std::clamp<int64_t>(step, 0, total_ - 1));
  double start_step = 0.0;
  for (int i = 0; i < 2; ++i) {
    const Phase& ph = phases[i];
    if (s <= ph.end_step || i == 1) {
      // A phase of zero length (pct_start * total_steps == 1, e.g. 4 steps at
      // 0.25) is already over: take its end value instead of dividing by 0.
      const double len = ph.end_step - start_step;
      const double pct = len > 0.0 ? (s - start_step) / len : 1.0;
      return {cos_anneal(ph.lr0, ph.lr1, pct), cos_anneal(ph.m0, ph.m1, pct)};
    }
    start_step = ph.end_step;
  }
  return {min_lr, o_.max_momentum};  // not reached
}

double OneCycleSchedule::lr(int64_t step) const { return at(step).first; }

std::optional<double> OneCycleSchedule::momentum(int64_t step) const {
  if (!o_.cycle_momentum) return std::nullopt;
  return at(step).second;
}

std::string OneCycleSchedule::describe() const {
  std::ostringstream s;
  s << "onecycle(max_lr=" << o_.max_lr << ", total_steps=" << total_ << ", pct_start=" << o_.pct_start
    << ", div_factor=" << o_.div_factor << ", final_div_factor=" << o_.final_div_factor;
  if (o_.cycle_momentum) s << ", momentum=" << o_.base_momentum << ".." << o_.max_momentum;
  s << ")";
  return s.str();
}

WarmupSchedule::WarmupSchedule(std::unique_ptr<Schedule> inner, int64_t warmup_steps)
    : inner_(std::move(inner)), warmup_(warmup_steps) {
  if (warmup_steps <= 0) throw std::invalid_argument("warmup: steps must be > 0");
}

double WarmupSchedule::lr(int64_t step) const {
  const double f = std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(warmup_));
  return inner_->lr(step) * f;
}

std::string WarmupSchedule::describe() const {
  return "warmup(" + std::to_string(warmup_) + " steps, " + inner_->describe() + ")";
}

std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& c, int64_t steps_per_epoch, int epochs) {
  if (steps_per_epoch <= 0 || epochs <= 0)
    throw std::invalid_argument("schedule: steps per epoch and epochs must be > 0");
  if (!(c.lr > 0)) throw std::invalid_argument("schedule: lr must be > 0");
  const int64_t total = steps_per_epoch * epochs;
  std::unique_ptr<Schedule> s;
  if (c.kind == "onecycle") {
    OneCycleOptions o;
    o.max_lr = c.lr;
    o.pct_start = c.pct_start;
    o.div_factor = c.div_factor;
    o.final_div_factor = c.final_div_factor;
    o.cycle_momentum = c.cycle_momentum;
    o.base_momentum = c.base_momentum;
    o.max_momentum = c.max_momentum;
    s = std::make_unique<OneCycleSchedule>(o, total);
  } else if (c.kind == "cosine") {
    s = std::make_unique<CosineSchedule>(c.lr, total, c.floor_lr);
  } else if (c.kind == "step") {
    std::vector<int64_t> ms;
    for (int e : c.milestones) ms.push_back(static_cast<int64_t>(e) * steps_per_epoch);
    s = std::make_unique<StepSchedule>(c.lr, ms, c.gamma);
  } else if (c.kind == "exp") {
    const auto decay_steps = static_cast<int64_t>(std::llround(c.decay_epochs * static_cast<double>(steps_per_epoch)));
    s = std::make_unique<ExponentialSchedule>(c.lr, c.decay_rate, std::max<int64_t>(1, decay_steps), c.staircase,
                                              c.floor_lr);
  } else if (c.kind == "constant") {
    s = std::make_unique<ConstantSchedule>(c.lr);
  } else {
    throw std::invalid_argument("unknown schedule '" + c.kind + "'; valid: onecycle, cosine, step, exp, constant");
  }
  if (c.warmup_epochs > 0) {
    const auto w = static_cast<int64_t>(std::llround(c.warmup_epochs * static_cast<double>(steps_per_epoch)));
    s = std::make_unique<WarmupSchedule>(std::move(s), std::max<int64_t>(1, w));
  }
  return s;
}

}  // namespace octet::nn
