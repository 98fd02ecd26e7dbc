// apps/commands.h: every `octet` subcommand is one function with main()'s
// signature (argv[0] is the subcommand's own first argument, not "octet").
// Each returns the process exit code; errors are thrown and printed by main().
#pragma once

namespace octet::app {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

int cmd_bench(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_calibrate(int argc, char** argv);
int cmd_export(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_study(int argc, char** argv);

// Subcommands of `octet bench`.
int bench_ops(int argc, char** argv);
int bench_train(int argc, char** argv);
int bench_data(int argc, char** argv);
int bench_engine(int argc, char** argv);
int bench_peak(int argc, char** argv);
// CPU time of the whole process (all threads), in seconds: the benchmarks'
// measure of cost that time stolen by other VMs does not inflate.
double process_cpu_seconds();

}  // namespace octet::app
