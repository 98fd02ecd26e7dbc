// apps/study/archive.cpp: archive_results (apps/study/report.h), the small
// files of a study folder, to commit.
#include <filesystem>
#include <stdexcept>

#include "apps/study/report.h"

namespace octet::study {

namespace fs = std::filesystem;

int archive_results(const std::string& dir, const std::string& out_dir) {
  const fs::path from(dir), to(out_dir);
  if (fs::exists(to) && fs::equivalent(from, to)) return 0;
  fs::create_directories(to);
  const auto copy = [&](const fs::path& rel) {
    if (!fs::exists(from / rel)) return;
    fs::create_directories((to / rel).parent_path());
    fs::copy_file(from / rel, to / rel, fs::copy_options::overwrite_existing);
  };
  copy("study.study");
  copy("plan.json");
  int jobs = 0;
  for (const PlanJob& j : load_plan((from / "plan.json").string())) {
    const fs::path job(j.dir);
    if (!fs::exists(from / job / "result.json")) continue;
    for (const char* f : {"result.json", "command.txt", "run/log.csv", "run/steps.csv"}) copy(job / f);
    ++jobs;
  }
  return jobs;
}

}  // namespace octet::study
