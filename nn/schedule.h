// nn/schedule.h: learning-rate (and momentum) schedules as pure functions of
// the global step (0-based: step k is the k-th optimizer step of the run). A
// pure function makes resuming trivial: the schedule needs no state.
//
//   step         lr = base * gamma^(number of milestones <= step)
//   exp          TF exponential_decay: lr = base * rate^(step / decay_steps),
//                with floor(step / decay_steps) when staircase; never below floor_lr
//   cosine       PyTorch CosineAnnealingLR (closed form) over total_steps:
//                lr = min_lr + (base - min_lr) * (1 + cos(pi * step / total)) / 2
//   onecycle     PyTorch OneCycleLR (anneal_strategy "cos", two phases):
//                initial = max_lr / div_factor, min = initial / final_div_factor;
//                phase 1 ends at step pct_start * total - 1 (lr initial -> max,
//                momentum max_momentum -> base_momentum), phase 2 ends at
//                total - 1 (lr max -> min, momentum base -> max); within a phase
//                value = end + (start - end) / 2 * (1 + cos(pi * pct)).
//                The peer recipe (../shared/bench/torch_cifar_train.py) uses
//                max_lr 0.1, pct_start 0.25, div 25, final_div 1e4 and
//                PyTorch's default cycle_momentum (0.85 .. 0.95).
//   warmup       any of the above times min(1, (step + 1) / warmup_steps).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace octet::nn {

class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual double lr(int64_t step) const = 0;
  // The momentum to use at `step`, for schedules that cycle it; nullopt
  // leaves the optimizer's momentum unchanged.
  virtual std::optional<double> momentum(int64_t step) const { return std::nullopt; }
  virtual std::string describe() const = 0;
};

class ConstantSchedule : public Schedule {
 public:
  explicit ConstantSchedule(double lr) : lr_(lr) {}
  double lr(int64_t) const override { return lr_; }
  std::string describe() const override;

 private:
  double lr_;
};

class StepSchedule : public Schedule {
 public:
  StepSchedule(double base_lr, std::vector<int64_t> milestone_steps, double gamma);
  double lr(int64_t step) const override;
  std::string describe() const override;

 private:
  double base_;
  std::vector<int64_t> milestones_;
  double gamma_;
};

class ExponentialSchedule : public Schedule {
 public:
  ExponentialSchedule(double base_lr, double rate, int64_t decay_steps, bool staircase, double floor_lr);
  double lr(int64_t step) const override;
  std::string describe() const override;

 private:
  double base_, rate_;
  int64_t decay_steps_;
  bool staircase_;
  double floor_;
};

class CosineSchedule : public Schedule {
 public:
  CosineSchedule(double base_lr, int64_t total_steps, double min_lr = 0.0);
  double lr(int64_t step) const override;
  std::string describe() const override;

 private:
  double base_;
  int64_t total_;
  double min_;
};

struct OneCycleOptions {
  double max_lr = 0.1;
  double pct_start = 0.3;
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  bool cycle_momentum = true;
  double base_momentum = 0.85;
  double max_momentum = 0.95;
};

class OneCycleSchedule : public Schedule {
 public:
  OneCycleSchedule(const OneCycleOptions& options, int64_t total_steps);
  double lr(int64_t step) const override;
  std::optional<double> momentum(int64_t step) const override;
  std::string describe() const override;

 private:
  // (lr, momentum) by PyTorch's phase walk.
  std::pair<double, double> at(int64_t step) const;
  OneCycleOptions o_;
  int64_t total_;
};

class WarmupSchedule : public Schedule {
 public:
  WarmupSchedule(std::unique_ptr<Schedule> inner, int64_t warmup_steps);
  double lr(int64_t step) const override;
  std::optional<double> momentum(int64_t step) const override { return inner_->momentum(step); }
  std::string describe() const override;

 private:
  std::unique_ptr<Schedule> inner_;
  int64_t warmup_;
};

// Everything a run's command line says about its schedule, in epochs where
// that is how people think, converted to steps by make_schedule.
struct ScheduleConfig {
  std::string kind = "onecycle";  // onecycle | cosine | step | exp | constant
  double lr = 0.1;                // base lr; the peak for onecycle
  std::vector<int> milestones;    // step: epochs at which lr *= gamma
  double gamma = 0.1;
  double decay_rate = 0.94;       // exp: factor per decay_epochs
  double decay_epochs = 2.0;
  bool staircase = true;
  double floor_lr = 0.0;          // exp: lower bound; cosine: min_lr
  double pct_start = 0.25;        // onecycle, as the peer recipe
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  bool cycle_momentum = true;
  double base_momentum = 0.85, max_momentum = 0.95;
  double warmup_epochs = 0.0;
};

// Throws std::invalid_argument for an unknown kind or bad values.
std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config, int64_t steps_per_epoch, int epochs);

}  // namespace octet::nn
